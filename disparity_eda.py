"""Disparity distribution of the random crops a training run will see, before spending compute on it.

Takes train.py's dataset and augmentation flags (``utils.cli.add_training_data_arguments``: paste the training
command's ``--train-datasets``, ``--dataset-steps``, ``--crop-size``, ``--scale-range``, ...). Samples random
crops through the real training preset of each dataset (``presets.train_preset_from_args``) and, for two or
more datasets, through the training mixture, drawn position by position exactly as ``train.py`` draws it
(``data.mixture.TrainingMixture``, same seed and per-position augmentation seeding).
Reports per dataset and for the mixture: disparity histogram and percentiles, share of valid pixels, share of
valid disparities beyond ``--threshold``, image sizes and aspect ratios before cropping, and the effective
scale applied. Writes a PNG (one panel per dataset, shared axes) and a JSON file, and prints a table.

    python disparity_eda.py --train-datasets synthetic synthetic-val --dataset-steps 88 12 --crop-size 256 320
"""

import argparse
import json
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

import transforms as T  # noqa: E402
from data.mixture import TrainingMixture, check_dataset_steps, sample_seed  # noqa: E402
from data.registry import make_dataset  # noqa: E402
from presets import train_preset_from_args  # noqa: E402
from utils import cli  # noqa: E402
from utils.visualization import plt  # noqa: E402

PERCENTILES = (1, 5, 25, 50, 75, 95, 99, 99.9)
BIN_WIDTH = 0.125  # px; percentiles read from the histogram are exact to this width
HISTOGRAM_RANGE = 2048.0  # px; larger disparities are counted as overflow
MIXTURE = "mixture"


@dataclass
class CropStatistics:
    """Running statistics of the crops drawn from one dataset (or the mixture)."""

    counts: torch.Tensor = field(
        default_factory=lambda: torch.zeros(int(HISTOGRAM_RANGE / BIN_WIDTH), dtype=torch.int64)
    )
    overflow: int = 0
    value_sum: float = 0.0
    valid_pixels: int = 0
    total_pixels: int = 0
    samples: int = 0
    sizes: Counter = field(default_factory=Counter)
    scales: list = field(default_factory=list)
    raised_scales: int = 0
    sources: Counter = field(default_factory=Counter)

    def add(self, values: torch.Tensor, pixels: int, size: tuple[int, int], scale: float, raised: bool,
            source: str) -> None:
        """Count one crop: its valid disparities, its pixel count, the image size before cropping, the scale."""
        values = values.double()
        inside = values < HISTOGRAM_RANGE
        self.counts += torch.bincount((values[inside] / BIN_WIDTH).long(), minlength=len(self.counts))
        self.overflow += int((~inside).sum())
        self.value_sum += float(values.sum())
        self.valid_pixels += values.numel()
        self.total_pixels += pixels
        self.samples += 1
        self.sizes[size] += 1
        self.scales.append(scale)
        self.raised_scales += raised
        self.sources[source] += 1

    def percentile(self, q: float) -> float:
        """The q-th percentile of the valid disparities, interpolated linearly inside its histogram bin."""
        if self.valid_pixels == 0:
            return math.nan
        target = q / 100 * self.valid_pixels
        cumulative = torch.cumsum(self.counts, 0).double()
        index = int(torch.searchsorted(cumulative, torch.tensor([target], dtype=torch.float64)))
        if index >= len(self.counts):
            return HISTOGRAM_RANGE
        before = float(cumulative[index - 1]) if index > 0 else 0.0
        inside = float(self.counts[index])
        fraction = (target - before) / inside if inside else 0.0
        return (index + min(max(fraction, 0.0), 1.0)) * BIN_WIDTH

    def share_beyond(self, threshold: float) -> float:
        """Share of valid pixels with disparity >= threshold."""
        if self.valid_pixels == 0:
            return math.nan
        first = min(len(self.counts), math.ceil(threshold / BIN_WIDTH))
        return (int(self.counts[first:].sum()) + self.overflow) / self.valid_pixels

    def summary(self, threshold: float) -> dict:
        """Every statistic as plain data (the JSON entry of this dataset)."""
        aspects = sorted(w / h for (h, w) in self.sizes.elements())
        scales = torch.tensor(self.scales, dtype=torch.float64)
        return {
            "samples": self.samples,
            "sources": dict(self.sources),
            "valid_share": self.valid_pixels / self.total_pixels if self.total_pixels else math.nan,
            "percentiles": {str(q): self.percentile(q) for q in PERCENTILES},
            "mean": self.mean(),
            "threshold": threshold,
            "share_beyond_threshold": self.share_beyond(threshold),
            "image_sizes": {f"{h}x{w}": n for (h, w), n in self.sizes.most_common()},
            "aspect_ratio": {"min": aspects[0], "median": aspects[len(aspects) // 2], "max": aspects[-1]}
            if aspects else {},
            "scale": {
                "min": float(scales.min()), "median": float(scales.median()), "mean": float(scales.mean()),
                "max": float(scales.max()), "raised_to_fit_crop": self.raised_scales / self.samples,
            } if self.samples else {},
            "histogram": {"bin_width": BIN_WIDTH, "counts": self.counts[: self._used_bins()].tolist(),
                          "overflow": self.overflow},
        }

    def _used_bins(self) -> int:
        nonzero = torch.nonzero(self.counts)
        return int(nonzero[-1]) + 1 if len(nonzero) else 0

    def mean(self) -> float:
        """Mean disparity of the valid pixels (exact, not read from the histogram)."""
        return self.value_sum / self.valid_pixels if self.valid_pixels else math.nan


class ScaleRecorder:
    """Reads the scale that ``RandomRescaleAndCrop`` applied to the latest sample of the preset it belongs to
    (its ``last_draw``).

    The effective horizontal scale of a crop is its width in the rescaled image over the original width (the
    factor its disparities are multiplied by, optional ``--resize-size`` included); "raised" marks samples
    whose drawn scale was increased so that the crop fits in the image.
    """

    def __init__(self, preset: nn.Module) -> None:
        self.rescale = next(m for m in preset.modules() if isinstance(m, T.RandomRescaleAndCrop))

    def read(self, original_width: int) -> tuple[float, bool]:
        """(effective horizontal scale relative to the original image, whether it was raised to fit)."""
        draw = self.rescale.last_draw
        return draw.rescaled_size[1] / original_width, draw.applied > draw.drawn


def draw_sample(dataset: Dataset, index: int, preset: nn.Module, recorder: ScaleRecorder, seed: int) -> dict:
    """Read sample ``index`` and augment it under ``seed``, as a dataset built with ``transforms=preset`` would.

    Returns the crop's valid disparities and pixel count, the image size before cropping and the scale.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        images, disparities, masks = dataset[index]
        size = tuple(images[0].shape[-2:])
        _, disparities, masks = preset(images, disparities, masks)
    scale, raised = recorder.read(size[1])
    return {"values": disparities[0][0][masks[0]], "pixels": masks[0].numel(), "size": size, "scale": scale,
            "raised": raised}


class CropJobs(Dataset):
    """``(group, dataset name, sample index, seed)`` jobs, run by DataLoader workers."""

    def __init__(self, jobs: list[tuple[str, str, int, int]], datasets: dict[str, Dataset],
                 presets: dict[str, nn.Module]) -> None:
        self.jobs, self.datasets, self.presets = jobs, datasets, presets
        self.recorders: dict[str, ScaleRecorder] = {}  # attached in the process that draws (picklable jobs)

    def __len__(self) -> int:
        return len(self.jobs)

    def __getitem__(self, i: int) -> dict:
        group, name, index, seed = self.jobs[i]
        if name not in self.recorders:
            self.recorders[name] = ScaleRecorder(self.presets[name])
        crop = draw_sample(self.datasets[name], index, self.presets[name], self.recorders[name], seed)
        return {"group": group, "name": name, **crop}


def analyse(
    datasets: dict[str, Dataset],
    presets: dict[str, nn.Module],
    *,
    num_samples: int,
    seed: int = 0,
    dataset_steps: Sequence[int] | None = None,
    steps_is_epochs: bool = False,
    batch_size: int = 2,
    world_size: int = 1,
    workers: int = 0,
    progress: bool = False,
) -> dict[str, CropStatistics]:
    """Statistics of ``num_samples`` crops per dataset, and of the first ``num_samples`` mixture positions.

    ``datasets`` are built without transforms and ``presets[name]`` is the training preset of dataset
    ``name``. Per dataset, samples are drawn uniformly at random (with replacement) under ``seed``. With
    ``dataset_steps``, the mixture is the one ``train.py`` builds from the same datasets, steps, batch size,
    world size and seed, and position p is augmented under ``sample_seed(seed, p)`` as in training. The
    result does not depend on ``workers``.
    """
    generator = torch.Generator().manual_seed(seed)
    jobs = []
    for k, (name, dataset) in enumerate(datasets.items()):
        indices = torch.randint(len(dataset), (num_samples,), generator=generator).tolist()
        jobs += [(name, name, index, sample_seed(seed + 1 + k, j)) for j, index in enumerate(indices)]
    results = {name: CropStatistics() for name in datasets}
    if dataset_steps is not None:
        names = list(datasets)
        mixture = TrainingMixture(
            list(datasets.values()), dataset_steps, batch_size, world_size, steps_is_epochs=steps_is_epochs,
            seed=seed, names=names,
        )
        for position in range(min(num_samples, len(mixture))):
            d, index = mixture.source(position)
            jobs.append((MIXTURE, names[d], index, sample_seed(seed, position)))
        results[MIXTURE] = CropStatistics()
    loader = DataLoader(CropJobs(jobs, datasets, presets), batch_size=None, num_workers=workers)
    for crop in tqdm(loader, desc="crops", unit="crop", disable=not progress):
        results[crop["group"]].add(crop["values"], crop["pixels"], tuple(crop["size"]), crop["scale"], crop["raised"],
                                   crop["name"])
    return results


def plot(
    results: dict[str, CropStatistics], path: Path, threshold: float, title: str, max_x: float | None = None
) -> None:
    """One panel per dataset (and the mixture), shared axes: share of valid pixels per pixel of disparity."""
    summaries = {name: s for name, s in results.items() if s.valid_pixels}
    if max_x is None:
        top = max([s.percentile(99.9) for s in summaries.values()] + [1.0])
        max_x = float(math.ceil(top * 1.05 / 8) * 8)
    group = max(1, round(max_x / 100 / BIN_WIDTH))  # about 100 bars across the range
    width = group * BIN_WIDTH
    n = len(results)
    fig, axes = plt.subplots(n, 1, figsize=(7, 1.7 * n + 0.8), sharex=True, sharey=True, squeeze=False)
    for ax, (name, stats) in zip(axes[:, 0], results.items()):
        if stats.valid_pixels:
            bins = math.ceil(max_x / width)
            counts = stats.counts[: bins * group].reshape(bins, group).sum(1).double()
            density = counts / stats.valid_pixels / width
            ax.bar((torch.arange(bins) * width).numpy(), density.numpy(), width=width, align="edge",
                   color="tab:orange" if name == MIXTURE else "tab:blue", linewidth=0)
            for q, style in ((5, ":"), (50, "--"), (95, ":")):
                ax.axvline(stats.percentile(q), color="black", linestyle=style, linewidth=0.8)
        if threshold < max_x:
            ax.axvline(threshold, color="tab:red", linewidth=0.8)
        valid = stats.valid_pixels / stats.total_pixels if stats.total_pixels else 0.0
        ax.set_title(
            f"{name}: {stats.samples} crops, {valid:.0%} valid, p50 {stats.percentile(50):.1f} px, "
            f"{stats.share_beyond(threshold):.1%} >= {threshold:g} px, "
            f"scale {torch.tensor(stats.scales).median():.2f}" if stats.samples else name,
            fontsize=8, loc="left",
        )
        ax.set_ylabel("share / px", fontsize=8)
        ax.tick_params(labelsize=7)
    axes[-1, 0].set_xlim(0, max_x)
    axes[-1, 0].set_xlabel(
        "disparity of valid pixels [px] (dotted: p5, p95; dashed: median; red: threshold)", fontsize=8
    )
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def format_table(results: dict[str, CropStatistics], threshold: float) -> str:
    """A short fixed-width table: one row per dataset and the mixture."""
    rows = [("dataset", "crops", "valid", "p5", "p50", "p95", "p99", f">={threshold:g}", "aspect W/H",
             "scale", "sizes before crop")]
    for name, s in results.items():
        if not s.samples:
            continue
        summary = s.summary(threshold)
        aspect, scale, sizes = summary["aspect_ratio"], summary["scale"], list(summary["image_sizes"])
        rows.append((
            name, str(s.samples), f"{summary['valid_share']:.1%}",
            *(f"{s.percentile(q):.1f}" for q in (5, 50, 95, 99)),
            f"{summary['share_beyond_threshold']:.2%}",
            f"{aspect['min']:.2f}-{aspect['max']:.2f}" if aspect["min"] != aspect["max"] else f"{aspect['min']:.2f}",
            f"{scale['median']:.2f} ({scale['min']:.2f}-{scale['max']:.2f})",
            ", ".join(sizes[:3]) + (f" +{len(sizes) - 3}" if len(sizes) > 3 else ""),
        ))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(c.ljust(w) if i in (0, len(r) - 1) else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
        for r in rows
    )


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    """train.py's dataset and augmentation flags (paste the training command's), plus the analysis options."""
    parser = argparse.ArgumentParser(description="Disparity distribution of training crops", add_help=add_help)
    cli.add_training_data_arguments(parser)
    parser.add_argument("--world-size", type=int, default=1, help="number of GPUs of the run (mixture order only)")
    parser.add_argument("--num-samples", type=int, default=200, help="crops per dataset and for the mixture")
    parser.add_argument("--threshold", type=float, default=192.0, help="report the share of disparities >= this")
    parser.add_argument("--workers", type=int, default=4, help="DataLoader workers reading and cropping samples")
    parser.add_argument("--output-dir", default="eda", help="where the PNG and JSON go")
    parser.add_argument("--name", default="disparity_eda", help="file name stem of the outputs")
    return parser


def check_args(args: argparse.Namespace) -> None:
    """Flag checks that need no file (ValueError naming the fix)."""
    names = args.train_datasets
    if len(set(names)) != len(names):
        raise ValueError("give each --train-datasets name once; weight datasets with --dataset-steps")
    if len(names) > 1:
        check_dataset_steps(names, args.dataset_steps)
    if args.num_samples < 1 or args.world_size < 1:
        raise ValueError("--num-samples and --world-size must be at least 1")


def main(args: argparse.Namespace) -> dict:
    """Run the analysis, write ``<output-dir>/<name>.png`` and ``.json``, print the table; returns the report.
    Bad input raises ValueError (`cli.run` reports it)."""
    check_args(args)
    names = args.train_datasets
    mixture = len(names) > 1
    try:
        presets = {name: train_preset_from_args(args, name) for name in names}
        datasets = {name: make_dataset(name, args.dataset_root) for name in names}
    except FileNotFoundError as e:
        raise ValueError(str(e)) from None
    output = Path(args.output_dir)
    try:
        output.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ValueError(f"cannot create --output-dir {output} ({e.strerror})") from None
    results = analyse(
        datasets, presets, num_samples=args.num_samples, seed=args.seed,
        dataset_steps=args.dataset_steps if mixture else None, steps_is_epochs=args.steps_is_epochs,
        batch_size=args.batch_size, world_size=args.world_size, workers=args.workers, progress=True,
    )
    title = (f"crop {args.crop_size[0]}x{args.crop_size[1]}, {args.scaling_type} scale "
             f"{args.scale_range[0]:g}-{args.scale_range[1]:g}")
    plot(results, output / f"{args.name}.png", args.threshold, title)
    report = {"args": vars(args), "results": {name: s.summary(args.threshold) for name, s in results.items()}}
    with open(output / f"{args.name}.json", "w") as f:
        json.dump(report, f, indent=1)
    print(format_table(results, args.threshold))
    print(f"Wrote {output / (args.name + '.png')} and {output / (args.name + '.json')}")
    return report


if __name__ == "__main__":
    cli.run(main, get_args_parser())
