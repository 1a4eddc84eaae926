from collections import Counter

import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from data.mixture import MixtureSampler, TrainingMixture


class Toy(Dataset):
    """Sample i of dataset `tag` returns (tag, i, a random draw) so augmentation seeding is visible."""

    def __init__(self, tag: int, n: int):
        self.tag, self.n = tag, n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return torch.tensor([self.tag, i]), torch.rand(1)


def test_recipe_1_counts_scaled_down():
    # recipe 1 (88-6-6) divided by 1000: 264 18 18 steps, 8 GPUs x batch 2
    sizes = [200, 7, 13]
    mix = TrainingMixture([Toy(i, n) for i, n in enumerate(sizes)], [264, 18, 18], 2, 8, seed=42,
                          names=["crestereo", "eth3d-train", "middlebury2014-other"])
    assert mix.total_steps == 300 and len(mix) == 300 * 16
    assert mix.per_dataset_counts() == {"crestereo": 264 * 16, "eth3d-train": 18 * 16, "middlebury2014-other": 18 * 16}
    # each dataset is repeated evenly: every sample drawn floor or ceil of count / len times
    for d, (n, count) in enumerate(zip(sizes, mix.counts)):
        drawn = Counter(i for dd, i in map(mix.source, range(len(mix))) if dd == d)
        assert set(drawn) == set(range(n))
        assert set(drawn.values()) <= {count // n, -(-count // n)}
    # the whole is shuffled: the first 160 positions hold all three datasets
    assert len({mix.source(p)[0] for p in range(160)}) == 3


def test_steps_is_epochs_run_length():
    mix = TrainingMixture([Toy(0, 10), Toy(1, 7)], [3, 2], batch_size=4, world_size=1, steps_is_epochs=True)
    assert mix.counts == [30, 14] and mix.total_steps == 44 // 4 == 11 and len(mix) == 44


def test_seed_and_mismatch():
    a = TrainingMixture([Toy(0, 10), Toy(1, 7)], [3, 2], 2, seed=1)
    b = TrainingMixture([Toy(0, 10), Toy(1, 7)], [3, 2], 2, seed=1)
    c = TrainingMixture([Toy(0, 10), Toy(1, 7)], [3, 2], 2, seed=2)
    assert torch.equal(a.order, b.order) and not torch.equal(a.order, c.order)
    with pytest.raises(ValueError, match="--dataset-steps has 1 values for 2 --train-datasets"):
        TrainingMixture([Toy(0, 10), Toy(1, 7)], [3], 2)
    with pytest.raises(ValueError, match="is empty"):
        TrainingMixture([Toy(0, 0)], [3], 2)


def test_ranks_disjoint_resume_and_workers():
    mix = TrainingMixture([Toy(0, 5), Toy(1, 3)], [4, 2], batch_size=2, world_size=3, seed=7)
    per_rank = [list(MixtureSampler(mix, r)) for r in range(3)]
    flat = sum(per_rank, [])
    assert sorted(flat) == list(range(len(mix)))  # disjoint and complete
    assert list(MixtureSampler(mix, 1, start_step=4)) == per_rank[1][4 * 2:]

    def draws(workers):
        loader = DataLoader(mix, batch_size=2, sampler=MixtureSampler(mix, 1), num_workers=workers)
        return torch.cat([x for _, x in loader])

    assert torch.equal(draws(0), draws(2))  # augmentation randomness does not depend on workers
    assert len(set(draws(0).flatten().tolist())) == len(per_rank[1])


def test_every_sample_fits_a_crop_larger_than_the_images():
    # No sample may stop a run: images smaller than the crop are upscaled to fit (the minimum scale), on
    # every sample, instead of a check on the first sample only.
    import argparse

    from presets import make_training_mixture
    from utils.cli import add_training_data_arguments

    parser = argparse.ArgumentParser()
    add_training_data_arguments(parser)
    args = parser.parse_args(["--train-datasets", "synthetic-val", "--dataset-steps", "2", "--crop-size", "400", "96"])
    mixture = make_training_mixture(args, world_size=1)
    for position in range(len(mixture)):
        (left, right), (disp, _), (mask, _) = mixture[position]
        assert left.shape == right.shape == (3, 400, 96) and disp.shape == (1, 400, 96) and mask.any()
