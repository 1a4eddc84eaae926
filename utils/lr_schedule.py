"""Learning-rate schedule of train.py: warmup, flat phase at `lr`, decay reaching `min_lr` at the last step.

Step `t` counts completed optimizer steps (0 for the first step), as `scheduler.last_epoch` does.
- warmup, `t < warmup_steps`: linear from `lr * warmup_factor` towards `lr`, or constant `lr * warmup_factor`;
- flat, `warmup_steps <= t < decay_after_steps`: `lr`;
- decay, `decay_after_steps <= t < total_steps`: from `lr` down to exactly `min_lr` at `t = total_steps - 1`,
  along a cosine, a line or an exponential (the per-step factor is derived from `min_lr / lr`).
"""

import math

import torch

WARMUP_METHODS = ("linear", "constant")
DECAY_METHODS = ("cosine", "linear", "exponential")


def check_lr_schedule(
    *,
    total_steps: int,
    lr: float,
    min_lr: float,
    warmup_steps: int,
    decay_after_steps: int,
    warmup_method: str = "linear",
    decay_method: str = "cosine",
) -> None:
    """Raise ValueError with the fix for schedules that cannot be built."""
    if warmup_method not in WARMUP_METHODS:
        raise ValueError(f"--lr-warmup-method must be one of {WARMUP_METHODS}, got {warmup_method!r}.")
    if decay_method not in DECAY_METHODS:
        raise ValueError(f"--lr-decay-method must be one of {DECAY_METHODS}, got {decay_method!r}.")
    if total_steps < 1:
        raise ValueError(f"The run has {total_steps} steps; give --dataset-steps that sum to at least 1.")
    if warmup_steps < 0 or decay_after_steps < 0:
        raise ValueError("--warmup-steps and --decay-after-steps must be >= 0.")
    if decay_after_steps < warmup_steps:
        raise ValueError(
            f"--warmup-steps ({warmup_steps}) is longer than --decay-after-steps ({decay_after_steps}): the decay "
            "would start during warmup. Set --decay-after-steps to at least --warmup-steps."
        )
    if decay_after_steps >= total_steps:
        raise ValueError(
            f"--decay-after-steps ({decay_after_steps}) must be smaller than the run's {total_steps} steps, so that "
            "the learning rate reaches --min-lr at the last step. Lower it or train longer."
        )
    if lr <= 0 or min_lr < 0 or min_lr > lr:
        raise ValueError(f"Need 0 <= --min-lr <= --lr and --lr > 0, got lr={lr}, min_lr={min_lr}.")
    if decay_method == "exponential" and min_lr <= 0:
        raise ValueError("--lr-decay-method exponential needs --min-lr > 0 (an exponential never reaches 0).")


def lr_at(
    t: int,
    *,
    total_steps: int,
    lr: float,
    min_lr: float,
    warmup_steps: int,
    decay_after_steps: int,
    warmup_method: str = "linear",
    warmup_factor: float = 0.02,
    decay_method: str = "cosine",
) -> float:
    """The learning rate of step `t` (0-based count of completed steps)."""
    if t < warmup_steps:
        if warmup_method == "constant":
            return lr * warmup_factor
        return lr * (warmup_factor + (1.0 - warmup_factor) * t / warmup_steps)
    if t < decay_after_steps:
        return lr
    decay_length = total_steps - 1 - decay_after_steps
    progress = 1.0 if decay_length <= 0 else min(1.0, (t - decay_after_steps) / decay_length)
    if decay_method == "cosine":
        return min_lr + (lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))
    if decay_method == "linear":
        return lr + (min_lr - lr) * progress
    return lr * (min_lr / lr) ** progress


def make_lr_schedule(optimizer: torch.optim.Optimizer, *, lr: float, **schedule) -> torch.optim.lr_scheduler.LambdaLR:
    """A LambdaLR following `lr_at`; call `scheduler.step()` once per optimizer step.

    `schedule` holds the keyword arguments of `lr_at` other than `t` and `lr`.
    """
    check_lr_schedule(
        lr=lr,
        **{k: schedule[k] for k in ("total_steps", "min_lr", "warmup_steps", "decay_after_steps")},
        warmup_method=schedule.get("warmup_method", "linear"),
        decay_method=schedule.get("decay_method", "cosine"),
    )
    for group in optimizer.param_groups:
        group["lr"] = lr
        group["initial_lr"] = lr
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda t: lr_at(t, lr=lr, **schedule) / lr)
