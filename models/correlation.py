"""Adaptive group correlation of CREStereo: fixed-window search at 1/4, deformable search at 1/8 and 1/16.

Correlation channels are group-major: channel `K * g + k` is the mean over the feature channels of group `g`
of left features times the right features sampled at search candidate `k`. The flow is in the network's own
convention: the offset added to a left pixel to reach its match in the right image (x = -disparity).
"""

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .attention import FeatureTransformer

# (rows, columns) of the two search windows; iterations alternate between them, starting with "1d".
WINDOWS = {"1d": (1, 9), "2d": (3, 3)}


def window_type(iteration: int) -> str:
    """Search window of a refinement iteration: 1x9 on even iterations, 3x3 on odd ones."""
    return "1d" if iteration % 2 == 0 else "2d"


def coords_grid(batch: int, height: int, width: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    """Pixel coordinates (B, H, W, 2), last dimension (x, y)."""
    ys, xs = torch.meshgrid(
        torch.arange(height, device=device, dtype=dtype), torch.arange(width, device=device, dtype=dtype), indexing="ij"
    )
    return torch.stack([xs, ys], dim=-1).expand(batch, height, width, 2)


def sample(image: Tensor, points: Tensor) -> Tensor:
    """Sample `image` (B, C, H, W) at absolute pixel `points` (B, h, w, 2): bilinear, zero-padded, corners aligned."""
    height, width = image.shape[-2:]
    x, y = points.unbind(-1)
    x = 2 * x / (width - 1) - 1
    if height > 1:
        y = 2 * y / (height - 1) - 1
    # Sampled in the precision of the points: bfloat16 coordinates would be off by whole pixels.
    return F.grid_sample(image.to(points.dtype), torch.stack([x, y], dim=-1), mode="bilinear", align_corners=True)


def window_offsets(kind: str, device: torch.device, dtype: torch.dtype) -> Tensor:
    """(K, 2) candidate offsets (x, y) of a window, row-major."""
    rows, cols = WINDOWS[kind]
    dy, dx = torch.meshgrid(
        torch.arange(rows, device=device, dtype=dtype) - rows // 2,
        torch.arange(cols, device=device, dtype=dtype) - cols // 2,
        indexing="ij",
    )
    return torch.stack([dx.flatten(), dy.flatten()], dim=-1)


def group_mean(left: Tensor, right: Tensor, groups: int) -> Tensor:
    """Per-group channel mean of left * right; left (B, C, H, W), right (B, C, K, H, W) -> (B, groups, K, H, W)."""
    left = left.unflatten(1, (groups, -1)).unsqueeze(3)
    right = right.unflatten(1, (groups, -1))
    return (left * right).mean(dim=2)


class _ShiftedGroupCorrelation(torch.autograd.Function):
    """Per-group channel mean of `left` (B, C, h, w) times each (rows x cols) shift of `padded`
    (B, C, h + rows - 1, w + cols - 1), as (B, groups * rows * cols, h, w), group-major.

    Autograd through nine slices and products would zero-fill a padded-size gradient per shift and add them
    up; this backward accumulates all shifts in place (`addcmul_`) into one gradient per input.
    """

    @staticmethod
    def forward(ctx, left: Tensor, padded: Tensor, rows: int, cols: int, groups: int) -> Tensor:
        b, c, h, w = left.shape
        ctx.save_for_backward(left, padded)
        ctx.window = (rows, cols, groups)
        left = left.unflatten(1, (groups, -1))
        # sum / n is how torch computes the mean on the CPU: the same values as .mean(dim=2).
        corr = [
            (left * padded[:, :, i : i + h, j : j + w].unflatten(1, (groups, -1))).sum(dim=2) / left.shape[2]
            for i in range(rows)
            for j in range(cols)
        ]
        return torch.stack(corr, dim=2).flatten(1, 2)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, Tensor | None, None, None, None]:
        left, padded = ctx.saved_tensors
        rows, cols, groups = ctx.window
        b, c, h, w = left.shape
        grouped = left.unflatten(1, (groups, -1))
        dtype = torch.promote_types(grad.dtype, torch.float32)  # accumulate in at least float32
        grad = (grad.to(dtype) / grouped.shape[2]).view(b, groups, 1, rows * cols, h, w)
        grad_left = torch.zeros_like(grouped, dtype=dtype) if ctx.needs_input_grad[0] else None
        grad_padded = torch.zeros_like(padded, dtype=dtype) if ctx.needs_input_grad[1] else None
        for k in range(rows * cols):
            i, j = divmod(k, cols)
            window = (slice(None), slice(None), slice(i, i + h), slice(j, j + w))
            if grad_left is not None:
                grad_left.addcmul_(padded[window].unflatten(1, (groups, -1)), grad[:, :, :, k])
            if grad_padded is not None:
                grad_padded[window].unflatten(1, (groups, -1)).addcmul_(grouped, grad[:, :, :, k])
        if grad_left is not None:
            grad_left = grad_left.flatten(1, 2).to(left.dtype)
        if grad_padded is not None:
            grad_padded = grad_padded.to(padded.dtype)
        return grad_left, grad_padded, None, None, None


def window_correlation(left: Tensor, right: Tensor, flow: Tensor, kind: str, groups: int) -> Tensor:
    """Fixed-window correlation (1/4 level): warp the right map by the flow, then shift with edge replication."""
    b, c, h, w = left.shape
    warped = sample(right, coords_grid(b, h, w, flow.device, flow.dtype) + flow.permute(0, 2, 3, 1))
    rows, cols = WINDOWS[kind]
    padded = F.pad(warped, (cols // 2, cols // 2, rows // 2, rows // 2), mode="replicate")
    return _ShiftedGroupCorrelation.apply(left, padded, rows, cols, groups)


def offset_correlation(left: Tensor, right: Tensor, flow: Tensor, offsets: Tensor, kind: str, groups: int) -> Tensor:
    """Deformable correlation (1/8 and 1/16): candidate k samples the right map at pixel + flow + window offset k
    + learned offset k (channels 2k, 2k+1 of `offsets`)."""
    b, c, h, w = left.shape
    window = window_offsets(kind, flow.device, flow.dtype)
    k = window.shape[0]
    candidates = window.view(1, k, 1, 1, 2) + offsets.view(b, k, 2, h, w).permute(0, 1, 3, 4, 2)
    base = coords_grid(b, h, w, flow.device, flow.dtype) + flow.permute(0, 2, 3, 1)
    points = (base.unsqueeze(1) + candidates).reshape(b, k * h, w, 2)
    sampled = sample(right, points).view(b, c, k, h, w)
    return group_mean(left, sampled, groups).flatten(1, 2)


class OffsetCorrelation(nn.Module):
    """Holds the optional cross-attention of a deformable correlation level (published layout:
    `attention_offset_correlation_layer.attention_module`)."""

    def __init__(self, attention_module: FeatureTransformer | None = None) -> None:
        super().__init__()
        self.attention_module = attention_module

    def attend(self, left: Tensor, right: Tensor) -> tuple[Tensor, Tensor]:
        """Cross-attended (left, right) maps; the identity without attention. It does not depend on the flow,
        so the caller computes it once per forward pass instead of once per iteration."""
        if self.attention_module is None:
            return left, right
        b, c, h, w = left.shape
        left, right = self.attention_module(left.flatten(2).transpose(1, 2), right.flatten(2).transpose(1, 2))
        return left.transpose(1, 2).reshape(b, c, h, w), right.transpose(1, 2).reshape(b, c, h, w)


class AdaptiveGroupCorrelation(nn.Module):
    """Correlation of one coarse pyramid level; only its optional cross-attention has parameters."""

    def __init__(self, attention_module: FeatureTransformer | None = None) -> None:
        super().__init__()
        self.attention_offset_correlation_layer = OffsetCorrelation(attention_module)

    def attend(self, left: Tensor, right: Tensor) -> tuple[Tensor, Tensor]:
        return self.attention_offset_correlation_layer.attend(left, right)


def correlation(left: Tensor, right: Tensor, flow: Tensor, offsets: Tensor | None, kind: str, groups: int) -> Tensor:
    """Deformable search with learned `offsets` (1/8, 1/16), fixed-window search without them (1/4)."""
    if offsets is None:
        return window_correlation(left, right, flow, kind, groups)
    return offset_correlation(left, right, flow, offsets, kind, groups)
