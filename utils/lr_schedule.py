"""Learning-rate schedule of train.py: warmup, flat phase at `lr`, decay reaching `min_lr` at the last step.

Step `t` counts completed optimizer steps (0 for the first step), as `scheduler.last_epoch` does.
- warmup, `t < warmup_steps`: linear from `lr * warmup_factor` towards `lr`, or constant `lr * warmup_factor`;
- flat, `warmup_steps <= t < decay_after_steps`: `lr`;
- decay, `decay_after_steps <= t < total_steps`: from `lr` down to exactly `min_lr` at `t = total_steps - 1`,
  along a cosine, a line or an exponential (the per-step factor is derived from `min_lr / lr`).

torchvision's reference train.py runs its flat phase at `lr ** 2`, never reaches `min_lr`, and its exponential
decay collapses within about 100 steps; this schedule does none of that.
"""

import argparse
import math
from dataclasses import dataclass

import torch

WARMUP_METHODS = ("linear", "constant")
DECAY_METHODS = ("cosine", "linear", "exponential")


@dataclass(frozen=True)
class LRSchedule:
    """One learning-rate schedule; checked on construction (ValueError naming the flag to change).

    The defaults are train.py's flag defaults (``--lr``, ``--min-lr``, ``--warmup-steps``, ``--decay-after-steps``,
    ``--lr-warmup-method``, ``--lr-warmup-factor``, ``--lr-decay-method``); ``total_steps`` is the run's length.
    """

    total_steps: int
    lr: float = 4e-4
    min_lr: float = 2e-5
    warmup_steps: int = 6000
    decay_after_steps: int = 180000
    warmup_method: str = "linear"
    warmup_factor: float = 0.02
    decay_method: str = "linear"

    def __post_init__(self) -> None:
        if self.warmup_method not in WARMUP_METHODS:
            raise ValueError(f"--lr-warmup-method must be one of {WARMUP_METHODS}, got {self.warmup_method!r}.")
        if self.decay_method not in DECAY_METHODS:
            raise ValueError(f"--lr-decay-method must be one of {DECAY_METHODS}, got {self.decay_method!r}.")
        if self.total_steps < 1:
            raise ValueError(f"The run has {self.total_steps} steps; give --dataset-steps that sum to at least 1.")
        if self.warmup_steps < 0 or self.decay_after_steps < 0:
            raise ValueError("--warmup-steps and --decay-after-steps must be >= 0.")
        if self.decay_after_steps < self.warmup_steps:
            raise ValueError(
                f"--warmup-steps ({self.warmup_steps}) is longer than --decay-after-steps ({self.decay_after_steps}): "
                "the decay would start during warmup. Set --decay-after-steps to at least --warmup-steps."
            )
        if self.decay_after_steps >= self.total_steps:
            raise ValueError(
                f"--decay-after-steps ({self.decay_after_steps}) must be smaller than the run's {self.total_steps} "
                "steps, so that the learning rate reaches --min-lr at the last step. Lower it or train longer."
            )
        if self.lr <= 0 or self.min_lr < 0 or self.min_lr > self.lr:
            raise ValueError(f"Need 0 <= --min-lr <= --lr and --lr > 0, got lr={self.lr}, min_lr={self.min_lr}.")
        if self.decay_method == "exponential" and self.min_lr <= 0:
            raise ValueError("--lr-decay-method exponential needs --min-lr > 0 (an exponential never reaches 0).")

    @classmethod
    def from_args(cls, args: argparse.Namespace, total_steps: int) -> "LRSchedule":
        """The schedule of train.py's flags for a run of `total_steps` steps."""
        return cls(
            total_steps=total_steps, lr=args.lr, min_lr=args.min_lr, warmup_steps=args.warmup_steps,
            decay_after_steps=args.decay_after_steps, warmup_method=args.lr_warmup_method,
            warmup_factor=args.lr_warmup_factor, decay_method=args.lr_decay_method,
        )

    def lr_at(self, t: int) -> float:
        """The learning rate of step `t` (0-based count of completed steps)."""
        if t < self.warmup_steps:
            if self.warmup_method == "constant":
                return self.lr * self.warmup_factor
            return self.lr * (self.warmup_factor + (1.0 - self.warmup_factor) * t / self.warmup_steps)
        if t < self.decay_after_steps:
            return self.lr
        decay_length = self.total_steps - 1 - self.decay_after_steps
        progress = 1.0 if decay_length <= 0 else min(1.0, (t - self.decay_after_steps) / decay_length)
        if self.decay_method == "cosine":
            return self.min_lr + (self.lr - self.min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))
        if self.decay_method == "linear":
            return self.lr + (self.min_lr - self.lr) * progress
        return self.lr * (self.min_lr / self.lr) ** progress


def make_lr_schedule(optimizer: torch.optim.Optimizer, schedule: LRSchedule) -> torch.optim.lr_scheduler.LambdaLR:
    """A LambdaLR following `schedule.lr_at`; call `scheduler.step()` once per optimizer step."""
    for group in optimizer.param_groups:
        group["lr"] = schedule.lr
        group["initial_lr"] = schedule.lr
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda t: schedule.lr_at(t) / schedule.lr)
