"""Training progress: a console line every N steps, TensorBoard scalars and image grids.

Values are summed over the steps since the last line (every step counts once) and, under DDP, over all
ranks, so the logged loss and metrics describe the whole global batch stream, not one rank's window.
"""

import resource
import sys
import time

import torch
from torch import Tensor
from torchvision.utils import make_grid

from utils.distributed import all_reduce_sum, is_main_process
from utils.metrics import metrics_from_stats, pixel_stats
from utils.preprocessing import denormalize
from utils.visualization import colorize

TRAIN_METRICS = ("mae", "1px", "3px")


def peak_memory_mib(device: torch.device) -> float:
    """Peak allocated GPU memory on CUDA, peak resident memory of the process on CPU (MiB)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 2**10


def _duration(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class TrainingLogger:
    """Accumulates per-step values and prints/writes them every `print_freq` steps (and at the last step)."""

    def __init__(
        self,
        total_steps: int,
        samples_per_step: int,
        device: torch.device,
        print_freq: int = 10,
        writer=None,
        start_step: int = 0,
    ):
        self.total_steps = total_steps
        self.samples_per_step = samples_per_step
        self.device = device
        self.print_freq = print_freq
        self.writer = writer
        self.skipped_total = 0  # identical on every rank: the skip decision is taken on reduced values
        self._reset(start_step)

    def _reset(self, step: int) -> None:
        self.since_step = step
        self.since_time = time.perf_counter()
        self.sums: dict[str, Tensor] = {}
        self.stats = torch.zeros(11, dtype=torch.float64, device=self.device)
        self.data_time = 0.0
        self.steps = 0
        self.skipped = 0

    def update(
        self,
        terms: dict[str, Tensor],
        prediction: Tensor,
        disparity: Tensor,
        valid: Tensor | None,
        grad_norm: Tensor | None,
        data_time: float,
        skipped: bool,
    ) -> None:
        """Record one step: loss terms, the last prediction's pixel statistics, gradient norm, loading time."""
        self.steps += 1
        self.data_time += data_time
        if skipped:
            self.skipped += 1
            self.skipped_total += 1
            return
        for name, value in terms.items():
            self.sums[name] = self.sums.get(name, 0.0) + value.detach().double()
        if grad_norm is not None:
            self.sums["grad_norm"] = self.sums.get("grad_norm", 0.0) + grad_norm.detach().double()
        with torch.no_grad():
            self.stats += pixel_stats(prediction[:, :1].detach(), disparity, valid).to(self.stats.device)

    def should_log(self, step: int) -> bool:
        return step % self.print_freq == 0 or step == self.total_steps

    def log(self, step: int, lr: float) -> dict[str, float]:
        """Reduce across ranks, print one line on rank 0, write TensorBoard scalars; returns the values."""
        names = sorted(self.sums)
        local = [self.sums[n] for n in names] + [float(self.steps - self.skipped)]
        packed = torch.stack([torch.as_tensor(v, dtype=torch.float64, device=self.device) for v in local])
        packed = all_reduce_sum(torch.cat([packed, self.stats]))
        counted = packed[len(names)].item()
        values = {n: v / max(counted, 1) for n, v in zip(names, packed[: len(names)].tolist())}
        values.update(metrics_from_stats(packed[len(names) + 1 :], TRAIN_METRICS))
        elapsed = time.perf_counter() - self.since_time
        steps = max(step - self.since_step, 1)
        values["lr"] = lr
        values["samples_per_s"] = steps * self.samples_per_step / max(elapsed, 1e-9)
        values["data_time"] = self.data_time / max(self.steps, 1)
        values["skipped"] = self.skipped
        eta = (self.total_steps - step) * elapsed / steps
        if is_main_process():
            loss = values.get("sequence", float("nan")) + sum(
                v for k, v in values.items() if k in ("consistency", "psnr", "smoothness", "photometric")
            )
            parts = [
                f"[{step}/{self.total_steps}]",
                f"loss {loss:.4f}",
                *(f"{k} {values[k]:.4f}" for k in ("consistency", "psnr", "smoothness", "photometric") if k in values),
                *(f"{k} {values[k]:.3f}" for k in TRAIN_METRICS),
                f"lr {lr:.3e}",
                f"grad_norm {values['grad_norm']:.3f}" if "grad_norm" in values else "",
                f"{values['samples_per_s']:.2f} samples/s",
                f"data {values['data_time'] * 1000:.0f} ms/step",
                f"eta {_duration(eta)}",
                f"mem {peak_memory_mib(self.device):.0f} MiB",
                f"skipped {self.skipped} non-finite ({self.skipped_total} in total)" if self.skipped_total else "",
            ]
            print("  ".join(p for p in parts if p), flush=True)
            if self.writer is not None:
                for name, value in values.items():
                    self.writer.add_scalar(f"train/{name}", value, step)
                self.writer.add_scalar("train/loss", loss, step)
        self._reset(step)
        return values


def write_training_images(
    writer,
    step: int,
    left: Tensor,
    right: Tensor,
    disparity: Tensor,
    valid: Tensor | None,
    predictions: list[Tensor],
    mean: list[float],
    std: list[float],
) -> None:
    """TensorBoard grids of the first sample: `predictions` (left, right, ground truth, last prediction) and
    `sequence` (every refinement prediction), disparities on the ground truth's colour scale."""
    gt = disparity[0, 0].detach()
    mask = valid[0].detach() if valid is not None else torch.ones_like(gt, dtype=torch.bool)
    shown = gt[mask] if mask.any() else predictions[-1][0, 0].detach()
    vmin, vmax = float(shown.min()), float(shown.max())
    images = [denormalize(left[0].detach(), mean, std).cpu(), denormalize(right[0].detach(), mean, std).cpu()]
    images += [colorize(gt, vmin, vmax, ~mask), colorize(predictions[-1][0, 0], vmin, vmax)]
    writer.add_image("predictions", make_grid(images, nrow=2, padding=2), step)
    sequence = [colorize(p[0, 0], vmin, vmax) for p in predictions]
    writer.add_image("sequence", make_grid(sequence, nrow=min(len(sequence), 4), padding=2), step)
