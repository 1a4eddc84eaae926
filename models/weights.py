"""Published weights (torchvision's `CREStereo_Base_Weights`, `Raft_Stereo_Base_Weights` and
`Raft_Stereo_Realtime_Weights`) and loading of weights files.

Hub downloads go through `torch.hub.load_state_dict_from_url(..., check_hash=True)`; a file already in the hub
cache is used offline after its sha256 prefix is checked (torch.hub only checks fresh downloads).
"""

import hashlib
import os
import re
from functools import partial
from pathlib import Path
from urllib.error import URLError
from urllib.parse import urlparse

import torch
from torch import Tensor, nn
from torchvision.models import Weights, WeightsEnum
from torchvision.transforms import InterpolationMode

from utils.checkpoint import load_checkpoint, model_state_from_checkpoint
from utils.preprocessing import eval_input

# The inputs the weights expect, as the evaluation preset builds them.
EVAL_PRESET = {
    "resize_size": (384, 512), "interpolation": "bilinear", "antialias": False, "mean": (0.5,) * 3, "std": (0.5,) * 3
}

_METRIC_NAMES = ("mae", "rmse", "1px", "3px", "5px", "relepe", "fl-all")


class StereoEvalTransform(nn.Module):
    """Turn a (left, right) pair of images (..., 3, H, W), uint8 or float in [0, 1], into the network's input as
    the evaluation preset (``presets.StereoMatchingEvalPreset``) builds it, through the same
    ``utils.preprocessing.eval_input``: to float in [0, 1], resized to ``resize_size`` (no antialiasing),
    normalised with ``mean`` and ``std``."""

    def __init__(self, resize_size, interpolation, antialias, mean, std) -> None:
        super().__init__()
        if antialias:
            raise ValueError("The evaluation input is resized without antialias; pass antialias=False")
        self.resize_size = list(resize_size)
        self.interpolation = InterpolationMode(interpolation)
        self.mean, self.std = list(mean), list(std)

    def forward(self, left: Tensor, right: Tensor) -> tuple[Tensor, Tensor]:
        return tuple(eval_input(image, self.resize_size, self.interpolation, self.mean, self.std)
                     for image in (left, right))


def _metrics(rows: list[tuple]) -> dict:
    """Middlebury 2014 train metrics: headline (1 cascade, 10 iterations) and `_detailed[cascades][iters]`."""
    detailed: dict = {}
    for cascades, iters, *values in rows:
        detailed.setdefault(cascades, {})[iters] = dict(zip(_METRIC_NAMES, values))
    return {"Middlebury2014-train": {**detailed[1][10], "_detailed": detailed}}


def _meta(docs: str, recipe: str, rows: list[tuple]) -> dict:
    return {
        "num_params": 5432948,
        "recipe": recipe,
        "resize_size": EVAL_PRESET["resize_size"],
        "eval_preset": EVAL_PRESET,
        "_metrics": _metrics(rows),
        "_docs": docs,
    }


_REFERENCES = "https://github.com/pytorch/vision/tree/main/references/depth/stereo"


class CREStereo_Base_Weights(WeightsEnum):
    MEGVII_V1 = Weights(
        url="https://download.pytorch.org/models/crestereo-756c8b0f.pth",
        transforms=partial(StereoEvalTransform, **EVAL_PRESET),
        meta=_meta(
            "Ported from the original paper's implementation, trained on the authors' dataset mixture.",
            "https://github.com/megvii-research/CREStereo",
            [
                (1, 2, 1.704, 3.738, 0.738, 0.896, 0.933, 0.157, 76.464),
                (1, 5, 0.956, 2.963, 0.88, 0.948, 0.965, 0.124, 88.186),
                (1, 10, 0.792, 2.765, 0.905, 0.958, 0.97, 0.114, 90.429),
                (1, 20, 0.749, 2.706, 0.907, 0.961, 0.972, 0.113, 90.807),
                (2, 2, 1.702, 3.784, 0.784, 0.894, 0.924, 0.172, 80.313),
                (2, 5, 0.932, 2.907, 0.877, 0.944, 0.963, 0.125, 87.979),
                (2, 10, 0.773, 2.768, 0.901, 0.958, 0.972, 0.117, 90.43),
                (2, 20, 0.854, 2.971, 0.9, 0.957, 0.97, 0.122, 90.269),
            ],
        ),
    )
    CRESTEREO_ETH_MBL_V1 = Weights(
        url="https://download.pytorch.org/models/crestereo-8f0e0e9a.pth",
        transforms=partial(StereoEvalTransform, **EVAL_PRESET),
        meta=_meta(
            "Trained from scratch on CREStereo + Middlebury 2014 + ETH3D.",
            _REFERENCES,
            [
                (1, 2, 2.363, 4.352, 0.611, 0.828, 0.891, 0.176, 64.511),
                (1, 5, 1.618, 3.71, 0.761, 0.879, 0.918, 0.154, 77.128),
                (1, 10, 1.416, 3.53, 0.777, 0.896, 0.933, 0.148, 78.388),
                (1, 20, 1.448, 3.583, 0.771, 0.893, 0.931, 0.145, 77.7),
                (2, 2, 1.972, 4.125, 0.73, 0.865, 0.908, 0.169, 74.396),
                (2, 5, 1.403, 3.448, 0.793, 0.905, 0.937, 0.151, 80.186),
                (2, 10, 1.312, 3.368, 0.799, 0.912, 0.943, 0.148, 80.379),
                (2, 20, 1.376, 3.542, 0.796, 0.91, 0.942, 0.149, 80.054),
            ],
        ),
    )
    CRESTEREO_FINETUNE_MULTI_V1 = Weights(
        url="https://download.pytorch.org/models/crestereo-697c38f4.pth",
        transforms=partial(StereoEvalTransform, **EVAL_PRESET),
        meta=_meta(
            "Fine-tuned on CREStereo + Middlebury 2014 + ETH3D + InStereo2k + Carla + Sintel + FallingThings.",
            _REFERENCES,
            [
                (1, 2, 1.85, 3.797, 0.673, 0.862, 0.917, 0.171, 69.736),
                (1, 5, 1.111, 3.166, 0.838, 0.93, 0.957, 0.134, 84.596),
                (1, 10, 1.02, 3.073, 0.854, 0.938, 0.96, 0.129, 86.042),
                (1, 20, 0.993, 3.059, 0.855, 0.942, 0.967, 0.126, 85.784),
                (2, 2, 1.667, 3.867, 0.78, 0.891, 0.922, 0.165, 78.89),
                (2, 5, 1.158, 3.278, 0.843, 0.926, 0.955, 0.135, 84.556),
                (2, 10, 1.046, 3.13, 0.85, 0.934, 0.96, 0.13, 85.464),
                (2, 20, 1.021, 3.102, 0.85, 0.935, 0.963, 0.129, 85.417),
            ],
        ),
    )
    DEFAULT = MEGVII_V1



_RAFT_STEREO_RECIPE = "https://github.com/princeton-vl/RAFT-Stereo"
_RAFT_STEREO_DOCS = (
    "Ported from the original paper's implementation. torchvision attached a 224x224 resize to these weights "
    "(which distorts aspect ratio and disparity); they carry the evaluation preset of the other weights here."
)


def _raft_meta(num_params: int, metrics: dict, docs: str) -> dict:
    return {
        "num_params": num_params,
        "recipe": _RAFT_STEREO_RECIPE,
        "resize_size": EVAL_PRESET["resize_size"],
        "eval_preset": EVAL_PRESET,
        "_metrics": metrics,
        "_docs": f"{docs} {_RAFT_STEREO_DOCS}",
    }


class Raft_Stereo_Realtime_Weights(WeightsEnum):
    SCENEFLOW_V1 = Weights(
        url="https://download.pytorch.org/models/raft_stereo_realtime-cf345ccb.pth",
        transforms=partial(StereoEvalTransform, **EVAL_PRESET),
        meta=_raft_meta(8077152, {"KITTI2015": {"3px": 0.9409}}, "Trained on SceneFlow."),
    )
    DEFAULT = SCENEFLOW_V1


class Raft_Stereo_Base_Weights(WeightsEnum):
    SCENEFLOW_V1 = Weights(
        url="https://download.pytorch.org/models/raft_stereo_base_sceneflow-eff3f2e6.pth",
        transforms=partial(StereoEvalTransform, **EVAL_PRESET),
        meta=_raft_meta(
            11116176,
            {
                "KITTI2015": {"3px": 0.9426},
                "Middlebury2014-val-full": {"2px": 0.8167},
                "Middlebury2014-val-half": {"2px": 0.8741},
                "Middlebury2014-val-quarter": {"2px": 0.9064},
                "ETH3D-val": {"1px": 0.9672},
            },
            "Trained on SceneFlow.",
        ),
    )
    MIDDLEBURY_V1 = Weights(
        url="https://download.pytorch.org/models/raft_stereo_base_middlebury-afa9d252.pth",
        transforms=partial(StereoEvalTransform, **EVAL_PRESET),
        meta=_raft_meta(
            11116176,
            {"Middlebury-test": {"mae": 1.27, "1px": 0.9063, "2px": 0.9526, "5px": 0.9725}},
            "Trained on SceneFlow, fine-tuned on Middlebury.",
        ),
    )
    ETH3D_V1 = Weights(
        url="https://download.pytorch.org/models/raft_stereo_base_eth3d-d4830f22.pth",
        transforms=partial(StereoEvalTransform, **EVAL_PRESET),
        meta=_raft_meta(
            11116176,
            {"ETH3D-test": {"mae": 0.18, "1px": 0.9756, "2px": 0.9956}},
            "Trained on SceneFlow, fine-tuned on ETH3D.",
        ),
    )
    DEFAULT = MIDDLEBURY_V1


_HASH_PREFIX = re.compile(r"-([a-f0-9]*)\.")


def state_dict_from_hub(weights: WeightsEnum, progress: bool = True) -> dict:
    """Download (or take from the hub cache) and read the state dict of a published weights entry."""
    filename = os.path.basename(urlparse(weights.url).path)
    cached = Path(torch.hub.get_dir()) / "checkpoints" / filename
    match = _HASH_PREFIX.search(filename)
    if cached.is_file() and match:
        digest = hashlib.sha256(cached.read_bytes()).hexdigest()
        if not digest.startswith(match.group(1)):
            cached.unlink()
            raise RuntimeError(
                f"The cached weights file {cached} is corrupt (sha256 {digest[:12]}... does not start with "
                f"{match.group(1)}); it has been removed. Run again to download it anew."
            )
    try:
        return torch.hub.load_state_dict_from_url(
            weights.url, map_location="cpu", progress=progress, check_hash=True, weights_only=True
        )
    except URLError as e:
        raise RuntimeError(
            f"Cannot download {weights.url} ({e.reason}). Without network access, copy the file to {cached}."
        ) from None


def state_dict_from_file(path: str | os.PathLike, model_name: str) -> dict:
    """Model weights from a local `.pth`: a raw state dict or one of our training checkpoints."""
    from . import canonical_name

    state_dict, trained_as = model_state_from_checkpoint(load_checkpoint(path))
    if trained_as is not None and canonical_name(trained_as) != canonical_name(model_name):
        raise ValueError(f"{path} holds weights of model '{trained_as}', not '{model_name}'.")
    return state_dict


# State-dict entries a model recomputes from its configuration: CREStereo's 64 MB positional-encoding table
# (1x256x256x256 float32, a fixed sinusoid). Training checkpoints leave them out; `python -m models.export_weights`
# writes them back for consumers of torchvision's layout; `load_checked` accepts files with or without them.
DERIVED_KEYS = ("positional_encodings.pe",)


def compact_state_dict(model: nn.Module) -> dict:
    """`model.state_dict()` without the `DERIVED_KEYS` entries: what our training checkpoints store."""
    return {k: v for k, v in model.state_dict().items() if not k.endswith(DERIVED_KEYS)}


def load_checked(model: nn.Module, state_dict: dict, source: str) -> None:
    """`model.load_state_dict(state_dict, strict=True)`, failing first with a short message naming the first
    missing, unexpected or mismatched keys. The positional-encoding table is optional."""
    expected = {k: v.shape for k, v in model.state_dict(keep_vars=True).items()}
    optional = {k for k in expected if k.endswith(DERIVED_KEYS)}
    missing = [k for k in expected if k not in state_dict and k not in optional]
    unexpected = [k for k in state_dict if k not in expected]
    mismatched = [
        f"{k} (file {tuple(v.shape)}, model {tuple(expected[k])})"
        for k, v in state_dict.items()
        if k in expected and isinstance(v, Tensor) and v.shape != expected[k]
    ]
    problems = [
        f"{len(keys)} {what} (first: {', '.join(keys[:3])})"
        for what, keys in (
            ("missing keys", missing), ("unexpected keys", unexpected), ("keys with another shape", mismatched)
        )
        if keys
    ]
    if problems:
        what = (
            "it holds the weights of another architecture or configuration; pick the matching model"
            if unexpected or mismatched
            else "it holds only part of the weights (a partial state dict)"
        )
        raise ValueError(f"{source} does not fit {type(model).__name__}: {'; '.join(problems)}: {what}.")
    model.load_state_dict(state_dict, strict=True)
