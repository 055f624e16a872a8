"""Two machines on one host: two tools/run_net.py process groups (NUM_SHARDS 2, SHARD_ID 0 / 1) of two CPU
processes each train to exactly the weights of one machine with four processes and the same global batch."""

from __future__ import annotations

import socket

import torch

from mvit.checkpoint.state import load_training_state


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_machines_train_to_the_weights_of_one(image_tree, tiny_cfg, run_net, tmp_path):
    # 24 images, 8 per step (2 per process): 3 steps. TRAIN.BATCH_SIZE is per machine.
    common = ["DATA.PATH_TO_DATA_DIR", image_tree, "SOLVER.MAX_EPOCH", 1, "TRAIN.EVAL_PERIOD", 0, "TEST.ENABLE", False]
    one, two = tmp_path / "one", tmp_path / "two"
    jobs = {
        "one machine": (one, ["NUM_GPUS", 4, "NUM_SHARDS", 1, "TRAIN.BATCH_SIZE", 8]),
        **{
            f"machine {shard}": (two, ["NUM_GPUS", 2, "NUM_SHARDS", 2, "SHARD_ID", shard, "TRAIN.BATCH_SIZE", 4])
            for shard in (0, 1)
        },
    }
    ports = {"one machine": _free_port(), "two machines": _free_port()}
    procs = {}
    for name, (out, opts) in jobs.items():
        port = ports["one machine" if name == "one machine" else "two machines"]
        argv = [*common, *opts, "OUTPUT_DIR", out, "INIT_METHOD", f"tcp://127.0.0.1:{port}"]
        procs[name] = (run_net.popen(tiny_cfg, *argv, log=tmp_path / f"{name}.log"), tmp_path / f"{name}.log")
    try:
        for name, (proc, log) in procs.items():
            assert proc.wait(timeout=480) == 0, f"{name}:\n{log.read_text()[-3000:]}"
    finally:
        for proc, _ in procs.values():
            if proc.poll() is None:
                proc.kill()
    single = load_training_state(str(one / "checkpoints" / "last.pyth"))
    sharded = load_training_state(str(two / "checkpoints" / "last.pyth"))
    assert single["world_size"] == sharded["world_size"] == 4
    assert single["step"] == sharded["step"] == 3
    assert single["model"].keys() == sharded["model"].keys()
    for key, value in single["model"].items():
        assert torch.equal(value, sharded["model"][key]), key
    # The second machine's first process (rank 2) logs beside the first machine's log.txt.
    assert (two / "log.rank2.txt").is_file() and "batch: 8 items per step" in (two / "log.txt").read_text()
