"""Preemption of a 2-process gloo job under `torchrun --standalone`, with a checkpoint write slowed to seconds.

torchrun starts each worker in its own session, so a signal to the agent's process group reaches the agent only.
SLURM signals every process of the step: the test sends SIGTERM to the agent and all its descendants at once.
Kubernetes signals the container's first process: the test sends SIGTERM to the agent alone (it forwards it).
"""

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
ARGS = [
    "--device", "cpu", "--train-datasets", "synthetic", "--dataset-steps", "4", "--batch-size", "1",
    "--crop-size", "64", "96", "--recurrent-updates", "2", "--workers", "0", "--warmup-steps", "0",
    "--decay-after-steps", "0", "--save-frequency", "100", "--valid-frequency", "0", "--threads", "1",
    "--print-frequency", "1", "--name", "pre",
]
# train.py with every torch.save taking SLOW_SAVE seconds longer, as on a network filesystem
WRAPPER = f"""
import os, runpy, sys, time
sys.path.insert(0, {str(REPO)!r})
import torch
save = torch.save
def slow_save(*args, **kwargs):
    save(*args, **kwargs)
    time.sleep(float(os.environ["SLOW_SAVE"]))
torch.save = slow_save
sys.argv[0] = {str(REPO / "train.py")!r}
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def launch(tmp_path: Path, folder: Path, *extra: str, slow: float = 0.0) -> subprocess.Popen:
    wrapper = tmp_path / "slow_train.py"
    wrapper.write_text(WRAPPER)
    env = {**os.environ, "SLOW_SAVE": str(slow), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(wrapper),
           *ARGS, "--checkpoint-dir", str(folder), *extra]
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)


def descendants(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        for child in (task / "children").read_text().split():
            found += [int(child), *descendants(int(child))]
    return found


def finish(proc: subprocess.Popen, lines: list[str]) -> int:
    try:
        lines += proc.stdout.readlines()
        return proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)


def run_to_end(tmp_path: Path, folder: Path, *extra: str) -> dict:
    lines: list[str] = []
    assert finish(launch(tmp_path, folder, *extra), lines) == 0, "".join(lines)
    return torch.load(folder / "pre.pth", weights_only=True)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("uninterrupted")
    return run_to_end(tmp, tmp)


@pytest.mark.parametrize("target", ["group", "agent"])
def test_sigterm_saves_waits_and_resumes_bit_identically(target, tmp_path, uninterrupted):
    folder = tmp_path / "run"
    proc = launch(tmp_path, folder, slow=3.0)
    lines = []
    for line in proc.stdout:  # wait for the first finished step
        lines.append(line)
        if re.match(r"\[1/4\]", line):
            break
    pids = [proc.pid] + (descendants(proc.pid) if target == "group" else [])
    for pid in pids:
        os.kill(pid, signal.SIGTERM)
    finish(proc, lines)
    output = "".join(lines)
    hints = re.findall(r"stopped by a signal after step (\d+)", output)
    assert len(hints) == 1, output  # rank 0 only
    ckpt = torch.load(folder / "pre.pth", weights_only=True)
    assert ckpt["step"] == int(hints[0]) < 4 and ckpt["data_position"]["samples_per_step"] == 2
    assert not list(folder.glob(".*.tmp")), output  # the slow write was not interrupted

    resumed = run_to_end(tmp_path, folder, "--resume-path", str(folder / "pre.pth"), "--resume-schedule")
    assert resumed["step"] == uninterrupted["step"] == 4
    for key, value in uninterrupted["model"].items():
        assert torch.equal(resumed["model"][key], value), key
