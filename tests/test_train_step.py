"""train.train_step on a tiny model and a synthetic batch: what it reports, and that a non-finite step changes no
weight."""

from types import SimpleNamespace

import pytest
import torch
from torch import nn

import train
from utils.distributed import DistState
from utils.losses import LossConfig
from utils.lr_schedule import LRSchedule, make_lr_schedule


class TinyStereo(nn.Module):
    """The model interface of train.py (a list of (B, 2, H, W) predictions) in one convolution."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(6, 2, 3, padding=1)

    def forward(self, left, right, flow_init=None, num_iters=1):
        out = self.conv(torch.cat([left, right], dim=1))
        return [out * (i + 1) / num_iters for i in range(num_iters)]


def tiny_run(*flags: str) -> train.Run:
    torch.manual_seed(0)
    args = train.get_args_parser().parse_args(["--n-iterations", "2", *flags])
    model = TinyStereo()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    schedule = LRSchedule(total_steps=4, lr=0.1, min_lr=0.01, warmup_steps=0, decay_after_steps=0)
    return train.Run(
        args=args, dist=DistState(False, 0, 1, 0, torch.device("cpu")), mixture=None, model=model, core=model,
        optimizer=optimizer, scheduler=make_lr_schedule(optimizer, schedule),
        scaler=torch.amp.GradScaler("cpu", enabled=False), autocast_dtype=None, val_loaders={}, start_step=0,
        loss=LossConfig(),
    )


def batch(disparity_value: float = 3.0) -> train.Batch:
    generator = torch.Generator().manual_seed(1)
    left, right = (torch.rand(2, 3, 8, 12, generator=generator) * 2 - 1 for _ in range(2))
    disparity = torch.full((2, 1, 8, 12), disparity_value)
    return left, right, disparity, torch.ones(2, 8, 12, dtype=torch.bool)


def weights(run: train.Run) -> list[torch.Tensor]:
    return [p.detach().clone() for p in run.core.parameters()]


def test_a_finite_step_updates_the_weights_and_reports_it():
    run = tiny_run()
    before = weights(run)
    result = train.train_step(run, batch())
    assert torch.isfinite(result.loss) and result.loss.item() > 0
    assert set(result.terms) == {"sequence"} and torch.equal(result.terms["sequence"], result.loss)
    assert result.grad_norm.item() > 0
    assert len(result.predictions) == 2 and result.predictions[-1].shape == (2, 2, 8, 12)
    assert result.lr == pytest.approx(0.1)
    assert not result.skipped and not result.stop_requested
    assert any(not torch.equal(a, b) for a, b in zip(before, weights(run)))
    assert run.scheduler.last_epoch == 1


@pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step\\(\\)` before `optimizer.step\\(\\)`")
def test_a_non_finite_loss_is_skipped_without_touching_the_weights():
    run = tiny_run()
    before = weights(run)
    result = train.train_step(run, batch(float("nan")))
    assert result.skipped and not torch.isfinite(result.loss)
    assert all(torch.equal(a, b) for a, b in zip(before, weights(run)))
    assert all(p.grad is None for p in run.core.parameters())
    assert run.scheduler.last_epoch == 1  # the schedule advances either way


def test_clipping_and_a_requested_stop():
    run = tiny_run("--clip-grad-norm", "1e-3")
    before = weights(run)
    result = train.train_step(run, batch(), stop=SimpleNamespace(requested=True))
    assert result.stop_requested and not result.skipped
    assert result.grad_norm.item() > 1e-3  # reported before clipping
    clipped = torch.cat([(a - b).flatten() for a, b in zip(before, weights(run))]).norm()
    assert clipped.item() == pytest.approx(0.1 * 1e-3, rel=1e-3)  # SGD step of lr times the clipped norm
