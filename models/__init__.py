"""Stereo networks, their registry and their published weights.

`get_model("crestereo_base", weights="CREStereo_Base_Weights.MEGVII_V1")` builds a network and loads weights given
as an enum member, its name (`"MEGVII_V1"`, `"DEFAULT"` or the full `"Enum.MEMBER"`), or a local `.pth` path (a raw
state dict or one of our training checkpoints).
"""

import os
from collections.abc import Callable
from pathlib import Path

from torch import nn
from torchvision.models import WeightsEnum

from .crestereo import CREStereo, crestereo_base
from .weights import CREStereo_Base_Weights, load_checked, state_dict_from_file, state_dict_from_hub

__all__ = ["CREStereo", "CREStereo_Base_Weights", "crestereo_base", "get_model", "get_weight", "list_models"]

_MODELS: dict[str, tuple[Callable[..., nn.Module], type[WeightsEnum]]] = {
    "crestereo_base": (crestereo_base, CREStereo_Base_Weights),
}
_WEIGHTS: dict[str, type[WeightsEnum]] = {enum.__name__: enum for _, enum in _MODELS.values()}


def list_models() -> list[str]:
    """Names accepted by `get_model`."""
    return sorted(_MODELS)


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
    if name not in _MODELS:
        raise ValueError(f"Unknown model '{name}'. Valid names: {', '.join(list_models())}.")
    builder, enum = _MODELS[name]
    if isinstance(weights, (str, os.PathLike)) and _looks_like_path(weights):
        path = Path(weights)
        if not path.is_file():
            raise FileNotFoundError(f"Weights file {path} does not exist.")
        model = builder(**kwargs)
        load_checked(model, state_dict_from_file(path, name), str(path))
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
        load_checked(model, state_dict_from_hub(weights, progress=progress), weights.url)
    return model
