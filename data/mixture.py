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
