import io
import math
from dataclasses import replace
from pathlib import Path

import pytest
import torch

import train
from utils.lr_schedule import LRSchedule, make_lr_schedule

ROOT = Path(__file__).resolve().parents[1]


def recipe_schedule(name: str) -> LRSchedule:
    """The schedule of recipes/{name}.txt, read by train.py's parser."""
    args = train.get_args_parser().parse_args([f"@{ROOT / 'recipes' / f'{name}.txt'}"])
    return LRSchedule.from_args(args, total_steps=sum(args.dataset_steps))


RECIPE_1 = recipe_schedule("crestereo_stage1")
RECIPE_2 = recipe_schedule("crestereo_stage2")


def test_recipe_lengths():
    assert RECIPE_1.total_steps == 300_000 and RECIPE_2.total_steps == 9 * 12_000


@pytest.mark.parametrize("method", ["cosine", "linear", "exponential"])
def test_recipe_1_milestones(method):
    at = replace(RECIPE_1, decay_method=method).lr_at
    assert at(0) == pytest.approx(4e-4 * 0.02)  # warmup start
    assert at(3000) == pytest.approx(4e-4 * (0.02 + 0.98 * 0.5))  # linear warmup midpoint
    assert at(5999) < 4e-4
    assert at(6000) == pytest.approx(4e-4)  # warmup end: flat phase at lr, not lr**2
    assert at(29999) == pytest.approx(4e-4)
    assert at(30000) == pytest.approx(4e-4)  # decay start
    assert at(30001) < 4e-4
    assert at(299999) == pytest.approx(2e-5, rel=1e-9)  # last step = min-lr exactly
    mid = at(30000 + 269999 // 2)
    expected_mid = {"cosine": (4e-4 + 2e-5) / 2, "linear": (4e-4 + 2e-5) / 2, "exponential": math.sqrt(4e-4 * 2e-5)}
    assert mid == pytest.approx(expected_mid[method], rel=1e-4)


@pytest.mark.parametrize("method", ["cosine", "linear", "exponential"])
def test_recipe_2_milestones(method):
    at = replace(RECIPE_2, decay_method=method).lr_at
    assert at(0) == pytest.approx(4e-4)
    assert at(1) < 4e-4
    assert at(107999) == pytest.approx(2e-5, rel=1e-9)


def test_constant_warmup():
    constant = replace(RECIPE_1, warmup_method="constant", warmup_factor=0.1)
    assert constant.lr_at(10) == pytest.approx(4e-5)
    assert constant.lr_at(6000) == pytest.approx(4e-4)


def test_scheduler_follows_lr_at_and_saves_plain_data():
    schedule = LRSchedule(total_steps=10, lr=1e-3, min_lr=1e-4, warmup_steps=3, decay_after_steps=5,
                          decay_method="cosine")
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=123.0)
    sched = make_lr_schedule(opt, schedule)
    seen = []
    for _ in range(10):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert seen == pytest.approx([schedule.lr_at(t) for t in range(10)])
    assert seen[-1] == pytest.approx(1e-4)
    buf = io.BytesIO()
    torch.save(sched.state_dict(), buf)
    buf.seek(0)
    assert torch.load(buf, weights_only=True)["last_epoch"] == 10


@pytest.mark.parametrize(
    "changes, message",
    [
        (dict(warmup_steps=40000), "longer than --decay-after-steps"),
        (dict(decay_after_steps=300000), "must be smaller than"),
        (dict(min_lr=1e-3), "min-lr"),
        (dict(min_lr=0.0, decay_method="exponential"), "exponential needs"),
        (dict(decay_method="step"), "--lr-decay-method must be one of"),
        (dict(warmup_method="cosine"), "--lr-warmup-method must be one of"),
        (dict(total_steps=0), "give --dataset-steps that sum to at least 1"),
        (dict(warmup_steps=-1), "must be >= 0"),
        (dict(lr=0.0), "--lr > 0"),
    ],
)
def test_bad_schedules(changes, message):
    with pytest.raises(ValueError, match=message):
        replace(RECIPE_1, **changes)


def test_flag_defaults_are_the_schedule_defaults():
    args = train.get_args_parser().parse_args([])
    assert LRSchedule.from_args(args, total_steps=300_000) == LRSchedule(total_steps=300_000)
