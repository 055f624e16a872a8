#!/usr/bin/env python
"""Detection demo on CPU: generate the shapes set, train a small MViTv2 Mask R-CNN, evaluate, draw predictions.

    python projects/detection/demo.py                          # 500 iterations at batch 4, 1 thread
    python projects/detection/demo.py --max-iter 20 --num-train 40 --num-val 10 --vis-images 4   # quick look
    python projects/detection/demo.py --max-iter 100 train.seed=1   # shorter; extra key=value go to the config
    python projects/detection/demo.py --device cuda                 # on a GPU (AMP on); default auto

Writes to ``--output``: the training run of ``train_net.py`` (checkpoints, metrics.json, log.txt),
``predictions.png`` (held-out images with the predicted masks, boxes and scores, detectron2's Visualizer),
``curves.png`` (losses and learning rate) and ``summary.json`` (COCO box / mask AP, wall and CPU time).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch

from mvit.errors import run_cli
from mvit.utils.cli import ArgumentParser
from mvit.utils.devices import add_device_argument, resolve_device
from projects.detection.data.synthetic_coco import dataset_paths, generate_synthetic_coco

CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs", "mask_rcnn_mvitv2_demo_synthetic.py")


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return sum(u.ru_utime + u.ru_stime for u in usage)


def draw_predictions(cfg, output_png: str, num_images: int = 8, score_thresh: float = 0.5, device: str = "cpu") -> None:
    """Run the final model on the first ``num_images`` validation images and save a grid of drawn predictions."""
    import detectron2.data.transforms as T
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.config import instantiate
    from detectron2.data import DatasetCatalog, MetadataCatalog
    from detectron2.data.detection_utils import read_image
    from detectron2.utils.visualizer import Visualizer
    from PIL import Image

    model = instantiate(cfg.model).eval().to(device)
    DetectionCheckpointer(model).load(os.path.join(cfg.train.output_dir, "model_final.pth"))
    name = cfg.dataloader.evaluator.dataset_name
    metadata = MetadataCatalog.get(name)
    resize = instantiate(cfg.dataloader.test.mapper.augmentations[0])
    assert isinstance(resize, T.Augmentation)
    tiles = []
    for record in DatasetCatalog.get(name)[:num_images]:
        image = read_image(record["file_name"], format="RGB")
        resized = resize.get_transform(image).apply_image(image)
        inputs = {
            "image": torch.as_tensor(resized.transpose(2, 0, 1).copy()).to(device),
            "height": image.shape[0],
            "width": image.shape[1],
        }
        with torch.no_grad():
            instances = model([inputs])[0]["instances"].to("cpu")
        instances = instances[instances.scores >= score_thresh]
        tiles.append(Visualizer(image, metadata, scale=1.5).draw_instance_predictions(instances).get_image())
    cols = min(4, len(tiles))
    rows = [
        np.concatenate(tiles[i : i + cols], axis=1)
        for i in range(0, len(tiles), cols)
        if len(tiles[i : i + cols]) == cols
    ]
    Image.fromarray(np.concatenate(rows, axis=0)).save(output_png)


def plot_curves(metrics_json: str, output_png: str) -> None:
    """Total loss, per-term losses and learning rate against iteration, from detectron2's metrics.json."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records: List[Dict] = []
    with open(metrics_json) as f:
        for line in f:
            line = line.strip()
            if line:
                records.append(json.loads(line))
    records = [r for r in records if "total_loss" in r]
    if not records:
        return
    it = [r["iteration"] for r in records]
    fig, (ax_loss, ax_lr) = plt.subplots(1, 2, figsize=(11, 4))
    for key in ("total_loss", "loss_cls", "loss_box_reg", "loss_mask", "loss_rpn_cls", "loss_rpn_loc"):
        ax_loss.plot(it, [r[key] for r in records], label=key, lw=2 if key == "total_loss" else 1)
    ax_loss.set(xlabel="iteration", ylabel="loss (median over the log period)", yscale="log", title="training losses")
    ax_loss.legend(fontsize=8)
    ax_lr.plot(it, [r["lr"] for r in records])
    ax_lr.set(xlabel="iteration", ylabel="learning rate", title="schedule")
    fig.tight_layout()
    fig.savefig(output_png, dpi=100)
    plt.close(fig)


def main(argv: Optional[Sequence[str]] = None) -> Dict:
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", default="data/synthetic_coco", help="generated set (made if missing)")
    parser.add_argument("--output", default="output/detection_demo")
    parser.add_argument("--max-iter", type=int, default=500)
    parser.add_argument("--num-train", type=int, default=300)
    parser.add_argument("--num-val", type=int, default=60)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a shared CPU)")
    parser.add_argument("--vis-images", type=int, default=8)
    add_device_argument(parser)
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="extra key=value config overrides")
    args = parser.parse_args(argv)
    device, device_line = resolve_device(args.device)  # before the data set and the model: a bad value is one line
    print(device_line)
    torch.set_num_threads(args.threads)

    if not dataset_paths(args.root, "val")[0].is_file():
        generate_synthetic_coco(args.root, num_train=args.num_train, num_val=args.num_val)

    from projects.detection import train_net

    wall, cpu = time.time(), _cpu_seconds()
    train_args = train_net.parse_args(
        [
            "--config-file",
            CONFIG,
            f"dataloader.train.dataset.root={args.root}",
            f"train.output_dir={args.output}",
            f"train.max_iter={args.max_iter}",
            f"train.eval_period={args.max_iter}",
            f"train.device={device.type}",  # AMP: on from the recipe on cuda, off on cpu (train_net.setup)
            *args.opts,
        ]
    )
    results = train_net.main(train_args)
    wall, cpu = time.time() - wall, _cpu_seconds() - cpu

    cfg = train_net.LazyConfig.apply_overrides(train_net.LazyConfig.load(CONFIG), train_args.opts)
    draw_predictions(cfg, os.path.join(args.output, "predictions.png"), args.vis_images, device=cfg.train.device)
    plot_curves(os.path.join(args.output, "metrics.json"), os.path.join(args.output, "curves.png"))
    summary = {
        "box_AP": results["bbox"]["AP"],
        "box_AP50": results["bbox"]["AP50"],
        "mask_AP": results["segm"]["AP"],
        "mask_AP50": results["segm"]["AP50"],
        "iterations": args.max_iter,
        "wall_seconds": round(wall, 1),
        "cpu_seconds": round(cpu, 1),
        "threads": args.threads,
        "device": str(cfg.train.device),
        "load_average_1min_at_end": os.getloadavg()[0],
    }
    with open(os.path.join(args.output, "summary.json"), "w") as f:
        json.dump(summary, f, indent=1)
    print(json.dumps(summary, indent=1))
    return summary


def _cli() -> int:
    main()
    return 0


if __name__ == "__main__":
    run_cli(_cli)
