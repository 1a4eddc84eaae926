"""Training checkpoints as plain data: atomic writes, `weights_only=True` reads, clear errors.

A checkpoint is a dict with `model`, `optimizer`, `scheduler`, `step` (last completed step), `args` (plain
dict of the command line, `args["model"]` the model name), `scaler`, `rng` and `data_position`. Everything
in it is a tensor, a number, a string, a list, a dict or None, so `torch.load(path, weights_only=True)`
reads it without executing code.
"""

import argparse
import glob
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch


def save_checkpoint(obj: dict, path: str | os.PathLike) -> None:
    """Write `obj` to `path` atomically: a temporary file in the same directory, then `os.replace`.

    A run killed while saving leaves either the previous file or the new one, never a truncated one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def link_checkpoint(source: str | os.PathLike, path: str | os.PathLike) -> None:
    """Make `path` the same file as `source` without serialising again: a hard link (a copy where the filesystem
    has none), put in place atomically like `save_checkpoint`.

    Deleting either name later leaves the other intact, and neither is ever written in place.
    """
    source, path = Path(source), Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        os.unlink(tmp)
        try:
            os.link(source, tmp)
        except OSError:  # no hard links here (some network and FAT filesystems, another device)
            shutil.copyfile(source, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def step_checkpoints(folder: str | os.PathLike, name: str) -> dict[int, Path]:
    """The `{name}_{step}.pth` files in `folder`, by step."""
    pattern = re.compile(rf"{re.escape(name)}_(\d+)\.pth")
    found = {}
    for path in Path(folder).glob(f"{glob.escape(name)}_*.pth"):
        match = pattern.fullmatch(path.name)
        if match:
            found[int(match.group(1))] = path
    return dict(sorted(found.items()))


def prune_step_checkpoints(folder: str | os.PathLike, name: str, keep_last: int) -> list[Path]:
    """Delete all but the `keep_last` newest `{name}_{step}.pth` files; returns the deleted paths."""
    if keep_last < 1:
        raise ValueError(f"keep_last must be at least 1, got {keep_last}")
    old = list(step_checkpoints(folder, name).values())[:-keep_last]
    for path in old:
        path.unlink(missing_ok=True)
    return old


def check_writable(folder: str | os.PathLike) -> None:
    """Create `folder` and write (then remove) a file in it, so that a run fails now rather than at its first save."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as e:
        raise ValueError(
            f"Cannot write checkpoints to {folder} ({e.strerror or e}); pass a writable --checkpoint-dir."
        ) from None


# Classes that torchvision's reference train.py pickles into its checkpoints (`args` is an argparse.Namespace).
# Unpickling one only sets attributes on an empty object, so allowing it runs no code from the file.
SAFE_GLOBALS = [argparse.Namespace]


def _read_error(path: Path, error: Exception) -> str:
    """What is wrong with a file `torch.load(weights_only=True)` refused, and what to do about it."""
    text = str(error)
    refused = re.search(r"GLOBAL (\S+)", text)
    if refused:
        return (
            f"Checkpoint {path} contains a pickled {refused.group(1)} object; loading it "
            "could run code, so only tensors, plain data and argparse.Namespace are read. Re-save its state dict "
            "(torch.save(ckpt['model'], 'weights.pth')) where you trust the file, and load that."
        )
    if "zip archive" in text or "central directory" in text:
        return (
            f"Checkpoint {path} is truncated or damaged (incomplete zip archive, {path.stat().st_size} bytes); copy "
            "it again or pick an earlier checkpoint."
        )
    first = text.splitlines()[0] if text else ""
    return f"{path} is not a PyTorch checkpoint ({type(error).__name__}: {first}); pass a file written by torch.save."


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """Read a checkpoint or a raw state dict with `weights_only=True` (plus `SAFE_GLOBALS`).

    A pickled `argparse.Namespace` under `args` (torchvision's reference checkpoints) becomes a plain dict, so
    callers see one layout. A missing file, a truncated one, a disallowed pickle and a non-checkpoint each get their
    own message.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Checkpoint {path} does not exist; check the path (e.g. --resume-path / --weights).")
    try:
        with torch.serialization.safe_globals(SAFE_GLOBALS):
            obj = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:
        raise ValueError(_read_error(path, e)) from None
    if not isinstance(obj, dict):
        raise ValueError(f"Checkpoint {path} holds a {type(obj).__name__}, not a state dict or a training checkpoint.")
    if isinstance(obj.get("args"), argparse.Namespace):
        obj["args"] = plain_args(obj["args"])
    return obj


def model_state_from_checkpoint(obj: dict) -> tuple[dict, str | None]:
    """Return `(state_dict, model_name or None)` from one of our training checkpoints or a raw state dict."""
    if isinstance(obj.get("model"), dict):
        args = obj.get("args")
        name = args.get("model") if isinstance(args, dict) else None
        return obj["model"], name
    if obj and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()):
        return obj, None
    raise ValueError(
        "Not a model checkpoint: expected a training checkpoint with a 'model' entry or a raw state dict of tensors."
    )


def plain_args(args: argparse.Namespace | dict) -> dict:
    """The command-line arguments as a dict of plain values (tuples become lists), loadable with weights_only."""

    def plain(value: Any) -> Any:
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        if value is None or isinstance(value, (bool, int, float, str)):
            return value
        return str(value)

    items = vars(args).items() if isinstance(args, argparse.Namespace) else args.items()
    return {k: plain(v) for k, v in items}


def rng_state() -> dict:
    """torch's CPU and CUDA generator states, as tensors."""
    state = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore what `rng_state` saved (the CUDA part only where CUDA is present)."""
    torch.set_rng_state(state["cpu"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
