"""CREStereo (Li et al., CVPR 2022) computing exactly what torchvision's prototype computes, so that its
published weights load (same state-dict layout) and give the published numbers.

Differences from torchvision's prototype CREStereo that do not change the results:
- the positional encoding is computed for the input size instead of read from a 256x256 table;
- the context part of every GRU gate convolution is computed once per level, and the 1/16 cross-attention
  once per forward pass, since neither depends on the iteration;
- the flow head and the mask head share one convolution over the hidden state;
- `return_all=False` skips the mask head and upsampling of iterations whose prediction is not returned;
- inputs are checked, and refinement iterations can be activation-checkpointed.
"""

import math
from contextlib import nullcontext
from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint, create_selective_checkpoint_contexts
from torchvision.models.optical_flow import raft
from torchvision.ops import Conv2dNormActivation

from .attention import FeatureTransformer
from .correlation import AdaptiveGroupCorrelation, correlation, window_type


class PositionalEncodingSine(nn.Module):
    """Sinusoidal encoding added to the 1/16 maps, for any map size.

    With x = column + 1, y = row + 1 and k = 0..dim/4-1: channel 4k = sin(x e^(-2k)), 4k+1 = cos(x e^(-2k)),
    4k+2 = sin(y e^(-2k)), 4k+3 = cos(y e^(-2k)). (The frequencies come from torchvision's prototype's
    `(-ln(10000) / dim) // 2 == -1`, kept because the weights were trained with it.) The published layout
    stores the encoding of a 256x256 map as the buffer `pe`; this module keeps nothing in memory, writes `pe`
    in `state_dict()` so that torchvision-layout consumers load our state dicts, and loads with or without it.
    """

    table_size = 256

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim

    def encoding(self, height: int, width: int, device: torch.device | None = None) -> Tensor:
        """The (1, dim, height, width) float32 encoding."""
        div = torch.exp(torch.arange(0, self.dim // 2, 2, device=device, dtype=torch.float32) * -1.0)[:, None, None]
        x = torch.arange(1, width + 1, device=device, dtype=torch.float32)[None, None, :] * div
        y = torch.arange(1, height + 1, device=device, dtype=torch.float32)[None, :, None] * div
        x, y = x.expand(-1, height, width), y.expand(-1, height, width)
        return torch.stack([x.sin(), x.cos(), y.sin(), y.cos()], dim=1).reshape(1, self.dim, height, width)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.encoding(x.shape[2], x.shape[3], x.device)

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        super()._save_to_state_dict(destination, prefix, keep_vars)
        destination[prefix + "pe"] = self.encoding(self.table_size, self.table_size)

    def _load_from_state_dict(
        self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
    ):
        table = state_dict.pop(prefix + "pe", None)
        if table is not None:
            expected = self.encoding(self.table_size, self.table_size)
            if table.shape != expected.shape:
                error_msgs.append(
                    f"size mismatch for {prefix}pe: copying a param with shape {tuple(table.shape)} from checkpoint, "
                    f"the shape in current model is {tuple(expected.shape)}."
                )
            elif not torch.allclose(table.float(), expected, atol=1e-5):
                error_msgs.append(f"{prefix}pe is not the sinusoidal encoding this architecture uses.")
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )


class ConvexMaskPredictor(nn.Module):
    """Weights of the convex upsampling: 3x3 conv + ReLU, 1x1 conv to 9 * factor^2 channels, times 0.25."""

    def __init__(self, in_channels: int, hidden_size: int, factor: int, multiplier: float = 0.25) -> None:
        super().__init__()
        self.mask_head = nn.Sequential(
            Conv2dNormActivation(in_channels, hidden_size, kernel_size=3, norm_layer=None),
            nn.Conv2d(hidden_size, 9 * factor**2, kernel_size=1),
        )
        self.multiplier = multiplier

    def forward(self, x: Tensor) -> Tensor:
        return self.mask_head(x) * self.multiplier


def convex_upsample(flow: Tensor, mask: Tensor, factor: int) -> Tensor:
    """RAFT convex upsampling: each output pixel is a softmax-weighted mix of the 3x3 neighbours of its
    source pixel in `factor * flow`; mask channel 16j + 4a + b weighs neighbour j for sub-pixel (a, b)."""
    b, c, h, w = flow.shape
    mask = mask.view(b, 1, 9, factor, factor, h, w).softmax(dim=2)
    neighbours = F.unfold(factor * flow, kernel_size=3, padding=1).view(b, c, 9, 1, 1, h, w)
    up = (mask * neighbours).sum(dim=2)
    return up.permute(0, 1, 4, 2, 5, 3).reshape(b, c, h * factor, w * factor)


def bilinear_resize(flow: Tensor, size: tuple[int, int]) -> Tensor:
    return F.interpolate(flow, size=size, mode="bilinear", align_corners=True)


def resize_flow(flow: Tensor, size: tuple[int, int]) -> Tensor:
    """Bilinear resize of a `(B, 2, h, w)` flow to `size`, each component multiplied by the ratio of its own
    axis (x by the width ratio, y by the height ratio); torchvision uses the height ratio for both."""
    ratios = torch.tensor([size[1] / flow.shape[3], size[0] / flow.shape[2]], dtype=flow.dtype, device=flow.device)
    return bilinear_resize(flow, size) * ratios.view(1, 2, 1, 1)


def conv3x3_few_outputs(x: Tensor, conv: nn.Conv2d) -> Tensor:
    """`conv` (3x3, padding 1) as a matrix product giving one map per kernel tap and output channel, summed at
    their shifted positions by `fold`: the same result, and for the flow head's 256 -> 2 convolution several
    times faster on the CPU than oneDNN's direct kernel, which is slow for so few output channels."""
    b, _, h, w = x.shape
    # fold adds tap (i, j) of pixel p at p + (i - 1, j - 1); a convolution reads p + (i - 1, j - 1) into p:
    # the kernel flipped.
    weight = conv.weight.flip(2, 3).permute(0, 2, 3, 1).reshape(-1, conv.in_channels)
    taps = torch.matmul(weight.to(x.dtype), x.flatten(2))
    return F.fold(taps, (h, w), kernel_size=3, padding=1) + conv.bias.view(1, -1, 1, 1)


class RecurrentBlock(raft.RecurrentBlock):
    """raft.RecurrentBlock (GRUs (1,5) then (5,1)) whose input is [context, motion].

    The context does not change within a pyramid level, so its share of every gate convolution (with the
    biases) is computed once per level by `context_terms`; each iteration convolves only [hidden, motion].
    """

    def __init__(self, *, context_size: int, motion_size: int, hidden_size: int) -> None:
        super().__init__(input_size=context_size + motion_size, hidden_size=hidden_size)
        self.context_size = context_size

    def _grus(self) -> tuple[raft.ConvGRU, raft.ConvGRU]:
        return self.convgru1, self.convgru2

    def context_terms(self, context: Tensor) -> list[tuple[Tensor, Tensor]]:
        """Per GRU, the context contributions to the z and r pre-activations (B, 2 * hidden, H, W) and to the
        q pre-activation (B, hidden, H, W)."""
        part = slice(self.hidden_size, self.hidden_size + self.context_size)
        terms = []
        for gru in self._grus():
            weight = torch.cat([gru.convz.weight[:, part], gru.convr.weight[:, part], gru.convq.weight[:, part]])
            bias = torch.cat([gru.convz.bias, gru.convr.bias, gru.convq.bias])
            term = F.conv2d(context, weight, bias, padding=gru.convz.padding)
            # split, not slicing: its backward concatenates the two gradients instead of zero-filling two
            # full-size ones and adding them.
            terms.append(term.split([2 * self.hidden_size, self.hidden_size], dim=1))
        return terms

    def forward(self, hidden: Tensor, motion: Tensor, terms: list[tuple[Tensor, Tensor]]) -> Tensor:
        n = self.hidden_size
        for gru, (zr_term, q_term) in zip(self._grus(), terms):
            skip = n + self.context_size
            w_zr = torch.cat([gru.convz.weight, gru.convr.weight])
            w_zr = torch.cat([w_zr[:, :n], w_zr[:, skip:]], dim=1)
            zr = F.conv2d(torch.cat([hidden, motion], dim=1), w_zr, padding=gru.convz.padding)
            zr = torch.sigmoid(zr + zr_term)
            z, r = zr.chunk(2, dim=1)
            w_q = torch.cat([gru.convq.weight[:, :n], gru.convq.weight[:, skip:]], dim=1)
            q = F.conv2d(torch.cat([r * hidden, motion], dim=1), w_q, padding=gru.convq.padding)
            q = torch.tanh(q + q_term)
            hidden = torch.lerp(hidden, q, z)  # (1 - z) * hidden + z * q in one pass
        return hidden


class UpdateBlock(nn.Module):
    """Motion encoder, recurrent block and flow head, shared by all pyramid levels (raft.UpdateBlock layout)."""

    def __init__(self, *, corr_channels: int, hidden_size: int, context_size: int) -> None:
        super().__init__()
        self.motion_encoder = raft.MotionEncoder(
            in_channels_corr=corr_channels, corr_layers=(256, 192), flow_layers=(128, 64), out_channels=128
        )
        self.recurrent_block = RecurrentBlock(context_size=context_size, motion_size=128, hidden_size=hidden_size)
        self.flow_head = raft.FlowHead(in_channels=hidden_size, hidden_size=256)
        self.hidden_state_size = hidden_size

    def forward(
        self,
        hidden: Tensor,
        context_terms: list[tuple[Tensor, Tensor]],
        corr: Tensor,
        flow: Tensor,
        mask_predictor: ConvexMaskPredictor | None,
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        """(new hidden state, flow update, upsampling mask or None when `mask_predictor` is None)."""
        motion = self.motion_encoder(flow, corr)
        hidden = self.recurrent_block(hidden, motion, context_terms)
        head = self.flow_head.conv1
        if mask_predictor is None:
            return hidden, conv3x3_few_outputs(F.relu(head(hidden)), self.flow_head.conv2), None
        # The flow head's and the mask head's first convolutions read the same hidden state: run them as one.
        mask_conv = mask_predictor.mask_head[0][0]
        weight = torch.cat([head.weight, mask_conv.weight])
        bias = torch.cat([head.bias, mask_conv.bias])
        features = F.relu(F.conv2d(hidden, weight, bias, padding=1))
        head_features, mask_features = features.split([head.out_channels, mask_conv.out_channels], dim=1)
        delta = conv3x3_few_outputs(head_features, self.flow_head.conv2)
        mask = mask_predictor.mask_head[1](mask_features) * mask_predictor.multiplier
        return hidden, delta, mask


def _keep_convolution_outputs():
    """Selective activation checkpointing: keep the convolution outputs of an iteration (most of its work) and
    recompute the rest (concatenations, activations, gates, correlation, upsampling: most of its memory)."""
    return create_selective_checkpoint_contexts([torch.ops.aten.convolution.default])


def _uncached_autocast(device_type: str):
    """The active autocast without its cache of weight casts. The cache makes the weight casts of a forward
    pass happen in its first iteration only, but in every recomputation, and selective checkpointing needs
    the same operations in both."""
    if not torch.is_autocast_enabled(device_type):
        return nullcontext()
    return torch.autocast(device_type, dtype=torch.get_autocast_dtype(device_type), cache_enabled=False)


class CREStereo(nn.Module):
    """CREStereo base. `forward(left, right, flow_init=None, num_iters=10, *, return_all=True)` takes images
    normalised to [-1, 1], (B, 3, H, W) with H and W multiples of 16, and returns the list of (B, 2, H, W)
    predictions (channel 0 = positive disparity), coarse to fine; the last one is the estimate."""

    output_channels = 2
    size_divisor = 16
    loss_gamma = 0.8  # sequence-loss decay of the published recipes
    corr_groups = 4
    upsample_factor = 4

    def __init__(self, *, activation_checkpointing: bool = False) -> None:
        super().__init__()
        self.activation_checkpointing = activation_checkpointing
        dim, hidden = 256, 128
        self.feature_encoder = raft.FeatureEncoder(
            block=partial(raft.ResidualBlock, always_project=True),
            layers=(64, 64, 96, 128, dim),
            strides=(2, 1, 2, 1),
            norm_layer=nn.InstanceNorm2d,
        )
        self.update_block = UpdateBlock(
            corr_channels=self.corr_groups * 9, hidden_size=hidden, context_size=dim - hidden
        )
        # Registered a second time, as in the published layout (its keys appear under both names).
        self.flow_head = self.update_block.flow_head
        self.self_attn_block = FeatureTransformer(dim, 8, ("self",))
        self.mask_predictor = ConvexMaskPredictor(hidden, 256, self.upsample_factor)
        self.offset_convs = nn.ModuleDict(
            {
                res: Conv2dNormActivation(dim, 2 * 9, kernel_size=3, norm_layer=None, activation_layer=None)
                for res in ("1 / 16", "1 / 8")
            }
        )
        self.correlation_layers = nn.ModuleDict(
            {
                "1 / 16": AdaptiveGroupCorrelation(FeatureTransformer(dim, 8, ("cross",))),
                "1 / 8": AdaptiveGroupCorrelation(),
            }
        )
        self.positional_encodings = PositionalEncodingSine(dim)
        # Selective activation checkpointing keeps the convolution outputs of the refinement iterations, so
        # nothing there may modify them in place (torchvision's blocks use in-place ReLUs).
        for module in (*self.update_block.modules(), *self.mask_predictor.modules()):
            if isinstance(module, nn.ReLU):
                module.inplace = False

    def forward(
        self,
        left: Tensor,
        right: Tensor,
        flow_init: Tensor | None = None,
        num_iters: int = 10,
        *,
        return_all: bool = True,
    ) -> list[Tensor]:
        """Predictions: `2 * (num_iters // 2) + num_iters` without `flow_init` (1/16, 1/8, then 1/4 level),
        `num_iters` with it (1/4 level only); only the last one when `return_all=False`."""
        self._check_inputs(left, right, flow_init, num_iters)
        features = self.feature_encoder(torch.cat([left, right], dim=0))
        # unbind, not chunk: chunk's split arithmetic would pin the batch size in an exported graph.
        left_features, right_features = features.unflatten(0, (2, -1)).unbind(0)
        hidden, context = left_features.chunk(2, dim=1)
        hidden, context = torch.tanh(hidden), torch.relu(context)

        predictions: list[Tensor] = []
        size = left_features.shape[-2:]
        if flow_init is None:
            flow = self._coarse_levels(
                left_features, right_features, hidden, context, num_iters // 2, return_all, predictions
            )
        else:
            flow = -resize_flow(flow_init.float(), size)
        _, prior = self._level(
            left_features, right_features, None, hidden, context, flow, num_iters, return_all, predictions, 1
        )
        if not return_all:
            predictions.append(-prior)
        return predictions

    def _coarse_levels(
        self,
        left: Tensor,
        right: Tensor,
        hidden: Tensor,
        context: Tensor,
        iters: int,
        return_all: bool,
        predictions: list[Tensor],
    ) -> Tensor:
        """Run the 1/16 and 1/8 levels; return the initial 1/4 flow."""
        pyramid = {2: "1 / 8", 4: "1 / 16"}
        maps = {res: [F.avg_pool2d(x, f) for x in (left, right, hidden, context)] for f, res in pyramid.items()}
        offsets = {res: (torch.sigmoid(self.offset_convs[res](maps[res][0])) - 0.5) * 2 for res in ("1 / 16", "1 / 8")}
        coarse = maps["1 / 16"]
        b, c, h, w = coarse[0].shape
        tokens = [self.positional_encodings(x).flatten(2).transpose(1, 2) for x in coarse[:2]]
        tokens = self.self_attn_block(*tokens)
        coarse[:2] = [x.transpose(1, 2).reshape(b, c, h, w) for x in tokens]

        flow = left.new_zeros(b, 2, h, w, dtype=torch.float32)
        for res in ("1 / 16", "1 / 8"):
            level_left, level_right = self.correlation_layers[res].attend(*maps[res][:2])
            factor = left.shape[2] // level_left.shape[2]
            _, prior = self._level(
                level_left, level_right, offsets[res], *maps[res][2:], flow, iters, return_all, predictions, factor
            )
            next_size = (2 * level_left.shape[2], 2 * level_left.shape[3])
            # torchvision's prototype flips the sign of the flow at each hand-over; the published weights depend on it.
            flow = -(next_size[0] / prior.shape[2]) * bilinear_resize(prior, next_size)
        return flow

    def _level(
        self,
        left: Tensor,
        right: Tensor,
        offsets: Tensor | None,
        hidden: Tensor,
        context: Tensor,
        flow: Tensor,
        iters: int,
        return_all: bool,
        predictions: list[Tensor],
        factor: int,
    ) -> tuple[Tensor, Tensor]:
        """Refine `flow` for `iters` iterations on one level; return the flow and the last convex-upsampled
        prior (4x the level's resolution). With `return_all`, append one full-resolution prediction per
        iteration, `factor` being the ratio between the 1/4 level and this one."""
        terms = self.update_block.recurrent_block.context_terms(context)
        checkpointed = self.activation_checkpointing and torch.is_grad_enabled()
        prior = None
        for it in range(iters):
            args = (left, right, offsets, hidden, terms, flow.detach(), window_type(it), return_all or it == iters - 1)
            if checkpointed:
                with _uncached_autocast(left.device.type):
                    hidden, flow, prior = checkpoint(
                        self._iteration, *args, use_reentrant=False, context_fn=_keep_convolution_outputs
                    )
            else:
                hidden, flow, prior = self._iteration(*args)
            if return_all:
                full_size = (prior.shape[2] * factor, prior.shape[3] * factor)
                predictions.append(-factor * bilinear_resize(prior, full_size) if factor > 1 else -prior)
        return flow, prior

    def _iteration(
        self,
        left: Tensor,
        right: Tensor,
        offsets: Tensor | None,
        hidden: Tensor,
        terms: list[tuple[Tensor, Tensor]],
        flow: Tensor,
        kind: str,
        with_mask: bool,
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        """One refinement step: (hidden state, refined flow, convex-upsampled flow or None without the mask)."""
        corr = correlation(left, right, flow, offsets, kind, self.corr_groups)
        hidden, delta, mask = self.update_block(hidden, terms, corr, flow, self.mask_predictor if with_mask else None)
        flow = flow + delta
        prior = convex_upsample(flow, mask, self.upsample_factor) if with_mask else None
        return hidden, flow, prior

    def _check_inputs(self, left: Tensor, right: Tensor, flow_init: Tensor | None, num_iters: int) -> None:
        if left.dim() != 4 or left.shape[1] != 3 or left.shape != right.shape:
            raise ValueError(
                f"left and right must both be (B, 3, H, W) images of the same shape; got {tuple(left.shape)} "
                f"and {tuple(right.shape)}."
            )
        h, w = left.shape[-2:]
        d = self.size_divisor
        if h % d or w % d or h < 2 * d or w < 2 * d:
            raise ValueError(
                f"Input size {h}x{w} is not supported: height and width must be multiples of {d} (of {2 * d} for "
                f"two cascades) and at least {2 * d}. Pad the images (utils.padder.InputPadder) or resize them to "
                f"e.g. {max(2 * d, math.ceil(h / d) * d)}x{max(2 * d, math.ceil(w / d) * d)}."
            )
        if flow_init is None and num_iters < 2:
            raise ValueError(f"num_iters must be at least 2 without flow_init (got {num_iters}).")
        if num_iters < 1:
            raise ValueError(f"num_iters must be at least 1 (got {num_iters}).")
        if flow_init is not None and (flow_init.dim() != 4 or flow_init.shape[:2] != (left.shape[0], 2)):
            raise ValueError(f"flow_init must be ({left.shape[0]}, 2, h, w); got {tuple(flow_init.shape)}.")


def crestereo_base(*, activation_checkpointing: bool = False) -> CREStereo:
    """CREStereo base as in torchvision (5,432,948 parameters)."""
    return CREStereo(activation_checkpointing=activation_checkpointing)
