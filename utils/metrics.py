"""Disparity metrics with the definitions of torchvision's reference scripts, and their two aggregations.

Every metric is a pixel statistic over the valid pixels, with ``e = |pred - gt|`` and ``g = |gt|``:

==========  ==========================================  ========  ===============
name        definition over the valid pixels            unit      better
==========  ==========================================  ========  ===============
mae, epe    mean(e)                                     px        lower
rmse        sqrt(mean(e^2))                             px        lower
1px         mean(e < 1)                                 fraction  higher
3px         mean(e < 3)                                 fraction  higher
5px         mean(e < 5)                                 fraction  higher
bad1        mean(e > 1)                                 fraction  lower
bad2        mean(e > 2)                                 fraction  lower
relepe      mean(e / g)                                 ratio     lower
fl-all      100 * mean(e < 3 and e / g < 0.05)          percent   higher
d1-all      100 * mean(e > 3 and e / g > 0.05)          percent   lower (KITTI)
bad2.0      100 * mean(e > 2)                           percent   lower (Middlebury)
avgerr      mean(e)                                     px        lower (Middlebury)
==========  ==========================================  ========  ===============

``fl-all`` is torchvision's "accurate by both criteria" share, not KITTI's outlier rate; ``d1-all`` is
KITTI's outlier rate. ``bad2.0`` and ``avgerr`` are the Middlebury v3 table's names (percent and pixels),
computed at the resolution evaluated (with ``middeval3-train-{F,H,Q}`` and ``for_eval``: non-occluded pixels).

Valid pixels: ``valid & isfinite(gt) & (gt != 0)``. A pixel without ground truth (zero or non-finite
disparity) has no relative error, so it is dropped for every metric (torchvision's eval preset does the
same with ``disp > 0``) and all metrics share one pixel set.

Aggregations (both reduced with one sum across processes):

- ``reference``: the mean over batches of per-batch pixel means (torchvision's reference scripts' ``global_avg``; with
  batch size 1 it is the mean over images of per-image means, which the published numbers use). A batch
  without any valid pixel has no mean and is left out of the average instead of making it NaN.
- ``pooled``: every valid pixel of the dataset weighted equally.
"""

import torch
from torch import Tensor

AVAILABLE_METRICS = ("mae", "epe", "rmse", "1px", "3px", "5px", "bad1", "bad2", "relepe", "fl-all", "d1-all",
                     "bad2.0", "avgerr")
DEFAULT_METRICS = ("mae", "rmse", "1px", "3px", "5px", "relepe", "fl-all")
# The metrics where a larger value is better (shares of accurate pixels); lower is better for the rest.
HIGHER_IS_BETTER = frozenset({"1px", "3px", "5px", "fl-all"})


def is_improvement(metric: str, value: float, best: float | None) -> bool:
    """Whether `value` of `metric` beats `best` (None: nothing to beat yet)."""
    if best is None:
        return True
    return value > best if metric in HIGHER_IS_BETTER else value < best


# Sufficient statistics: sums over valid pixels from which every metric follows.
_STATS = ("pixels", "e", "e2", "lt1", "lt3", "lt5", "gt1", "gt2", "rel", "fl", "d1")


def check_metrics(metrics: list[str] | tuple[str, ...]) -> None:
    """Raise ValueError naming the valid metrics if any name is unknown."""
    unknown = [m for m in metrics if m not in AVAILABLE_METRICS]
    if unknown:
        raise ValueError(f"unknown metric(s) {unknown}; choose from {list(AVAILABLE_METRICS)}")


def pixel_stats(pred: Tensor, gt: Tensor, valid: Tensor | None) -> Tensor:
    """Float64 sums over the valid pixels of a batch, in the order of ``_STATS``.

    ``pred`` and ``gt`` are ``(B, 1, H, W)`` disparities; ``valid`` is ``(B, H, W)`` bool or None (all valid).
    """
    if pred.shape != gt.shape:
        raise ValueError(f"prediction shape {tuple(pred.shape)} differs from ground truth shape {tuple(gt.shape)}")
    gt = gt.float()
    keep = torch.isfinite(gt) & (gt != 0)
    if valid is not None:
        keep &= valid.reshape(gt.shape)
    e = (pred.float() - gt).abs()[keep]
    rel = e / gt.abs()[keep]
    f64 = torch.float64
    sums = [
        keep.sum(),
        e.sum(dtype=f64),
        e.square().sum(dtype=f64),
        (e < 1).sum(),
        (e < 3).sum(),
        (e < 5).sum(),
        (e > 1).sum(),
        (e > 2).sum(),
        rel.sum(dtype=f64),
        ((e < 3) & (rel < 0.05)).sum(),
        ((e > 3) & (rel > 0.05)).sum(),
    ]
    return torch.stack([s.to(f64) for s in sums])


def metrics_from_stats(stats: Tensor, metrics: list[str] | tuple[str, ...]) -> dict[str, float]:
    """Metric values from the sums of ``pixel_stats`` (NaN for every metric when there is no pixel)."""
    s = dict(zip(_STATS, stats.double().tolist()))
    n = s["pixels"]
    if n == 0:
        return {m: float("nan") for m in metrics}
    values = {
        "mae": s["e"] / n,
        "epe": s["e"] / n,
        "rmse": (s["e2"] / n) ** 0.5,
        "1px": s["lt1"] / n,
        "3px": s["lt3"] / n,
        "5px": s["lt5"] / n,
        "bad1": s["gt1"] / n,
        "bad2": s["gt2"] / n,
        "relepe": s["rel"] / n,
        "fl-all": 100.0 * s["fl"] / n,
        "d1-all": 100.0 * s["d1"] / n,
        "bad2.0": 100.0 * s["gt2"] / n,
        "avgerr": s["e"] / n,
    }
    return {m: values[m] for m in metrics}


def compute_metrics(
    pred: Tensor, gt: Tensor, valid: Tensor | None, metrics: list[str] | tuple[str, ...] = DEFAULT_METRICS
) -> dict[str, float]:
    """Pixel means of one batch (the per-batch values of torchvision's reference scripts); NaN when no pixel
    is valid."""
    check_metrics(metrics)
    return metrics_from_stats(pixel_stats(pred, gt, valid), metrics)


class MetricAccumulator:
    """Accumulates both aggregations of a list of metrics in one float64 tensor.

    Layout of ``state``: per-metric sums of per-batch means, the count of non-empty batches, the count of
    samples, then the pooled sums of ``pixel_stats``. Summing ``state`` across processes (one all-reduce)
    gives the totals of the whole dataset.
    """

    def __init__(self, metrics: list[str] | tuple[str, ...] = DEFAULT_METRICS, device: torch.device | str = "cpu"):
        check_metrics(metrics)
        self.metrics = tuple(metrics)
        self.state = torch.zeros(len(self.metrics) + 2 + len(_STATS), dtype=torch.float64, device=device)

    def update(self, pred: Tensor, gt: Tensor, valid: Tensor | None) -> None:
        """Add one batch."""
        stats = pixel_stats(pred, gt, valid).to(self.state.device)
        m = len(self.metrics)
        self.state[m + 1] += pred.shape[0]
        self.state[m + 2 :] += stats
        if stats[0] > 0:
            batch = metrics_from_stats(stats, self.metrics)
            values = [batch[k] for k in self.metrics]
            self.state[:m] += torch.tensor(values, dtype=torch.float64, device=self.state.device)
            self.state[m] += 1

    @property
    def num_samples(self) -> int:
        return int(self.state[len(self.metrics) + 1].item())

    @property
    def num_pixels(self) -> int:
        return int(self.state[len(self.metrics) + 2].item())

    def reference(self) -> dict[str, float]:
        """Mean over non-empty batches of per-batch pixel means (NaN if no batch had a valid pixel)."""
        m = len(self.metrics)
        batches = self.state[m].item()
        if batches == 0:
            return {k: float("nan") for k in self.metrics}
        return {k: v / batches for k, v in zip(self.metrics, self.state[:m].tolist())}

    def pooled(self) -> dict[str, float]:
        """Metrics over all valid pixels pooled together."""
        return metrics_from_stats(self.state[len(self.metrics) + 2 :], self.metrics)
