
import pytest
import torch
import torch.nn.functional as F

import train
from utils.losses import (
    LossConfig,
    consistency_loss,
    photometric_loss,
    psnr_loss,
    sequence_loss,
    smoothness_loss,
    training_loss,
    two_channel_target,
    warp_right_to_left,
)

def test_sequence_loss_matches_reference_case_c(reference_file):
    ref = torch.load(reference_file("crestereo/ref_c_train.pt"), weights_only=True)
    preds = [p.detach() for p in ref["predictions"]]
    assert torch.equal(two_channel_target(ref["target_disparity"], 2), ref["target_flow"])
    no_mask = sequence_loss(preds, ref["target_disparity"], None, gamma=ref["gamma"], average="all")
    assert no_mask.item() == pytest.approx(ref["loss"], rel=1e-5)
    masked_all = sequence_loss(preds, ref["target_disparity"], ref["valid_mask"], ref["gamma"], average="all")
    assert masked_all.item() == pytest.approx(ref["loss_with_valid_mask_no_backward"], rel=1e-5)
    # averaging over valid pixels only rescales by all / valid pixels
    masked_valid = sequence_loss(preds, ref["target_disparity"], ref["valid_mask"], ref["gamma"], average="valid")
    ratio = ref["valid_mask"].numel() / ref["valid_mask"].sum().item()
    assert masked_valid.item() == pytest.approx(ref["loss_with_valid_mask_no_backward"] * ratio, rel=1e-5)


def test_sequence_loss_values():
    gt = torch.full((1, 1, 2, 2), 2.0)
    valid = torch.tensor([[[True, False], [False, False]]])
    p0 = torch.zeros(1, 2, 2, 2)  # error 2 in x, 0 in y
    p1 = torch.zeros(1, 2, 2, 2)
    p1[:, 0] = 1.0  # error 1 in x
    # valid: per prediction sum |e| over the 1 valid pixel / (1 pixel * 2 channels)
    assert sequence_loss([p0, p1], gt, valid, gamma=0.5).item() == pytest.approx(0.5 * 1.0 + 1.0 * 0.5)
    assert sequence_loss([p0, p1], gt, valid, gamma=0.5, average="all").item() == pytest.approx(
        0.5 * 2 / 8 + 1 / 8
    )
    assert sequence_loss([p1], gt, valid, max_disparity=2.0).item() == 0.0  # gt 2 excluded
    assert sequence_loss([p1], gt, torch.zeros(1, 2, 2, dtype=torch.bool)).item() == 0.0  # no NaN


def test_consistency_loss():
    a = torch.zeros(1, 2, 8, 8)
    b = torch.ones(1, 2, 8, 8)
    assert consistency_loss([a], 0.8).item() == 0.0
    # downsampled by 0.5, values scaled by 0.5: diff 0.5, squared 0.25; weights 0.8^1, 0.8^0
    assert consistency_loss([a, b, b], 0.8, 0.5).item() == pytest.approx(0.8 * 0.25)


def test_warp_and_photometric():
    torch.manual_seed(0)
    right = torch.rand(1, 3, 16, 32)
    left = torch.zeros_like(right)
    left[..., 3:] = right[..., :-3]  # left pixel x matches right pixel x - 3
    disp = torch.full((1, 1, 16, 32), 3.0)
    warped, inside = warp_right_to_left(right, disp)
    assert torch.allclose(warped[..., 3:], left[..., 3:], atol=1e-6)
    assert not inside[..., :3].any() and inside[..., 3:].all()
    good = photometric_loss(left, right, disp, max_displacement_ratio=0.5)
    bad = photometric_loss(left, right, disp + 1.5, max_displacement_ratio=0.5)
    assert good.item() < 0.02 and bad.item() > 5 * good.item()
    # negative disparities are not masked by a signed comparison
    assert photometric_loss(left, right, -disp * 10, max_displacement_ratio=0.15).item() == 0.0
    assert psnr_loss(left, right, disp, max_displacement_ratio=0.5).item() == pytest.approx(-60.0, abs=0.5)
    assert psnr_loss(left, right, disp + 1.5, max_displacement_ratio=0.5).item() > -20


def test_smoothness_rewards_disparity_edges_at_image_edges():
    image = torch.zeros(1, 3, 8, 8)
    image[..., 4:] = 1.0  # an image edge between columns 3 and 4
    on_edge = torch.ones(1, 1, 8, 8)
    on_edge[..., 4:] = 2.0
    off_edge = torch.ones(1, 1, 8, 8)
    off_edge[..., 2:] = 2.0
    assert smoothness_loss(image, on_edge) < smoothness_loss(image, off_edge)
    assert smoothness_loss(image, torch.full((1, 1, 8, 8), 5.0)).item() == 0.0
    assert smoothness_loss(image, 3 * on_edge).item() == pytest.approx(smoothness_loss(image, on_edge).item())


def test_training_loss_terms_and_gradients():
    torch.manual_seed(0)
    left, right = torch.rand(2, 3, 16, 32) * 2 - 1, torch.rand(2, 3, 16, 32) * 2 - 1
    gt = torch.rand(2, 1, 16, 32) * 4
    valid = torch.rand(2, 16, 32) > 0.3
    preds = [torch.rand(2, 2, 16, 32, requires_grad=True) for _ in range(3)]
    base, terms = training_loss(preds, left, right, gt, valid)
    assert set(terms) == {"sequence"}
    config = LossConfig(consistency_weight=1, psnr_weight=0.1, smoothness_weight=1, photometric_weight=1)
    total, terms = training_loss(preds, left, right, gt, valid, config)
    assert set(terms) == {"sequence", "consistency", "psnr", "smoothness", "photometric"}
    assert total.item() == pytest.approx(sum(t.item() for t in terms.values()), rel=1e-5)
    total.backward()
    assert all(torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0 for p in preds)
    assert F.l1_loss(base, terms["sequence"]).item() == 0.0


@pytest.mark.parametrize(
    "changes, message",
    [
        (dict(gamma=0.0), "--gamma must be in"),
        (dict(gamma=1.5), "--gamma must be in"),
        (dict(average="mean"), "--loss-average must be one of"),
        (dict(photometric_weight=-1.0), "--photometric-weight must be >= 0"),
        (dict(flow_loss_weight=-0.5), "--flow-loss-weight must be >= 0"),
        (dict(consistency_resize_factor=0.0), "--consistency-resize-factor must be in"),
        (dict(photometric_ssim_weight=2.0), "--photometric-ssim-weight must be in"),
        (dict(photometric_max_displacement_ratio=0.0), "--photometric-max-displacement-ratio must be positive"),
    ],
)
def test_bad_loss_configs(changes, message):
    with pytest.raises(ValueError, match=message):
        LossConfig(**changes)


def test_loss_config_from_train_flags():
    parser = train.get_args_parser()
    assert LossConfig.from_args(parser.parse_args([]), model_gamma=0.8) == LossConfig()  # defaults agree
    args = parser.parse_args(["--max-disparity", "64", "--psnr-weight", "0.1", "--norm-mean", "0.4", "0.4", "0.4"])
    config = LossConfig.from_args(args, model_gamma=0.9)
    assert (config.gamma, config.max_disparity, config.psnr_weight, config.norm_mean) == (0.9, None, 0.1, (0.4,) * 3)
    args = parser.parse_args(["--max-disparity", "64", "--flow-loss-exclude-large", "--gamma", "0.7"])
    config = LossConfig.from_args(args, model_gamma=0.9)
    assert (config.gamma, config.max_disparity) == (0.7, 64.0)
