"""Figures of stereo predictions, and the one disparity colouriser.

``colorize`` turns a disparity (or error) map into an RGB image: used by ``predict.py``'s colour output, the
TensorBoard images of ``utils/logger.py`` and the figures of ``cascade_evaluation.py --save-images``
(``save_disparity_figure``). Darker = smaller disparity = farther.

This module is the one place that sets matplotlib's backend (Agg: every figure is written to a file, none is
shown); scripts that draw take ``plt`` from here.
"""

import os

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from matplotlib.cm import ScalarMappable  # noqa: E402
from matplotlib.colors import Normalize  # noqa: E402
from torch import Tensor  # noqa: E402

__all__ = ["colorbar_mappable", "colorize", "plt", "save_disparity_figure"]


def colorize(
    values: Tensor | np.ndarray,
    vmin: float,
    vmax: float,
    invalid: Tensor | np.ndarray | None = None,
    invalid_color: tuple[float, float, float] = (0.0, 0.0, 0.0),
    cmap: str = "magma",
) -> Tensor:
    """``(H, W)`` values to a ``(3, H, W)`` float32 image in [0, 1] on ``cmap``, ``vmin`` .. ``vmax`` clamped
    (a scale shorter than 1e-6 counts as 1e-6); ``invalid`` pixels and NaN take ``invalid_color``."""
    x = torch.as_tensor(values).detach().cpu().float()
    bad = torch.isnan(x)
    if invalid is not None:
        bad |= torch.as_tensor(invalid).detach().cpu().bool()
    x = ((x - vmin) / max(vmax - vmin, 1e-6)).clamp(0, 1).nan_to_num(0.0)
    rgb = torch.from_numpy(matplotlib.colormaps[cmap](x.numpy())[..., :3]).permute(2, 0, 1).float()
    fill = torch.tensor(invalid_color, dtype=torch.float32).view(3, 1, 1)
    return torch.where(bad, fill, rgb)


def colorbar_mappable(vmin: float, vmax: float, cmap: str = "magma") -> ScalarMappable:
    """What ``fig.colorbar`` needs to draw the scale of ``colorize(values, vmin, vmax, cmap=cmap)``."""
    return ScalarMappable(Normalize(vmin, max(vmax, vmin + 1e-6)), matplotlib.colormaps[cmap])


def _to_hwc(image: Tensor):
    image = image.detach().cpu()
    if image.dtype == torch.uint8:
        image = image.float() / 255
    return image.clamp(0, 1).permute(1, 2, 0).squeeze(-1).numpy()


def _plane(x: Tensor) -> Tensor:
    return x.detach().cpu().float().reshape(x.shape[-2:])


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

    ``left``/``right`` are ``(C, H, W)`` images (uint8, or float in [0, 1]: see
    ``utils.preprocessing.denormalize``); ``pred``, ``gt`` are ``(H, W)`` or ``(1, H, W)`` disparities and
    ``valid`` a ``(H, W)`` bool mask. With ground truth the panels are left, right, valid mask, masked ground
    truth, prediction, error map (invalid pixels white); without it left, right, prediction.
    """
    pred_t = _plane(pred)
    white = (1.0, 1.0, 1.0)  # invalid pixels show the figure's background

    def shown(values: Tensor, vmin: float, vmax: float, invalid: Tensor | None = None, cmap: str = "magma"):
        return colorize(values, vmin, vmax, invalid, white, cmap).permute(1, 2, 0).numpy(), (vmin, vmax, cmap)

    panels = [("left", _to_hwc(left), None), ("right", _to_hwc(right), None)]
    if gt is not None:
        gt_t = _plane(gt)
        mask = _plane(valid).bool() if valid is not None else gt_t > 0
        scored = gt_t[mask] if mask.any() else pred_t.reshape(-1)
        vmin, vmax = float(scored.min()), float(scored.max())
        error = (pred_t - gt_t).abs()
        top = float(error[mask].max()) if mask.any() else 0.0
        panels += [
            ("valid mask", mask.float().numpy(), None),
            ("ground truth (valid)", *shown(gt_t, vmin, vmax, ~mask)),
            ("prediction", *shown(pred_t, vmin, vmax)),
            ("|error| px (valid)", *shown(error, 0.0, top, ~mask, "inferno")),
        ]
        rows, cols = 2, 3
    else:
        panels.append(("prediction", *shown(pred_t, float(pred_t.min()), float(pred_t.max()))))
        rows, cols = 1, 3
    height, width = pred_t.shape
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 4, rows * (4 * height / width + 0.4) + (0.4 if title else 0)))
    for ax, (name, image, scale) in zip(axes.flat, panels):
        ax.imshow(image, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        ax.set_title(name, fontsize=9)
        ax.set_xticks([]), ax.set_yticks([])
        # every panel gets a colour bar slot so that all panels have the same size; only scalar maps show it
        bar = fig.colorbar(colorbar_mappable(*scale) if scale else colorbar_mappable(0, 1, "gray"), ax=ax,
                           fraction=0.046, pad=0.02)
        bar.ax.set_visible(scale is not None)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
