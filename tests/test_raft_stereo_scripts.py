"""The scripts with RAFT-Stereo: train.py, cascade_evaluation.py, predict.py and benchmark.py run
raft_stereo_realtime (randomly initialised) unchanged, at tiny sizes (its width must be at least 128)."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

import benchmark
import cascade_evaluation
import predict
import train
from models import get_model
from utils import cli

TINY = [
    "--device", "cpu", "--model", "raft_stereo_realtime", "--train-datasets", "synthetic", "--dataset-steps", "2",
    "--batch-size", "2", "--crop-size", "64", "128", "--recurrent-updates", "2", "--workers", "0",
    "--warmup-steps", "1", "--decay-after-steps", "1", "--min-lr", "1e-5", "--save-frequency", "2",
    "--valid-frequency", "0", "--print-frequency", "1", "--threads", "1",
]


def batch_norm_buffers(state: dict) -> dict:
    return {k: v for k, v in state.items() if k.endswith(("running_mean", "running_var", "num_batches_tracked"))}


@pytest.mark.parametrize("freeze", [False, True])
def test_train_uses_the_model_gamma_and_freeze_batch_norm_keeps_the_statistics(tmp_path, freeze):
    args = train.get_args_parser().parse_args(
        TINY + ["--checkpoint-dir", str(tmp_path), "--name", "raft"] + (["--freeze-batch-norm"] if freeze else [])
    )
    run = train.main(args)
    assert args.gamma == 0.9 and len(run.losses) == 2 and all(np.isfinite(run.losses))
    ckpt = torch.load(tmp_path / "raft.pth", weights_only=True)
    assert ckpt["args"]["model"] == "raft_stereo_realtime" and ckpt["args"]["gamma"] == 0.9
    initial = batch_norm_buffers(get_model("raft_stereo_realtime").state_dict())
    trained = batch_norm_buffers(ckpt["model"])
    counts = {k: v.item() for k, v in trained.items() if k.endswith("num_batches_tracked")}
    if freeze:
        assert all(torch.equal(trained[k], v) for k, v in initial.items())
    else:
        # Two steps; the shared base encoder's layers count two batches per step.
        assert set(counts.values()) == {2, 4}
        key = "context_encoder.downsample_and_out_layers.0.out_context.0.convnormrelu1.1.running_mean"
        assert not torch.equal(trained[key], initial[key])


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "raft.pth"
    state = get_model("raft_stereo_realtime").state_dict()
    torch.save({"model": state, "args": {"model": "raft_stereo_realtime"}, "step": 3}, path)
    return path


def test_cascade_evaluation_runs_one_and_two_cascades(tmp_path, checkpoint, monkeypatch):
    from data import registry

    real = registry.make_dataset
    monkeypatch.setattr(registry, "make_dataset", lambda *a, **k: real(*a, length=2, size=(64, 256), **k))
    argv = ["--checkpoint", str(checkpoint), "--dataset", "synthetic-val", "--device", "cpu", "--eval-size", "64",
            "256", "--n-cascades", "1", "2", "--n-iterations", "2", "--metrics", "mae", "--output-dir", str(tmp_path)]
    cli.run(cascade_evaluation.main, cascade_evaluation.get_args_parser(), cascade_evaluation.check_args, argv)
    record = json.loads((tmp_path / "raft_synthetic-val_64x256_eval.json").read_text())
    assert record["model"] == "raft_stereo_realtime"
    assert [(r["cascades"], r["iterations"]) for r in record["results"]] == [(1, 2), (2, 2)]
    assert all(np.isfinite(r["reference"]["mae"]) for r in record["results"])


def test_predict_writes_a_disparity(tmp_path, checkpoint):
    rng = np.random.default_rng(0)
    for name in ("l.png", "r.png"):
        Image.fromarray(rng.integers(0, 256, (60, 250, 3), dtype=np.uint8)).save(tmp_path / name)
    argv = ["--left", str(tmp_path / "l.png"), "--right", str(tmp_path / "r.png"), "--checkpoint", str(checkpoint),
            "--output-dir", str(tmp_path / "out"), "--n-iterations", "2", "--formats", "npy", "--device", "cpu"]
    assert cli.run(predict.main, predict.get_args_parser(), predict.check_args, argv) == 0
    disparity = np.load(tmp_path / "out" / "l.npy")
    assert disparity.shape == (60, 250) and np.isfinite(disparity).all()


def test_benchmark_times_eval_and_training(tmp_path):
    args = benchmark.get_args_parser().parse_args(
        ["model", "--model", "raft_stereo_realtime", "--size", "32", "128", "--n-iterations", "2", "--runs", "1",
         "--device", "cpu", "--json", str(tmp_path / "bench.json")]
    )
    benchmark.main(args)
    rows = json.loads((tmp_path / "bench.json").read_text())["results"]
    assert [(r["task"], r["checkpointing"]) for r in rows] == [("eval", False), ("train", False), ("train", True)]
    assert all(r["median_s"] > 0 and r["gflop"] > 0 for r in rows)
