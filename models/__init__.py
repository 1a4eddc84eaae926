"""Stereo networks, their registry and their published weights.

`get_model("crestereo_base", weights="CREStereo_Base_Weights.MEGVII_V1")` builds a network and loads weights given
as an enum member, its name (`"MEGVII_V1"`, `"DEFAULT"` or the full `"Enum.MEMBER"`), or a local `.pth` path (a raw
state dict or one of our training checkpoints). Models: `crestereo_base`, `raft_stereo_base`,
`raft_stereo_realtime`, and `raft_stereo` (an alias of `raft_stereo_base`, torchvision's flag value).

Every model follows one contract: `model(left, right, flow_init=None, num_iters=N, return_all=True)` returns a list
of `(B, C, H, W)` predictions whose channel 0 is the positive disparity in input pixels, `flow_init` is such a
prediction (any resolution), `model.size_divisor` is what H and W must be multiples of, and `model.loss_gamma` is
the sequence-loss decay of the model's own recipe.
"""

import os
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn
from torchvision.models import WeightsEnum

from .crestereo import CREStereo, crestereo_base
from .raft_stereo import RaftStereo, raft_stereo_base, raft_stereo_realtime
from .weights import CREStereo_Base_Weights, Raft_Stereo_Base_Weights, Raft_Stereo_Realtime_Weights
from .weights import load_checked, state_dict_from_file, state_dict_from_hub

__all__ = [
    "CREStereo",
    "CREStereo_Base_Weights",
    "RaftStereo",
    "Raft_Stereo_Base_Weights",
    "Raft_Stereo_Realtime_Weights",
    "crestereo_base",
    "raft_stereo_base",
    "raft_stereo_realtime",
    "canonical_name",
    "check_architecture",
    "get_model",
    "get_weight",
    "list_models",
    "load_checked",
]

_MODELS: dict[str, tuple[Callable[..., nn.Module], type[WeightsEnum]]] = {
    "crestereo_base": (crestereo_base, CREStereo_Base_Weights),
    "raft_stereo_base": (raft_stereo_base, Raft_Stereo_Base_Weights),
    "raft_stereo_realtime": (raft_stereo_realtime, Raft_Stereo_Realtime_Weights),
}
_ALIASES = {"raft_stereo": "raft_stereo_base"}
_WEIGHTS: dict[str, type[WeightsEnum]] = {enum.__name__: enum for _, enum in _MODELS.values()}


def list_models() -> list[str]:
    """Names accepted by `get_model`."""
    return sorted([*_MODELS, *_ALIASES])


def canonical_name(name: str) -> str:
    """The registered name behind an alias (`raft_stereo` -> `raft_stereo_base`); other names unchanged."""
    return _ALIASES.get(name, name)


def check_architecture(name: str, state_dict: dict, source: str) -> None:
    """Fail with the model to use when `state_dict` is exactly the layout of another registered model (e.g.
    CREStereo weights given to a RAFT-Stereo model), before the model is built."""
    name = canonical_name(name)
    with torch.device("meta"):
        expected = set(_MODELS[name][0]().state_dict())
    keys = set(state_dict)
    if keys <= expected and len(expected - keys) <= 1:  # tolerate one optional buffer (positional encoding)
        return
    for other, (builder, _) in _MODELS.items():
        if other == name:
            continue
        with torch.device("meta"):
            layout = set(builder().state_dict())
        if keys <= layout and len(layout - keys) <= 1:
            raise ValueError(f"{source} holds {other} weights, not {name}; pass --model {other}.")


def _weight_names() -> list[str]:
    return [f"{name}.{member}" for name, enum in _WEIGHTS.items() for member in enum.__members__]


def get_weight(name: str) -> WeightsEnum:
    """The weights entry called `"Enum.MEMBER"`, e.g. `"CREStereo_Base_Weights.MEGVII_V1"`."""
    enum_name, _, member = name.partition(".")
    enum = _WEIGHTS.get(enum_name)
    if enum is None or member not in enum.__members__:
        raise ValueError(f"Unknown weights '{name}'. Valid names: {', '.join(_weight_names())}.")
    return enum[member]


def _looks_like_path(weights: str | os.PathLike) -> bool:
    return isinstance(weights, os.PathLike) or weights.endswith((".pth", ".pt")) or os.sep in weights


def get_model(
    name: str, weights: WeightsEnum | str | os.PathLike | None = None, progress: bool = True, **kwargs
) -> nn.Module:
    """Build model `name` (see `list_models()`); `weights` as described in the module docstring; `kwargs` go to
    the builder (e.g. `activation_checkpointing=True`)."""
    name = canonical_name(name)
    if name not in _MODELS:
        raise ValueError(f"Unknown model '{name}'. Valid names: {', '.join(list_models())}.")
    builder, enum = _MODELS[name]
    if isinstance(weights, (str, os.PathLike)) and _looks_like_path(weights):
        path = Path(weights)
        if not path.is_file():
            raise FileNotFoundError(f"Weights file {path} does not exist.")
        state_dict = state_dict_from_file(path, name)
        check_architecture(name, state_dict, str(path))
        model = builder(**kwargs)
        load_checked(model, state_dict, str(path))
        return model
    if isinstance(weights, str):
        member = weights.removeprefix(enum.__name__ + ".")
        if member not in enum.__members__:
            raise ValueError(
                f"Unknown weights '{weights}' for {name}. Valid names: "
                f"{', '.join(f'{enum.__name__}.{m}' for m in enum.__members__)}, or a path to a .pth file."
            )
        weights = enum[member]
    model = builder(**kwargs)
    if weights is not None:
        state_dict = state_dict_from_hub(weights, progress=progress)
        check_architecture(name, state_dict, weights.url)
        load_checked(model, state_dict, weights.url)
    return model
