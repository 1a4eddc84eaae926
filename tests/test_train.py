"""train.py end to end on tiny synthetic runs (64x96 crops, 2 refinement iterations, a few steps)."""

import argparse
import os
import shutil

import pytest
import torch

import train
from models import get_model
from utils import cli
from utils.checkpoint import save_checkpoint

TINY = [
    "--device", "cpu", "--train-datasets", "synthetic", "--dataset-steps", "3", "--batch-size", "2",
    "--crop-size", "64", "96", "--recurrent-updates", "2", "--workers", "0", "--lr", "4e-4",
    "--warmup-steps", "1", "--decay-after-steps", "2", "--lr-decay-method", "cosine", "--min-lr", "1e-5",
    "--save-frequency", "2", "--valid-frequency", "0", "--print-frequency", "2", "--threads", "1",
]


def parse(tmp_path, *extra):
    return train.get_args_parser().parse_args(TINY + ["--checkpoint-dir", str(tmp_path), *extra])


def _same_weights(path_a, path_b) -> bool:
    a, b = (torch.load(p, weights_only=True)["model"] for p in (path_a, path_b))
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_stop_and_resume_equals_uninterrupted_run(tmp_path, monkeypatch):
    full = train.main(parse(tmp_path, "--name", "full"))
    assert len(full.losses) == 3 and all(torch.isfinite(torch.tensor(full.losses)))
    assert sorted(p.name for p in tmp_path.glob("*.pth")) == ["full.pth", "full_2.pth", "full_3.pth"]
    ckpt = torch.load(tmp_path / "full_2.pth", weights_only=True)  # plain data only
    assert ckpt["step"] == 2 and ckpt["args"]["model"] == "crestereo_base" and ckpt["args"]["crop_size"] == [64, 96]
    assert ckpt["data_position"] == {"samples": 4, "samples_per_step": 2, "seed": 42}
    assert not any(k.endswith("positional_encodings.pe") for k in ckpt["model"])  # recomputed, not stored
    assert os.path.samefile(tmp_path / "full.pth", tmp_path / "full_3.pth")  # the latest: serialised once

    # --resume-schedule continues exactly: same loss at step 3, same final weights
    resumed = train.main(parse(tmp_path, "--name", "resumed", "--resume-path", str(tmp_path / "full_2.pth"),
                               "--resume-schedule"))
    assert resumed.start_step == 2 and resumed.losses == full.losses[2:]
    assert _same_weights(tmp_path / "full.pth", tmp_path / "resumed.pth")
    assert torch.load(tmp_path / "resumed.pth", weights_only=True)["scheduler"]["last_epoch"] == 3

    # a torchrun restart (TORCHELASTIC_RESTART_COUNT > 0) picks up {name}.pth by itself
    elastic = tmp_path / "elastic"
    elastic.mkdir()
    shutil.copy(tmp_path / "full_2.pth", elastic / "full.pth")
    for other in ("full_1.pth", "full_2.pth", "full_best.pth", "fuller_1.pth"):
        (elastic / other).write_bytes(b"x")
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "1")
    restarted = train.main(parse(elastic, "--name", "full", "--keep-last", "1"))
    assert sorted(p.name for p in elastic.glob("*.pth")) == ["full.pth", "full_3.pth", "full_best.pth", "fuller_1.pth"]
    assert restarted.start_step == 2 and restarted.losses == full.losses[2:]
    assert _same_weights(tmp_path / "full.pth", elastic / "full.pth")
    monkeypatch.delenv("TORCHELASTIC_RESTART_COUNT")

    # --resume-path alone: those weights, a new schedule from step 0 (sample 0 again, other loss); here from the
    # same weights in the layout of torchvision's reference checkpoints (full state dict, `args` a Namespace)
    reference = tmp_path / "reference.pth"
    model = get_model("crestereo_base")
    model.load_state_dict(torch.load(tmp_path / "full.pth", weights_only=True)["model"])
    torch.save({"model": model.state_dict(), "optimizer": {}, "scheduler": {}, "step": 3,
                "args": argparse.Namespace(model="crestereo_base", world_size=1, test_only=False)}, reference)
    fresh = train.main(parse(tmp_path, "--name", "fresh", "--dataset-steps", "1", "--warmup-steps", "0",
                             "--decay-after-steps", "0", "--resume-path", str(reference)))
    assert fresh.start_step == 0 and len(fresh.losses) == 1 and fresh.losses[0] != full.losses[0]
    assert "written by torchvision's reference train.py" in bad(tmp_path, "--name", "again", "--resume-path",
                                                               str(reference), "--resume-schedule")


def test_loss_decreases_on_synthetic_scenes(tmp_path):
    # three passes over the same 24 synthetic-val scenes (resized, no augmentation): the mean loss per pass falls
    run = train.main(parse(
        tmp_path, "--name", "learn", "--train-datasets", "synthetic-val", "--steps-is-epochs", "--dataset-steps", "3",
        "--batch-size", "4", "--resize-size", "64", "96", "--scale-range", "1", "1", "--flip-prob", "0",
        "--spatial-shift-prob", "0", "--occlusion-prob", "0", "--asymmetric-jitter-prob", "0", "--warmup-steps", "0",
        "--decay-after-steps", "0", "--min-lr", "4e-4", "--clip-grad-norm", "1", "--save-frequency", "100",
    ))
    assert run.mixture.total_steps == 18 and len(run.losses) == 18
    epochs = [sum(run.losses[i:i + 6]) / 6 for i in (0, 6, 12)]
    assert epochs[2] < epochs[1] < epochs[0] and epochs[2] < 0.85 * epochs[0], epochs


def bad(tmp_path, *extra) -> str:
    with pytest.raises(ValueError) as info:
        train.main(parse(tmp_path, *extra))
    return str(info.value)


def test_bad_input_is_one_parser_error(tmp_path, capsys):
    argv = TINY + ["--checkpoint-dir", str(tmp_path), "--resume-schedule"]
    with pytest.raises(SystemExit) as info:
        cli.run(train.main, train.get_args_parser(), argv=argv)
    err = capsys.readouterr().err
    assert info.value.code == 2 and err.splitlines()[-1].endswith("error: --resume-schedule needs --resume-path (the "
                                                                 "checkpoint to continue).")


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--train-datasets", "nonsense"], "Unknown dataset 'nonsense'"),
        (["--test-datasets", "kitti2015-test", "--valid-frequency", "1"], "needs ground truth, but kitti2015-test"),
        (["--train-datasets", "synthetic", "synthetic-val"], "--dataset-steps has 1 values for 2"),
        (["--crop-size", "72", "96"], "must be multiples of 16"),
        (["--warmup-steps", "3", "--decay-after-steps", "2"], "longer than --decay-after-steps"),
        (["--resume-schedule"], "needs --resume-path"),
        (["--flow-loss-exclude-large"], "needs --max-disparity"),
        (["--keep-last", "0"], "--keep-last 0 would delete every checkpoint"),
        (["--best-metric", "mae"], "--best-metric needs validation"),
        (["--best-metric", "d1-all", "--valid-frequency", "1"], "is not among --metrics"),
    ],
)
def test_bad_flags(tmp_path, extra, message):
    assert message in bad(tmp_path, *extra)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_cuda_without_gpu(tmp_path):
    assert "no CUDA device is available" in bad(tmp_path, "--device", "cuda")


def test_bad_resume_files(tmp_path):
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(b"not a checkpoint")
    assert "is not a PyTorch checkpoint" in bad(tmp_path, "--resume-path", str(corrupt))
    other = tmp_path / "other.pth"
    save_checkpoint({"model": {"w": torch.zeros(1)}, "args": {"model": "raft_stereo"}}, other)
    assert "holds a raft_stereo model" in bad(tmp_path, "--resume-path", str(other))
    raw = tmp_path / "raw.pth"
    save_checkpoint({"w": torch.zeros(1)}, raw)
    assert "does not fit CREStereo" in bad(tmp_path, "--resume-path", str(raw))
    assert "Cannot continue" in bad(tmp_path, "--resume-path", str(_finished(tmp_path)), "--resume-schedule",
                                    "--seed", "3")


def _finished(tmp_path):
    path = tmp_path / "done.pth"
    save_checkpoint({"model": {}, "optimizer": {}, "scheduler": {}, "step": 4,
                     "args": {"model": "crestereo_base", "train_datasets": ["synthetic"], "dataset_steps": [3],
                              "steps_is_epochs": False, "batch_size": 2, "seed": 42},
                     "data_position": {"samples": 8, "samples_per_step": 2, "seed": 42}}, path)
    return path


def test_unwritable_checkpoint_dir(tmp_path):
    (tmp_path / "file").write_bytes(b"")
    assert "Cannot write checkpoints to" in bad(tmp_path / "file" / "run")


def test_best_checkpoint_follows_the_metric(tmp_path, monkeypatch):
    # validation replaced by a scripted mae per step (0: before training): improvements at steps 1 and 3
    maes = iter([5.0, 3.0, 4.0, 2.0])
    monkeypatch.setattr(train, "evaluate", lambda *a, iterations, **k: {
        (1, iterations[0]): {"reference": {"mae": next(maes), "1px": 0.5}}})
    run = train.main(parse(tmp_path, "--name", "b", "--valid-frequency", "1", "--test-datasets", "synthetic-val",
                           "--metrics", "mae", "1px", "--best-metric", "mae", "--keep-last", "1"))
    assert run.best == {"metric": "mae", "dataset": "synthetic-val", "value": 2.0, "step": 3}
    best = torch.load(tmp_path / "b_best.pth", weights_only=True)
    assert best["best"] == run.best and best["step"] == 3 and _same_weights(tmp_path / "b_best.pth", tmp_path / "b.pth")
    assert sorted(p.name for p in tmp_path.glob("*.pth")) == ["b.pth", "b_3.pth", "b_best.pth"]


def test_existing_run_is_not_overwritten(tmp_path):
    (tmp_path / "crestereo.pth").write_bytes(b"x")
    assert "exists from an earlier run" in bad(tmp_path)


def test_validation_preset_scatters_sparse_ground_truth_and_caps_disparity(tmp_path):
    args = parse(tmp_path, "--max-disparity", "30", "--eval-size", "48", "64")
    train.check_args(args)
    g = torch.Generator().manual_seed(0)
    images = tuple(torch.randint(0, 256, (3, 40, 100), dtype=torch.uint8, generator=g) for _ in range(2))
    mask = torch.rand(40, 100, generator=g) < 0.3
    disp = torch.where(mask, 10 + 30 * torch.rand(40, 100, generator=g), 0.0)[None]
    scale = 64 / 100
    for name, sparse in (("kitti2015-train", True), ("middlebury2014-train", False)):
        _, (out_d, _), (out_m, _) = train.validation_preset(args, name)(images, (disp, None), (mask, None))
        assert out_m.any() and (out_d[0][out_m] < 30).all()
        # KITTI's points are moved, never blended with the empty pixels around them.
        is_source_value = torch.isin(out_d[0][out_m], disp[0][mask] * scale)
        assert bool(is_source_value.all()) == sparse
