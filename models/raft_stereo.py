"""RAFT-Stereo (Lipson et al., 3DV 2021), base and realtime, computing what torchvision's prototype
`raft_stereo.py` computes, so that its published weights load (same state-dict layout) and give its results.

One difference in the interface, none in the results: the predictions follow this project's model contract
(positive disparity, `flow_init` as a positive disparity at any resolution), where torchvision's prototype returns
`coords1 - coords0` (minus the disparity) and takes `flow_init` in feature-grid units at feature resolution.

Differences from torchvision's prototype that do not change the results:
- the z and r gate convolutions of every GRU run as one convolution;
- `return_all=False` skips the mask head and upsampling of iterations whose prediction is not returned;
- with its BatchNorm layers in eval mode (model.eval(), or frozen for training) the realtime model's shared base
  encoder runs once on [left; right] and its left half is the context input (the prototype runs it a second
  time on the left image, which then gives the same values; with BatchNorm in train mode it runs twice, as in
  the prototype, since the batch statistics differ);
- inputs are checked; the encoders (per block) and the refinement iterations can be activation-checkpointed;
- the network runs in channels_last, its InstanceNorm as a batch norm of each image's (pixels, channels).
"""

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint
from torchvision.models.optical_flow import raft
from torchvision.ops import Conv2dNormActivation

from .crestereo import _uncached_autocast, convex_upsample


class InstanceNorm2d(nn.InstanceNorm2d):
    """`nn.InstanceNorm2d` without affine parameters or running statistics (RAFT's), computed per image as a
    batch norm of its (pixels, channels) matrix, which is a view of a channels_last tensor: the same values,
    and a channels_last output. `F.instance_norm` returns contiguous tensors (undoing channels_last), and a
    group norm of one channel per group, the same on channels_last, has a slow backward pass on the CPU
    (1x2x64x384x512, 2 threads: forward and backward 304 ms against 67 ms)."""

    def __init__(self, num_features: int) -> None:
        super().__init__(num_features)

    def forward(self, x: Tensor) -> Tensor:
        n, c, h, w = x.shape
        pixels = x.permute(0, 2, 3, 1).reshape(n, h * w, c)
        normed = [
            F.batch_norm(image, None, None, training=True, eps=self.eps).view(1, h, w, c).permute(0, 3, 1, 2)
            for image in pixels.unbind(0)
        ]
        # cat: channels_last as its inputs, and not a view, so that the in-place ReLU after it stays cheap.
        return torch.cat(normed)


def _base_encoder(strides: tuple[int, ...], norm_layer: type[nn.Module]) -> raft.FeatureEncoder:
    """raft.FeatureEncoder over (64, 64, 96, 128) without its final 1x1 convolution: 128 channels out."""
    encoder = raft.FeatureEncoder(
        block=raft.ResidualBlock, layers=(64, 64, 96, 128, 256), strides=strides, norm_layer=norm_layer
    )
    encoder.conv = nn.Identity()
    return encoder


class FeatureEncoder(nn.Module):
    """Matching features (256 channels): the base encoder, then a 1x1 convolution, or, when the base encoder
    is shared with the context encoder, an InstanceNorm residual block and a 3x3 convolution."""

    def __init__(self, base_encoder: nn.Module, shared_base: bool) -> None:
        super().__init__()
        self.base_encoder = base_encoder
        if shared_base:
            self.residual_block = raft.ResidualBlock(128, 128, norm_layer=InstanceNorm2d, stride=1)
            self.conv = nn.Conv2d(128, 256, kernel_size=3, padding=1)
        else:
            self.residual_block = nn.Identity()
            self.conv = nn.Conv2d(128, 256, kernel_size=1)

    def head(self, x: Tensor) -> Tensor:
        """The part after the base encoder."""
        return self.conv(self.residual_block(x))


def _output_head(with_block: bool) -> nn.Sequential:
    block = [raft.ResidualBlock(128, 128, norm_layer=nn.BatchNorm2d, stride=1)] if with_block else []
    return nn.Sequential(*block, nn.Conv2d(128, 128, kernel_size=3, padding=1))


class ContextLevel(nn.Module):
    """One level of the context encoder: (level > 0) two BatchNorm residual blocks halving the resolution,
    then the hidden-state and context heads (128 channels each)."""

    def __init__(self, downsample: bool, with_block: bool) -> None:
        super().__init__()
        if downsample:
            self.downsampler = nn.Sequential(
                raft.ResidualBlock(128, 128, norm_layer=nn.BatchNorm2d, stride=2),
                raft.ResidualBlock(128, 128, norm_layer=nn.BatchNorm2d, stride=1),
            )
        else:
            self.downsampler = nn.Identity()
        self.out_hidden_state = _output_head(with_block)
        self.out_context = _output_head(with_block)


class ContextEncoder(nn.Module):
    """Per GRU level (finest first) the initial hidden state and the context, from the left image."""

    def __init__(self, base_encoder: nn.Module, out_with_blocks: list[bool]) -> None:
        super().__init__()
        self.base_encoder = base_encoder
        self.downsample_and_out_layers = nn.ModuleList(
            ContextLevel(level > 0, with_block) for level, with_block in enumerate(out_with_blocks)
        )

    def heads(self, x: Tensor) -> list[tuple[Tensor, Tensor]]:
        """(hidden, context) per level from the base encoder's output."""
        outputs = []
        for level in self.downsample_and_out_layers:
            x = level.downsampler(x)
            outputs.append((level.out_hidden_state(x), level.out_context(x)))
        return outputs


class ConvGRU(nn.Module):
    """RAFT-Stereo's GRU: 3x3 gate convolutions over [hidden, input], with the context added inside each gate."""

    def __init__(self, input_size: int, hidden_size: int) -> None:
        super().__init__()
        self.convz = nn.Conv2d(hidden_size + input_size, hidden_size, kernel_size=3, padding=1)
        self.convr = nn.Conv2d(hidden_size + input_size, hidden_size, kernel_size=3, padding=1)
        self.convq = nn.Conv2d(hidden_size + input_size, hidden_size, kernel_size=3, padding=1)

    def forward(self, hidden: Tensor, x: Tensor, context: tuple[Tensor, Tensor, Tensor]) -> Tensor:
        cz, cr, cq = context
        hx = torch.cat([hidden, x], dim=1)
        # z and r read the same input: one convolution.
        weight = torch.cat([self.convz.weight, self.convr.weight])
        bias = torch.cat([self.convz.bias, self.convr.bias])
        z, r = F.conv2d(hx, weight, bias, padding=1).chunk(2, dim=1)
        z, r = torch.sigmoid(z + cz), torch.sigmoid(r + cr)
        q = torch.tanh(self.convq(torch.cat([r * hidden, x], dim=1)) + cq)
        return torch.lerp(hidden, q, z)  # (1 - z) * hidden + z * q


class UpdateBlock(nn.Module):
    """The motion encoder and one GRU per level; `grus[0]` is the coarsest level's, as in the published layout."""

    def __init__(self, hidden_dims: list[int]) -> None:
        super().__init__()
        self.motion_encoder = raft.MotionEncoder(
            in_channels_corr=4 * 9, corr_layers=(64, 64), flow_layers=(64, 64), out_channels=128
        )
        levels = len(hidden_dims)
        input_sizes = []
        for i in range(levels):
            finer = 128 if i == 0 else hidden_dims[i - 1]  # level 0: the motion features
            coarser = hidden_dims[i + 1] if i + 1 < levels else 0
            input_sizes.append(finer + coarser)
        self.grus = nn.ModuleList(ConvGRU(input_sizes[i], hidden_dims[i]) for i in reversed(range(levels)))

    def gru(self, level: int) -> ConvGRU:
        return self.grus[len(self.grus) - 1 - level]

    def forward(
        self,
        hidden: list[Tensor],
        contexts: list[tuple[Tensor, Tensor, Tensor]],
        corr: Tensor,
        disparity: Tensor,
        num_levels: int,
    ) -> list[Tensor]:
        """Update the `num_levels` coarsest hidden states, coarse to fine. A level reads the average-pooled
        finer state (not yet updated in this pass) and the upsampled coarser one (already updated)."""
        hidden = list(hidden)
        levels = len(hidden)
        for i in reversed(range(levels - num_levels, levels)):
            if i == 0:
                inputs = [self.motion_encoder(disparity, corr)]
            else:
                inputs = [F.avg_pool2d(hidden[i - 1], 3, stride=2, padding=1)]
            if i + 1 < levels:
                size = hidden[i].shape[-2:]
                inputs.append(F.interpolate(hidden[i + 1], size=size, mode="bilinear", align_corners=True))
            hidden[i] = self.gru(i)(hidden[i], torch.cat(inputs, dim=1), contexts[i])
        return hidden


class MaskPredictor(nn.Module):
    """Weights of the convex upsampling: 3x3 conv + ReLU, 1x1 conv to 9 * factor^2 channels, times 0.25."""

    def __init__(self, factor: int, multiplier: float = 0.25) -> None:
        super().__init__()
        self.convrelu = Conv2dNormActivation(128, 256, kernel_size=3, norm_layer=None)
        self.conv = nn.Conv2d(256, 9 * factor**2, kernel_size=1)
        self.multiplier = multiplier

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(self.convrelu(x)) * self.multiplier


def correlation_pyramid(left: Tensor, right: Tensor, num_levels: int) -> list[Tensor]:
    """Row-wise correlation volumes (B * H * W, 1, 1, W / 2^l) of all left and right pixel pairs of a row,
    divided by sqrt(C), average-pooled along the right image's axis for the coarser levels."""
    b, c, h, w = left.shape
    volume = torch.matmul(left.permute(0, 2, 3, 1), right.permute(0, 2, 1, 3)) / math.sqrt(c)
    volume = volume.reshape(b * h * w, 1, 1, w)
    pyramid = [volume]
    for _ in range(num_levels - 1):
        pyramid.append(F.avg_pool2d(pyramid[-1], kernel_size=(1, 2), stride=(1, 2)))
    return pyramid


def lookup(pyramid: list[Tensor], x: Tensor, radius: int) -> Tensor:
    """Correlation features (B, levels * (2r + 1), H, W): level l sampled at x / 2^l + d for d = -r..r
    (linear interpolation, zero outside), level-major; `x` is the (B, H, W) matching column in the right image."""
    b, h, w = x.shape
    offsets = torch.linspace(-radius, radius, 2 * radius + 1, device=x.device, dtype=x.dtype)
    samples = []
    for level, volume in enumerate(pyramid):
        columns = x.reshape(b * h * w, 1, 1, 1) / 2**level + offsets.view(1, 1, -1, 1)
        columns = 2 * columns / (volume.shape[-1] - 1) - 1
        grid = torch.cat([columns, torch.zeros_like(columns)], dim=-1)
        samples.append(F.grid_sample(volume.to(x.dtype), grid, mode="bilinear", align_corners=True))
    return torch.cat(samples, dim=-1).view(b, h, w, -1).permute(0, 3, 1, 2)


def _updating_running_stats_once(fn: Callable[..., Tensor], module: nn.Module) -> Callable[..., Tensor]:
    """`fn` for `checkpoint`: its recomputation in the backward pass normalises with the batch statistics as
    the first call did (the same operations, as checkpointing requires), but with momentum 0 and the count
    restored, so that the BatchNorm running statistics of `module` are updated once, not twice."""
    norms = [m for m in module.modules() if isinstance(m, nn.BatchNorm2d) and m.track_running_stats]
    calls = 0

    def run(*args: Tensor) -> Tensor:
        nonlocal calls
        calls += 1
        if calls == 1:
            return fn(*args)
        saved = [(norm.momentum, norm.num_batches_tracked.item()) for norm in norms]
        for norm in norms:
            norm.momentum = 0.0  # running = (1 - 0) * running + 0 * batch: unchanged
        try:
            return fn(*args)
        finally:
            for norm, (momentum, count) in zip(norms, saved):
                norm.momentum = momentum
                norm.num_batches_tracked.fill_(count)

    return run


def _check_aliases(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs) -> None:
    """The shared base encoder's entries appear under two names; both must hold the same tensors."""
    shared, alias = prefix + "feature_encoder.base_encoder.", prefix + "context_encoder.base_encoder."
    for key, value in state_dict.items():
        other = alias + key[len(shared):]
        if key.startswith(shared) and other in state_dict and not torch.equal(value, state_dict[other]):
            error_msgs.append(
                f"{key} and {other} differ, but they are one shared tensor (the base encoder of the feature and "
                "context encoders); the state dict is not from this architecture."
            )
            return


class RaftStereo(nn.Module):
    """RAFT-Stereo. `forward(left, right, flow_init=None, num_iters=12, *, return_all=True)` takes images
    normalised to [-1, 1], (B, 3, H, W) with H and W multiples of 16 and W at least 16 times the
    downsampling ratio, and returns one (B, 1, H, W) prediction per iteration (positive disparity in input
    pixels); the last one is the estimate.

    `flow_init` (B, 1 or 2, h, w) is a positive disparity (and vertical flow) in pixels of its own grid, as
    the previous cascade level returns it: it is resized to the feature grid and converted to the network's
    units and sign. `loss_gamma` is the sequence-loss decay of RAFT-Stereo's recipe.
    """

    output_channels = 1
    size_divisor = 16
    loss_gamma = 0.9
    corr_levels = 4
    corr_radius = 4

    def __init__(
        self,
        *,
        shared_encoder: bool,
        strides: tuple[int, int, int, int],
        out_with_blocks: list[bool],
        hidden_dims: list[int],
        slow_fast: bool,
        activation_checkpointing: bool = False,
    ) -> None:
        super().__init__()
        if len(out_with_blocks) != len(hidden_dims):
            raise ValueError("out_with_blocks and hidden_dims need one entry per GRU level.")
        self.activation_checkpointing = activation_checkpointing
        self.slow_fast = slow_fast
        self.shared_encoder = shared_encoder
        self.downsampling_ratio = 2 ** sum(s - 1 for s in strides)
        context_base = _base_encoder(strides, nn.BatchNorm2d)
        feature_base = context_base if shared_encoder else _base_encoder(strides, InstanceNorm2d)
        # A shared base encoder is registered under both names, as in the published layout.
        self.feature_encoder = FeatureEncoder(feature_base, shared_base=shared_encoder)
        self.context_encoder = ContextEncoder(context_base, out_with_blocks)
        self.update_block = UpdateBlock(hidden_dims)
        self.disparity_head = raft.FlowHead(in_channels=hidden_dims[0], hidden_size=256)
        self.mask_predictor = MaskPredictor(self.downsampling_ratio)
        self.context_convs = nn.ModuleList(nn.Conv2d(h, 3 * h, kernel_size=3, padding=1) for h in hidden_dims)
        if shared_encoder:
            self._register_load_state_dict_pre_hook(_check_aliases)

    def forward(
        self,
        left: Tensor,
        right: Tensor,
        flow_init: Tensor | None = None,
        num_iters: int = 12,
        *,
        return_all: bool = True,
    ) -> list[Tensor]:
        """`num_iters` predictions (B, 1, H, W), or only the last one when `return_all=False`."""
        self._check_inputs(left, right, flow_init, num_iters)
        features, contexts = self._encode(left, right)
        left_features, right_features = features.chunk(2, dim=0)
        hidden = [torch.tanh(h) for h, _ in contexts]
        gates = [tuple(conv(F.relu(c)).chunk(3, dim=1)) for conv, (_, c) in zip(self.context_convs, contexts)]
        pyramid = correlation_pyramid(left_features.float(), right_features.float(), self.corr_levels)

        b, _, h, w = left_features.shape
        ys, xs = torch.meshgrid(
            torch.arange(h, device=left.device, dtype=torch.float32),
            torch.arange(w, device=left.device, dtype=torch.float32),
            indexing="ij",
        )
        coords0 = torch.stack([xs, ys]).expand(b, 2, h, w).contiguous(memory_format=torch.channels_last)
        coords1 = coords0 if flow_init is None else coords0 + self._internal_flow(flow_init, (h, w))
        checkpointed = self.activation_checkpointing and torch.is_grad_enabled()
        predictions = []
        for it in range(num_iters):
            args = (pyramid, coords0, coords1.detach(), hidden, gates, return_all or it == num_iters - 1)
            if checkpointed:
                # Full recomputation: keeping the convolution outputs (selective checkpointing, as in CREStereo)
                # would keep about 140 MiB more in realtime, above 0.7x the peak of torchvision's prototype.
                with _uncached_autocast(left.device.type):
                    hidden, coords1, upsampled = checkpoint(self._iteration, *args, use_reentrant=False)
            else:
                hidden, coords1, upsampled = self._iteration(*args)
            if upsampled is not None:
                predictions.append(-upsampled)
        return predictions

    def _encode(self, left: Tensor, right: Tensor) -> tuple[Tensor, list[tuple[Tensor, Tensor]]]:
        """Matching features of [left; right] and the per-level (hidden, context) of the left image."""
        # channels_last from here on: oneDNN's convolutions run on it without reordering every input and output
        # (about 2x faster for the 64-channel full-resolution ones), and every layer after keeps the layout.
        images = torch.cat([left, right], dim=0).contiguous(memory_format=torch.channels_last)
        base = self._base_encoder(self.feature_encoder.base_encoder, images)
        features = self._checkpointed(self.feature_encoder.head, self.feature_encoder, base)
        encoder = self.context_encoder.base_encoder
        if not self.shared_encoder or any(m.training for m in encoder.modules() if isinstance(m, nn.BatchNorm2d)):
            # BatchNorm in train mode: the left image alone has other batch statistics, and the running
            # statistics are updated a second time, as in torchvision's prototype.
            context_base = self._base_encoder(encoder, images[: left.shape[0]])
        else:
            context_base = base[: left.shape[0]]
        return features, self._checkpointed(self.context_encoder.heads, self.context_encoder, context_base)

    def _base_encoder(self, encoder: raft.FeatureEncoder, x: Tensor) -> Tensor:
        """`encoder(x)` (its final convolution is the identity), one checkpointed segment per block."""
        for stage in (encoder.convnormrelu, *encoder.layer1, *encoder.layer2, *encoder.layer3):
            x = self._checkpointed(stage, stage, x)
        return x

    def _checkpointed(self, fn: Callable, module: nn.Module, x: Tensor):
        """`fn(x)` (a part of `module`), activation-checkpointed when checkpointing is on and gradients are
        recorded: the encoders hold most of the training step's activations (full resolution in base)."""
        if not (self.activation_checkpointing and torch.is_grad_enabled()):
            return fn(x)
        with _uncached_autocast(x.device.type):
            return checkpoint(_updating_running_stats_once(fn, module), x, use_reentrant=False)

    def _internal_flow(self, flow_init: Tensor, size: tuple[int, int]) -> Tensor:
        """`flow_init` as the network's initial flow: (B, 2, h, w) feature-grid units, negative disparity."""
        flow = flow_init.detach().float()
        if flow.shape[1] == 1:
            flow = torch.cat([flow, torch.zeros_like(flow)], dim=1)
        scale = torch.tensor(
            [-size[1] / flow.shape[3], -size[0] / flow.shape[2]], device=flow.device, dtype=flow.dtype
        ).view(1, 2, 1, 1)
        if tuple(flow.shape[-2:]) != size:
            flow = F.interpolate(flow, size=size, mode="bilinear", align_corners=True)
        return flow * scale

    def _iteration(
        self,
        pyramid: list[Tensor],
        coords0: Tensor,
        coords1: Tensor,
        hidden: list[Tensor],
        gates: list[tuple[Tensor, Tensor, Tensor]],
        upsample: bool,
    ) -> tuple[list[Tensor], Tensor, Tensor | None]:
        """One refinement step: (hidden states, coords1, full-resolution x displacement or None)."""
        corr = lookup(pyramid, coords1[:, 0], self.corr_radius)
        disparity = coords1 - coords0
        levels = len(hidden)
        if self.slow_fast:
            for n in range(1, levels):
                hidden = self.update_block(hidden, gates, corr, disparity, n)
        hidden = self.update_block(hidden, gates, corr, disparity, levels)
        head = self.disparity_head
        delta_x = F.conv2d(F.relu(head.conv1(hidden[0])), head.conv2.weight[:1], head.conv2.bias[:1], padding=1)
        # The head's vertical output is discarded: the vertical flow never changes.
        coords1 = coords1 + torch.cat([delta_x, torch.zeros_like(delta_x)], dim=1)
        if not upsample:
            return hidden, coords1, None
        mask = self.mask_predictor(hidden[0])
        flow_x = (coords1 - coords0)[:, :1]
        return hidden, coords1, convex_upsample(flow_x, mask, self.downsampling_ratio)

    def _check_inputs(self, left: Tensor, right: Tensor, flow_init: Tensor | None, num_iters: int) -> None:
        if left.dim() != 4 or left.shape[1] != 3 or left.shape != right.shape:
            raise ValueError(
                f"left and right must both be (B, 3, H, W) images of the same shape; got {tuple(left.shape)} "
                f"and {tuple(right.shape)}."
            )
        h, w = left.shape[-2:]
        d, min_w = self.size_divisor, 16 * self.downsampling_ratio
        if h % d or w % d or w < min_w:
            raise ValueError(
                f"Input size {h}x{w} is not supported: height and width must be multiples of {d}, and the width at "
                f"least {min_w} (the coarsest correlation level must be 2 pixels wide). Pad the images "
                f"(utils.padder.InputPadder) or resize them to e.g. {max(d, math.ceil(h / d) * d)}x"
                f"{max(min_w, math.ceil(w / d) * d)}."
            )
        if num_iters < 1:
            raise ValueError(f"num_iters must be at least 1 (got {num_iters}).")
        if flow_init is not None and (
            flow_init.dim() != 4 or flow_init.shape[0] != left.shape[0] or flow_init.shape[1] not in (1, 2)
        ):
            raise ValueError(f"flow_init must be ({left.shape[0]}, 1 or 2, h, w); got {tuple(flow_init.shape)}.")


def raft_stereo_base(*, activation_checkpointing: bool = False) -> RaftStereo:
    """RAFT-Stereo base as in torchvision (11,116,176 parameters): features at 1/4, GRUs at 1/4, 1/8, 1/16."""
    return RaftStereo(
        shared_encoder=False,
        strides=(1, 1, 2, 2),
        out_with_blocks=[True, True, False],
        hidden_dims=[128, 128, 128],
        slow_fast=False,
        activation_checkpointing=activation_checkpointing,
    )


def raft_stereo_realtime(*, activation_checkpointing: bool = False) -> RaftStereo:
    """RAFT-Stereo realtime as in torchvision (8,077,152 parameters): one shared base encoder, features at 1/8,
    GRUs at 1/8 and 1/16 with the slow-fast schedule (the 1/16 GRU runs twice per iteration)."""
    return RaftStereo(
        shared_encoder=True,
        strides=(2, 1, 2, 2),
        out_with_blocks=[True, True],
        hidden_dims=[128, 128],
        slow_fast=True,
        activation_checkpointing=activation_checkpointing,
    )

