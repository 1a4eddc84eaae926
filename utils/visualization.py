"""Figures of stereo predictions: inputs, valid mask, ground truth, prediction and error in one image.

Used by ``cascade_evaluation.py --save-images`` and reusable by ``predict.py`` and ``scripts/make_assets.py``.
Disparity panels share one colour scale (darker = smaller disparity = farther).
"""

import os
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from torch import Tensor  # noqa: E402


def denormalize(
    image: Tensor, mean: Sequence[float] = (0.5, 0.5, 0.5), std: Sequence[float] = (0.5, 0.5, 0.5)
) -> Tensor:
    """Undo ``Normalize(mean, std)`` on a ``(C, H, W)`` image, giving values in [0, 1]."""
    mean_t = torch.as_tensor(mean, dtype=torch.float32, device=image.device).view(-1, 1, 1)
    std_t = torch.as_tensor(std, dtype=torch.float32, device=image.device).view(-1, 1, 1)
    return (image.float() * std_t + mean_t).clamp(0, 1)


def _to_hwc(image: Tensor):
    image = image.detach().cpu()
    if image.dtype == torch.uint8:
        image = image.float() / 255
    return image.clamp(0, 1).permute(1, 2, 0).squeeze(-1).numpy()


def _plane(x: Tensor):
    return x.detach().cpu().float().reshape(x.shape[-2:]).numpy()


def save_disparity_figure(
    path: str | os.PathLike,
    left: Tensor,
    right: Tensor,
    pred: Tensor,
    gt: Tensor | None = None,
    valid: Tensor | None = None,
    title: str | None = None,
) -> None:
    """Write a PNG of one sample.

    ``left``/``right`` are ``(C, H, W)`` images (uint8, or float in [0, 1]: see ``denormalize``); ``pred``,
    ``gt`` are ``(H, W)`` or ``(1, H, W)`` disparities and ``valid`` a ``(H, W)`` bool mask. With ground truth
    the panels are left, right, valid mask, masked ground truth, prediction, error map; without it left,
    right, prediction.
    """
    pred_np = _plane(pred)
    panels = [("left", _to_hwc(left), {}), ("right", _to_hwc(right), {})]
    if gt is not None:
        gt_np = _plane(gt)
        mask_np = _plane(valid).astype(bool) if valid is not None else gt_np > 0
        shown = gt_np[mask_np] if mask_np.any() else pred_np.reshape(-1)
        scale = {"cmap": "magma", "vmin": float(shown.min()), "vmax": float(shown.max())}
        masked_gt = gt_np.copy()
        masked_gt[~mask_np] = float("nan")
        error = abs(pred_np - gt_np)
        error[~mask_np] = float("nan")
        panels += [
            ("valid mask", mask_np, {"cmap": "gray", "vmin": 0, "vmax": 1}),
            ("ground truth (valid)", masked_gt, scale),
            ("prediction", pred_np, scale),
            ("|error| px (valid)", error, {"cmap": "inferno", "vmin": 0}),
        ]
        rows, cols = 2, 3
    else:
        panels.append(("prediction", pred_np, {"cmap": "magma"}))
        rows, cols = 1, 3
    height, width = pred_np.shape
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 4, rows * (4 * height / width + 0.4) + (0.4 if title else 0)))
    for ax, (name, data, style) in zip(axes.flat, panels):
        im = ax.imshow(data, **style)
        ax.set_title(name, fontsize=9)
        ax.set_xticks([]), ax.set_yticks([])
        # every panel gets a colour bar slot so that all panels have the same size; only scalar maps show it
        bar = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02)
        bar.ax.set_visible(name in ("ground truth (valid)", "prediction", "|error| px (valid)"))
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
