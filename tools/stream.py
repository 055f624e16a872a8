#!/usr/bin/env python
"""Classify a stream of frames: a rolling clip buffer and a prediction every N frames, with its latency.

    python tools/stream.py --cfg configs/DEMO/video_motion.yaml --random-weights videos/long.mp4 --every 16

Sources: a video file (PyAV), or a camera index (``0`` = ``/dev/video0``) through PyAV's ``v4l2`` input (Linux),
or OpenCV's ``VideoCapture`` when ``cv2`` is installed (``--camera-backend cv2``). A file plays as fast as it
decodes unless ``--realtime`` paces it at its frame rate.

The buffer holds the frames one clip spans (``NUM_FRAMES * SAMPLING_RATE * fps / TARGET_FPS``, PySlowFast's clip)
after the test transform (short side, centre crop, normalisation); every ``--every`` frames the ``NUM_FRAMES``
frames evenly spaced over it go through the model. Each prediction prints the stream time, the top class and the
latency (model only, and from the newest frame's arrival to the printed answer).

Serving (``--serve``): ``eager`` (default), or through ``mvit.export.optimize_for_cpu``: ``fp32``, ``bf16``
(autocast) or ``int8`` (calibrated on the first ``--calibration`` clips of the stream; the first prediction in
each compiled mode includes compilation). ``--device cuda`` runs eager on a GPU.
"""

from __future__ import annotations

import argparse
import collections
import os
import time
from typing import Iterator, Optional, Sequence, Tuple

import av
import torch

from mvit.errors import DataError, UserError, run_cli
from mvit.utils.cli import ArgumentParser, import_script
from projects.video.data.kinetics import build_eval_transform

_explain = import_script(os.path.join(os.path.dirname(os.path.abspath(__file__)), "explain.py"))
add_model_args, load_model = _explain.add_model_args, _explain.load_model

__all__ = ["frames_from", "main"]

SERVE = ("eager", "fp32", "bf16", "int8")


def frames_from(source: str, backend: str = "pyav") -> Tuple[Iterator[torch.Tensor], float]:
    """(iterator of (3, H, W) uint8 RGB frames, frame rate) of a file or a camera index."""
    if source.isdigit():
        if backend == "cv2":
            try:
                import cv2
            except ImportError:
                raise UserError("--camera-backend cv2: OpenCV (cv2) is not installed") from None
            capture = cv2.VideoCapture(int(source))
            if not capture.isOpened():
                raise DataError(f"camera {source}: cannot open with OpenCV")
            fps = capture.get(cv2.CAP_PROP_FPS) or 30.0

            def read_cv2() -> Iterator[torch.Tensor]:
                while True:
                    ok, bgr = capture.read()
                    if not ok:
                        return
                    yield torch.from_numpy(bgr[..., ::-1].copy()).permute(2, 0, 1)

            return read_cv2(), float(fps)
        path, fmt = f"/dev/video{source}", "v4l2"
    else:
        path, fmt = source, None
        if not os.path.isfile(path):
            raise UserError(f"{path}: file not found")
    try:
        container = av.open(path, format=fmt)
        stream = container.streams.video[0]
    except (av.error.FFmpegError, OSError, IndexError) as err:
        raise DataError(f"{path}: cannot open ({err})") from None
    fps = float(stream.average_rate or stream.guessed_rate or 30)

    def read_av() -> Iterator[torch.Tensor]:
        try:
            for frame in container.decode(stream):
                yield torch.from_numpy(frame.to_rgb().to_ndarray()).permute(2, 0, 1)
        except av.error.FFmpegError as err:
            raise DataError(f"{path}: cannot decode ({err})") from None
        finally:
            container.close()

    return read_av(), fps


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", help="a video file, or a camera index (0 = /dev/video0)")
    parser.add_argument("--every", type=int, default=8, help="predict every N frames (default: %(default)s)")
    parser.add_argument("--serve", choices=SERVE, default="eager", help="CPU serving mode (default: %(default)s)")
    parser.add_argument("--calibration", type=int, default=4, help="int8: clips of the stream that calibrate")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (eager)")
    parser.add_argument("--realtime", action="store_true", help="pace a file at its frame rate")
    parser.add_argument("--max-frames", type=int, help="stop after this many frames")
    parser.add_argument("--camera-backend", choices=("pyav", "cv2"), default="pyav")
    parser.add_argument("--topk", type=int, default=1, help="classes per prediction (default: %(default)s)")
    add_model_args(parser)
    args = parser.parse_args(argv)
    if args.every < 1:
        raise UserError(f"--every {args.every}: must be at least 1")
    if args.device != "cpu" and args.serve != "eager":
        raise UserError(f"--serve {args.serve} is a CPU mode; use --serve eager with --device {args.device}")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {args.device}: no CUDA device here")
    frames, fps = frames_from(args.source, args.camera_backend)
    cfg, model, names = load_model(args)
    if "SAMPLING_RATE" not in cfg.DATA or len(cfg.MVIT.PATCH_KERNEL) != 3:
        raise UserError(f"{args.cfg_file}: not a video model config")
    device = torch.device(args.device)
    model = model.to(device)
    data = cfg.DATA
    span = max(1, round(data.NUM_FRAMES * data.SAMPLING_RATE * fps / data.TARGET_FPS))
    picks = torch.linspace(0, span - 1, data.NUM_FRAMES).long().tolist()
    transform = build_eval_transform(cfg)
    buffer: collections.deque = collections.deque(maxlen=span)
    run = None
    calibration = []
    latencies = []
    t_start = time.perf_counter()
    for count, frame in enumerate(frames, start=1):
        arrived = time.perf_counter()
        if args.realtime:  # sleep until the frame's time in the stream
            time.sleep(max(0.0, t_start + count / fps - arrived))
            arrived = time.perf_counter()
        buffer.append(transform(frame[None])[:, 0])
        if len(buffer) == span and (count - span) % args.every == 0:
            clip = torch.stack([buffer[i] for i in picks], dim=1)[None].to(device)
            if run is None:
                if args.serve in ("eager",):
                    run = model
                elif args.serve == "int8":
                    calibration.append(clip)
                    if len(calibration) < args.calibration:
                        continue
                    from mvit.export import optimize_for_cpu

                    # One clip per prediction: export at batch 1 (a dynamic batch fails: the stream's example specialises it).
                    run = optimize_for_cpu(model, "int8", calibration=calibration, example=clip, dynamic_batch=False)
                else:
                    from mvit.export import optimize_for_cpu

                    run = optimize_for_cpu(model, args.serve)
            t0 = time.perf_counter()
            with torch.no_grad():
                probs = run(clip).float().softmax(dim=-1)[0].cpu()
            done = time.perf_counter()
            latencies.append(done - t0)
            top = probs.topk(min(args.topk, probs.numel()))
            answer = ", ".join(f"{names[i]} {100 * p:.1f}%" for p, i in zip(top.values.tolist(), top.indices.tolist()))
            print(
                f"t={count / fps:7.2f}s frame {count:6d}: {answer}  "
                f"(model {1000 * (done - t0):.1f} ms, frame to answer {1000 * (done - arrived):.1f} ms)",
                flush=True,
            )
        if args.max_frames and count >= args.max_frames:
            break
    if not latencies:
        print(f"no prediction: the stream ended before a full clip of {span} frames")
        return 0
    steady = sorted(latencies[1:] or latencies)
    print(f"{len(latencies)} predictions; median model latency {1000 * steady[len(steady) // 2]:.1f} ms ({args.serve})")
    return 0


if __name__ == "__main__":
    run_cli(main)
