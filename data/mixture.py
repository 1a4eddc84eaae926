"""The training mixture of train.py: which sample every rank sees at every step, reproducibly.

Dataset i contributes `dataset_steps[i] * samples_per_step` samples (`samples_per_step = world_size *
batch_size`), or `dataset_steps[i]` epochs of itself with `steps_is_epochs`. Each dataset is repeated as
whole shuffled copies (the last one cut short), and the concatenation is shuffled once more; every
permutation is drawn from `seed`. Position p of the mixture is used by exactly one rank at one step:
global step s (0-based) covers positions `[s * samples_per_step, (s + 1) * samples_per_step)`, and rank r
takes the `batch_size` positions starting at `s * samples_per_step + r * batch_size`.

Augmentation is seeded per position (`torch.random.fork_rng()` + `manual_seed(sample_seed(seed, p))`), so a
sample is the same whatever the number of workers or ranks, and resuming at a step replays exactly.
"""

import bisect
from collections.abc import Iterator, Sequence

import torch
from torch.utils.data import Dataset, Sampler


def check_dataset_steps(names: Sequence[str], dataset_steps: Sequence[int]) -> None:
    """One ``--dataset-steps`` value per ``--train-datasets`` name (ValueError naming the fix otherwise)."""
    if len(dataset_steps) != len(names):
        raise ValueError(
            f"--dataset-steps has {len(dataset_steps)} values for {len(names)} --train-datasets "
            f"({' '.join(names)}); give one value per dataset."
        )


def sample_seed(seed: int, position: int) -> int:
    """The augmentation seed of mixture position `position`."""
    return (seed * 0x9E3779B97F4A7C15 + position) % (2**63)


class TrainingMixture(Dataset):
    """Map-style dataset over mixture positions; `mixture[p]` is the (augmented) sample at position p."""

    def __init__(
        self,
        datasets: Sequence[Dataset],
        dataset_steps: Sequence[int],
        batch_size: int,
        world_size: int = 1,
        *,
        steps_is_epochs: bool = False,
        seed: int = 0,
        names: Sequence[str] | None = None,
    ):
        self.names = list(names) if names is not None else [f"dataset{i}" for i in range(len(datasets))]
        check_dataset_steps(self.names, dataset_steps)
        if any(s < 0 for s in dataset_steps) or sum(dataset_steps) <= 0:
            raise ValueError(f"--dataset-steps must be >= 0 and sum to at least 1, got {list(dataset_steps)}.")
        if batch_size < 1 or world_size < 1:
            raise ValueError(f"batch size and world size must be >= 1, got {batch_size} and {world_size}.")
        lengths = [len(d) for d in datasets]
        for name, n in zip(self.names, lengths):
            if n == 0:
                raise ValueError(f"Training dataset {name} is empty; check --dataset-root and its layout.")
        self.datasets = list(datasets)
        self.batch_size = batch_size
        self.world_size = world_size
        self.samples_per_step = batch_size * world_size
        self.seed = seed
        if steps_is_epochs:
            self.counts = [s * n for s, n in zip(dataset_steps, lengths)]
            self.total_steps = sum(self.counts) // self.samples_per_step
            if self.total_steps == 0:
                raise ValueError(
                    f"{sum(self.counts)} samples make no full step of {self.samples_per_step} samples; "
                    "train for more epochs."
                )
        else:
            self.counts = [s * self.samples_per_step for s in dataset_steps]
            self.total_steps = sum(dataset_steps)

        generator = torch.Generator().manual_seed(seed)
        self.offsets = [0]
        for n in lengths:
            self.offsets.append(self.offsets[-1] + n)
        parts = []
        for offset, n, count in zip(self.offsets, lengths, self.counts):
            copies = -(-count // n)
            indices = torch.cat([torch.randperm(n, generator=generator) for _ in range(copies)]) if copies else None
            if indices is not None:
                parts.append(indices[:count] + offset)
        order = torch.cat(parts)
        order = order[torch.randperm(len(order), generator=generator)]
        self.order = order[: self.total_steps * self.samples_per_step]

    def __len__(self) -> int:
        return len(self.order)

    def source(self, position: int) -> tuple[int, int]:
        """`(dataset index, sample index)` drawn at `position`."""
        flat = int(self.order[position])
        d = bisect.bisect_right(self.offsets, flat) - 1
        return d, flat - self.offsets[d]

    def __getitem__(self, position: int):
        d, i = self.source(position)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(sample_seed(self.seed, position))
            return self.datasets[d][i]

    def per_dataset_counts(self) -> dict[str, int]:
        """How many samples of each dataset the run draws (after cutting the last incomplete step)."""
        d = torch.bucketize(self.order, torch.tensor(self.offsets[1:]), right=True)
        counts = torch.bincount(d, minlength=len(self.datasets))
        return {name: int(c) for name, c in zip(self.names, counts)}


class MixtureSampler(Sampler[int]):
    """The positions rank `rank` reads, step by step, from step `start_step` (0-based) to the end."""

    def __init__(self, mixture: TrainingMixture, rank: int = 0, start_step: int = 0):
        if not 0 <= rank < mixture.world_size:
            raise ValueError(f"rank {rank} outside world size {mixture.world_size}")
        self.mixture = mixture
        self.rank = rank
        self.start_step = start_step

    def __iter__(self) -> Iterator[int]:
        m = self.mixture
        for step in range(self.start_step, m.total_steps):
            first = step * m.samples_per_step + self.rank * m.batch_size
            yield from range(first, first + m.batch_size)

    def __len__(self) -> int:
        return max(0, self.mixture.total_steps - self.start_step) * self.mixture.batch_size


def add_mixture_arguments(parser) -> None:
    """The dataset and augmentation flags of train.py (also used by scripts that must draw as it does)."""
    parser.add_argument("--dataset-root", default="", help="folder holding every dataset's directory")
    parser.add_argument("--train-datasets", default=["crestereo"], nargs="+", help="registry names of the mixture")
    parser.add_argument("--dataset-steps", default=[300000], type=int, nargs="+",
                        help="steps (or epochs with --steps-is-epochs) per training dataset, one per name")
    parser.add_argument("--steps-is-epochs", action="store_true", help="read --dataset-steps as epochs per dataset")
    parser.add_argument("--batch-size", default=2, type=int, help="samples per process and step")
    parser.add_argument("--seed", default=42, type=int, help="seeds the mixture order, augmentation and model init")
    parser.add_argument("--crop-size", default=[384, 512], type=int, nargs=2, help="training crop H W")
    parser.add_argument("--resize-size", default=None, type=int, nargs=2,
                        help="optional fixed resize H W before cropping")
    parser.add_argument("--scale-range", default=[0.6, 1.0], type=float, nargs=2, help="random rescale range")
    parser.add_argument("--rescale-prob", default=1.0, type=float)
    parser.add_argument("--scaling-type", default="linear", choices=["linear", "exponential"])
    parser.add_argument("--flip-prob", default=0.5, type=float, help="horizontal flip (with view swap) probability")
    parser.add_argument("--vertical-flip-prob", default=0.0, type=float)
    parser.add_argument("--norm-mean", default=[0.5, 0.5, 0.5], type=float, nargs="+")
    parser.add_argument("--norm-std", default=[0.5, 0.5, 0.5], type=float, nargs="+")
    parser.add_argument("--use-grayscale", action="store_true")
    parser.add_argument("--max-disparity", default=None, type=float, help="ground truth at or above it is invalid")
    parser.add_argument("--interpolation-strategy", default="bilinear", choices=["bilinear", "bicubic", "mixed"])
    parser.add_argument("--spatial-shift-prob", default=1.0, type=float)
    parser.add_argument("--spatial-shift-max-angle", default=0.1, type=float, help="degrees")
    parser.add_argument("--spatial-shift-max-displacement", default=2.0, type=float, help="pixels")
    parser.add_argument("--gamma-range", default=[0.8, 1.2], type=float, nargs=2)
    parser.add_argument("--brightness-range", default=[0.8, 1.2], type=float, nargs="+")
    parser.add_argument("--contrast-range", default=[0.8, 1.2], type=float, nargs="+")
    parser.add_argument("--saturation-range", default=[0.0], type=float, nargs="+")
    parser.add_argument("--hue-range", default=[0.0], type=float, nargs="+")
    parser.add_argument("--asymmetric-jitter-prob", default=1.0, type=float)
    parser.add_argument("--occlusion-prob", default=0.5, type=float, help="right-image occlusion probability")
    parser.add_argument("--occlusion-px-range", default=[50, 100], type=int, nargs=2)
    parser.add_argument("--erase-prob", default=0.0, type=float)
    parser.add_argument("--erase-px-range", default=[50, 100], type=int, nargs=2)
    parser.add_argument("--erase-num-repeats", default=1, type=int)


def _range(values: Sequence[float]) -> float | tuple[float, ...]:
    return values[0] if len(values) == 1 else tuple(values)


def make_train_transform(args, dataset_name: str):
    """The training preset of `dataset_name` from the flags of `add_mixture_arguments`."""
    from data.registry import dataset_spec
    from presets import StereoMatchingTrainPreset

    return StereoMatchingTrainPreset(
        crop_size=args.crop_size,
        resize_size=args.resize_size,
        rescale_prob=args.rescale_prob,
        scaling_type=args.scaling_type,
        scale_range=args.scale_range,
        scale_interpolation_type=args.interpolation_strategy,
        use_grayscale=args.use_grayscale,
        mean=args.norm_mean,
        std=args.norm_std,
        max_disparity=args.max_disparity,
        spatial_shift_prob=args.spatial_shift_prob,
        spatial_shift_max_angle=args.spatial_shift_max_angle,
        spatial_shift_max_displacement=args.spatial_shift_max_displacement,
        spatial_shift_interpolation_type=args.interpolation_strategy,
        gamma_range=args.gamma_range,
        brightness=_range(args.brightness_range),
        contrast=_range(args.contrast_range),
        saturation=_range(args.saturation_range),
        hue=_range(args.hue_range),
        asymmetric_jitter_prob=args.asymmetric_jitter_prob,
        horizontal_flip_prob=args.flip_prob,
        vertical_flip_prob=args.vertical_flip_prob,
        occlusion_prob=args.occlusion_prob,
        occlusion_px_range=args.occlusion_px_range,
        erase_prob=args.erase_prob,
        erase_px_range=args.erase_px_range,
        erase_num_repeats=args.erase_num_repeats,
        sparse_gt=dataset_spec(dataset_name).sparse_gt,
    )


def make_training_mixture(args, world_size: int) -> TrainingMixture:
    """Build every training dataset with its preset and the mixture train.py reads, checking the inputs."""
    from data.registry import make_dataset, require_ground_truth

    for name in args.train_datasets:
        require_ground_truth(name, f"training dataset {name}")
    check_dataset_steps(args.train_datasets, args.dataset_steps)
    datasets = []
    for name in args.train_datasets:
        datasets.append(make_dataset(name, args.dataset_root, transforms=make_train_transform(args, name)))
    return TrainingMixture(
        datasets, args.dataset_steps, args.batch_size, world_size,
        steps_is_epochs=args.steps_is_epochs, seed=args.seed, names=args.train_datasets,
    )
