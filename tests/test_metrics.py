import math

import pytest
import torch

from utils.metrics import AVAILABLE_METRICS, MetricAccumulator, compute_metrics
from utils.padder import InputPadder


def _t(values):
    return torch.tensor(values, dtype=torch.float32).view(1, 1, 1, -1)


PRED = _t([1.0, 2.0, 5.0, 10.0])
GT = _t([1.5, 2.0, 1.0, 0.0])  # the last pixel has zero ground truth: dropped for every metric


def test_values_against_hand_computation():
    # valid errors e = [0.5, 0, 4], |gt| = [1.5, 2, 1]
    m = compute_metrics(PRED, GT, None, AVAILABLE_METRICS)
    assert m["mae"] == pytest.approx(1.5)
    assert m["epe"] == pytest.approx(1.5)
    assert m["rmse"] == pytest.approx(math.sqrt((0.25 + 16) / 3))
    assert m["1px"] == pytest.approx(2 / 3)
    assert m["3px"] == pytest.approx(2 / 3)
    assert m["5px"] == pytest.approx(1.0)
    assert m["bad1"] == pytest.approx(1 / 3)
    assert m["bad2"] == pytest.approx(1 / 3)
    assert m["relepe"] == pytest.approx((0.5 / 1.5 + 0 + 4) / 3)
    assert m["fl-all"] == pytest.approx(100 / 3)  # only the exact pixel is < 3 px and < 5 %
    assert m["d1-all"] == pytest.approx(100 / 3)  # only the 4 px / 400 % pixel is an outlier
    assert m["bad2.0"] == pytest.approx(100 / 3)  # Middlebury's names: percent above 2 px, mean error
    assert m["avgerr"] == pytest.approx(1.5)


def test_middlebury_bad2_uses_strictly_greater_than_two_pixels_on_the_mask():
    pred, gt = _t([3.0, 4.5, 1.0, 9.0]), _t([1.0, 2.0, 1.0, 1.0])  # errors 2.0, 2.5, 0, 8
    nocc = torch.tensor([True, True, True, False]).view(1, 1, -1)
    m = compute_metrics(pred, gt, nocc, ["bad2.0", "avgerr"])
    assert m == {"bad2.0": pytest.approx(100 / 3), "avgerr": pytest.approx(4.5 / 3)}


def test_mask_selects_pixels():
    valid = torch.tensor([[[True, True, False, True]]])
    m = compute_metrics(PRED, GT, valid, ["mae", "rmse", "1px", "relepe", "fl-all", "d1-all"])
    expected = {"mae": 0.25, "rmse": math.sqrt(0.125), "1px": 1.0, "relepe": 1 / 6, "fl-all": 50.0, "d1-all": 0.0}
    assert m == pytest.approx(expected)


def test_thresholds_are_strict():
    m = compute_metrics(_t([2.0, 4.0]), _t([1.0, 1.0]), None, ["1px", "3px", "bad1", "bad2"])
    assert m == {"1px": 0.0, "3px": 0.5, "bad1": 0.5, "bad2": 0.5}


def test_empty_mask_gives_nan_for_the_batch_but_not_the_aggregate():
    empty = torch.zeros(1, 1, 4, dtype=torch.bool)
    assert all(math.isnan(v) for v in compute_metrics(PRED, GT, empty, ["mae", "fl-all"]).values())
    acc = MetricAccumulator(["mae", "fl-all"])
    acc.update(PRED, GT, None)
    acc.update(PRED, GT, empty)
    acc.update(_t([3.0]), _t([0.0]), None)  # only zero ground truth: empty as well
    assert acc.reference() == pytest.approx({"mae": 1.5, "fl-all": 100 / 3})
    assert acc.pooled() == pytest.approx({"mae": 1.5, "fl-all": 100 / 3})
    assert acc.num_samples == 3 and acc.num_pixels == 3


def test_reference_and_pooled_aggregations_differ_as_defined():
    acc = MetricAccumulator(["mae", "rmse"])
    acc.update(_t([11.0]), _t([10.0]), None)  # one pixel, error 1
    acc.update(_t([1.0, 2.0, 3.0]), _t([1.0, 2.0, 3.0]), None)  # three exact pixels
    assert acc.reference() == pytest.approx({"mae": 0.5, "rmse": 0.5})
    assert acc.pooled() == pytest.approx({"mae": 0.25, "rmse": 0.5})


def test_batch_value_is_a_pixel_mean_over_the_batch():
    pred = torch.tensor([[[[1.0, 1.0]]], [[[4.0, 1.0]]]])
    gt = torch.ones(2, 1, 1, 2)
    valid = torch.tensor([[[True, False]], [[True, True]]])
    assert compute_metrics(pred, gt, valid, ["mae"])["mae"] == pytest.approx(1.0)  # errors 0, 3, 0


def test_non_finite_ground_truth_is_ignored():
    m = compute_metrics(_t([1.0, 1.0]), _t([2.0, float("inf")]), None, ["mae", "relepe"])
    assert m == pytest.approx({"mae": 1.0, "relepe": 0.5})


def test_unknown_metric_is_rejected():
    with pytest.raises(ValueError, match="unknown metric"):
        compute_metrics(PRED, GT, None, ["f1"])


@pytest.mark.parametrize("mode, expected", [("kitti", [3, 4, 0, 11]), ("sintel", [3, 4, 5, 6])])
def test_padder_pads_to_divisor_and_crops_back(mode, expected):
    x = torch.arange(2 * 3 * 21 * 25, dtype=torch.float32).view(2, 3, 21, 25)
    padder = InputPadder(x.shape, mode=mode, divisor=32)
    (y,) = padder.pad(x)
    assert y.shape == (2, 3, 32, 32)
    left, right, top, bottom = expected
    assert torch.equal(y[..., top : 32 - bottom, left : 32 - right], x)
    assert torch.equal(y[..., 0, 0], x[..., 0, 0])  # replicate: the corner repeats
    assert torch.equal(y[..., -1, -1], x[..., -1, -1])
    assert torch.equal(padder.unpad(y), x)


def test_padder_is_a_no_op_on_multiples_and_rejects_unknown_modes():
    x = torch.rand(1, 3, 64, 96)
    padder = InputPadder(x.shape, mode="kitti", divisor=32)
    assert padder.pad(x)[0] is x and padder.unpad(x) is not None and padder.unpad(x).shape == x.shape
    with pytest.raises(ValueError, match="kitti"):
        InputPadder(x.shape, mode="middlebury")
