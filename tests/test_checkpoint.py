import argparse
import os

import pytest
import torch

from utils.checkpoint import (
    check_writable,
    link_checkpoint,
    load_checkpoint,
    model_state_from_checkpoint,
    plain_args,
    prune_step_checkpoints,
    rng_state,
    save_checkpoint,
    set_rng_state,
)


def _checkpoint():
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model(torch.ones(1, 3)).sum().backward()
    opt.step()
    args = argparse.Namespace(model="crestereo_base", crop_size=(64, 96), lr=1e-3, weights=None, tb=True)
    return {
        "model": model.state_dict(),
        "optimizer": opt.state_dict(),
        "scheduler": {"last_epoch": 3},
        "step": 3,
        "args": plain_args(args),
        "scaler": None,
        "rng": rng_state(),
        "data_position": 24,
    }


def test_roundtrip_weights_only(tmp_path):
    obj = _checkpoint()
    path = tmp_path / "sub" / "run.pth"
    save_checkpoint(obj, path)
    assert [p.name for p in path.parent.iterdir()] == ["run.pth"]  # no temporary file left behind
    back = torch.load(path, weights_only=True)
    assert back["args"]["crop_size"] == [64, 96] and back["step"] == 3
    assert torch.equal(back["model"]["weight"], obj["model"]["weight"])
    state, name = model_state_from_checkpoint(load_checkpoint(path))
    assert name == "crestereo_base" and set(state) == {"weight", "bias"}


def test_raw_state_dict():
    sd = torch.nn.Linear(2, 2).state_dict()
    state, name = model_state_from_checkpoint(sd)
    assert name is None and state is sd
    with pytest.raises(ValueError, match="Not a model checkpoint"):
        model_state_from_checkpoint({"foo": 1})


def test_bad_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pth")
    good = tmp_path / "good.pth"
    save_checkpoint(_checkpoint(), good)
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(good.read_bytes()[:200])
    with pytest.raises(ValueError, match="is truncated or damaged"):
        load_checkpoint(truncated)
    text = tmp_path / "text.pth"
    text.write_text("hello")
    with pytest.raises(ValueError, match="is not a PyTorch checkpoint"):
        load_checkpoint(text)
    foreign = tmp_path / "list.pth"
    torch.save([1, 2], foreign)
    with pytest.raises(ValueError, match="holds a list"):
        load_checkpoint(foreign)


class CodeOnLoad:
    """Unpickling an instance calls `os.system`: what weights-only loading exists to refuse."""

    def __reduce__(self):
        return os.system, ("touch pwned",)


def test_pickled_code_is_refused_by_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.pth"
    torch.save({"model": {"w": torch.zeros(1)}, "args": CodeOnLoad()}, path)
    with pytest.raises(ValueError, match=r"contains a pickled \S*system object; loading it could run code"):
        load_checkpoint(path)
    assert not (tmp_path / "pwned").exists()


def test_torchvision_reference_checkpoint_with_namespace_args(tmp_path):
    # torchvision's reference train.py saves `args` as the argparse.Namespace itself, derived fields included
    model = torch.nn.Linear(3, 2)
    args = argparse.Namespace(model="crestereo_base", lr=4e-4, crop_size=[384, 512], world_size=8, gpu=0)
    path = tmp_path / "reference.pth"
    torch.save({"model": model.state_dict(), "optimizer": {}, "scheduler": {}, "step": 7, "args": args}, path)
    ckpt = load_checkpoint(path)
    assert ckpt["args"] == {"model": "crestereo_base", "lr": 4e-4, "crop_size": [384, 512], "world_size": 8, "gpu": 0}
    state, name = model_state_from_checkpoint(ckpt)
    assert name == "crestereo_base" and torch.equal(state["weight"], model.weight)


def test_rng_roundtrip():
    state = rng_state()
    a = torch.rand(3)
    set_rng_state(state)
    assert torch.equal(torch.rand(3), a)


def test_latest_is_a_link_or_a_copy(tmp_path, monkeypatch):
    step = tmp_path / "run_4.pth"
    save_checkpoint(_checkpoint(), step)
    link_checkpoint(step, tmp_path / "run.pth")
    assert os.path.samefile(step, tmp_path / "run.pth")
    step.unlink()  # --keep-last removing the step file leaves the latest
    assert load_checkpoint(tmp_path / "run.pth")["step"] == 3

    def no_links(*_):
        raise OSError("hard links not supported")

    monkeypatch.setattr(os, "link", no_links)
    save_checkpoint(_checkpoint(), step)
    link_checkpoint(step, tmp_path / "run.pth")
    assert not os.path.samefile(step, tmp_path / "run.pth")
    assert (tmp_path / "run.pth").read_bytes() == step.read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.pth", "run_4.pth"]  # no temporary file left


def test_prune_keeps_the_newest_steps_of_this_name_only(tmp_path):
    names = ["run_2.pth", "run_10.pth", "run_9.pth", "run.pth", "run_best.pth", "run_x_1.pth", "runner_1.pth"]
    for name in names:
        (tmp_path / name).write_bytes(b"")
    deleted = prune_step_checkpoints(tmp_path, "run", 2)
    assert sorted(p.name for p in deleted) == ["run_2.pth"]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(set(names) - {"run_2.pth"})
    with pytest.raises(ValueError, match="at least 1"):
        prune_step_checkpoints(tmp_path, "run", 0)


def test_check_writable(tmp_path):
    check_writable(tmp_path / "new" / "run")
    assert (tmp_path / "new" / "run").is_dir() and not list((tmp_path / "new" / "run").iterdir())
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(ValueError, match="pass a writable --checkpoint-dir"):
        check_writable(tmp_path / "file" / "run")
