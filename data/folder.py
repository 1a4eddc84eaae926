"""Your own stereo data as a dataset: the registry name ``folder:ROOT`` in every script that takes one.

Layout (files are paired by name, i.e. the file name without its extension)::

    ROOT/left/<name>.<ext>             left images, any format torchvision or Pillow decodes
    ROOT/right/<name>.<ext>            right images
    ROOT/disparity/<name>.<ext>        optional: left-view disparity, .pfm, .png or .npy
    ROOT/disparity_right/<name>.<ext>  optional: right-view disparity
    ROOT/valid/<name>.png              optional: ground-truth mask, non-zero = valid
    ROOT/dataset.json                  optional: how the disparities are stored (``FolderSettings``)

Disparity files: PFM float (non-finite = invalid), 16-bit PNG holding ``disparity * 256`` with 0 = invalid
(KITTI's convention), ``.npy`` float arrays ``(H, W)`` (non-finite = invalid), or what ``dataset.json`` says.
Non-positive disparities are always invalid (the sample contract of docs/architecture.md).

Everything that can be checked without decoding the pixels is checked when the dataset is built: pairing
of every folder, equal sizes within a pair (image headers, PFM headers, ``.npy`` headers), that each
disparity file is of a format that decodes and that ``dataset.json`` holds only known keys and encodings.
"""

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Union

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from .io import image_size, pfm_size, read_image, read_pfm, read_png16, valid_disparity, write_pfm

SUBFOLDERS = ("left", "right", "disparity", "disparity_right", "valid")
ENCODINGS = {"pfm": ".pfm", "png16": ".png", "npy": ".npy"}
DEFAULT_SCALE = {"pfm": 1.0, "png16": 256.0, "npy": 1.0}
SETTINGS_FILE = "dataset.json"
LAYOUT = (
    "left/<name>.<ext>, right/<name>.<ext>, optional disparity/<name>.{pfm,png,npy}, "
    "disparity_right/<name>.{pfm,png,npy}, valid/<name>.png, dataset.json"
)
_SHOWN = 5  # how many unpaired names an error lists


@dataclass(frozen=True)
class FolderSettings:
    """The keys ``ROOT/dataset.json`` may hold (all optional).

    - ``encoding``: ``"pfm"``, ``"png16"`` or ``"npy"``; default: each file's extension decides.
    - ``disparity_scale``: stored value = disparity x scale (default 256 for PNG, 1 for PFM and .npy).
    - ``invalid_value``: the stored value that marks "no ground truth" (besides non-finite and <= 0).
    - ``sparse``: the ground truth is sparse (LiDAR-like), so resizing treats it as KITTI's.
    - ``description``: free text.
    """

    encoding: Optional[str] = None
    disparity_scale: Optional[float] = None
    invalid_value: Optional[float] = None
    sparse: bool = False
    description: str = ""


def read_settings(root: Union[str, Path]) -> FolderSettings:
    """``ROOT/dataset.json`` checked key by key (defaults when the file is absent); ``ValueError`` if it is bad."""
    path = Path(root) / SETTINGS_FILE
    if not path.is_file():
        return FolderSettings()
    try:
        raw = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise ValueError(f"{path} is not valid JSON: {e}") from None
    if not isinstance(raw, dict):
        raise ValueError(f"{path} must hold a JSON object such as {{\"disparity_scale\": 256, \"sparse\": true}}")
    known = list(FolderSettings.__dataclass_fields__)
    unknown = sorted(set(raw) - set(known))
    if unknown:
        raise ValueError(f"{path}: unknown key(s) {', '.join(unknown)}; known keys: {', '.join(known)}")
    encoding = raw.get("encoding")
    if encoding is not None and encoding not in ENCODINGS:
        raise ValueError(f"{path}: unknown encoding {encoding!r}; choose one of {', '.join(ENCODINGS)}")
    scale, invalid = raw.get("disparity_scale"), raw.get("invalid_value")
    if scale is not None and (isinstance(scale, bool) or not isinstance(scale, (int, float)) or scale <= 0):
        raise ValueError(f"{path}: disparity_scale must be a positive number, got {scale!r}")
    if invalid is not None and (isinstance(invalid, bool) or not isinstance(invalid, (int, float))):
        raise ValueError(f"{path}: invalid_value must be a number, got {invalid!r}")
    if not isinstance(raw.get("sparse", False), bool):
        raise ValueError(f"{path}: sparse must be true or false, got {raw['sparse']!r}")
    return FolderSettings(
        encoding, None if scale is None else float(scale), None if invalid is None else float(invalid),
        raw.get("sparse", False), str(raw.get("description", "")),
    )


def _files(folder: Path) -> dict[str, Path]:
    """The non-hidden files of ``folder`` keyed by name without extension; two files of one name are refused."""
    files: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or not path.is_file():
            continue
        if path.stem in files:
            raise ValueError(f"{files[path.stem]} and {path} have the same name; keep one file per name in {folder}")
        files[path.stem] = path
    return files


def _unpaired(names: set[str], here: str, there: str) -> str:
    shown = ", ".join(sorted(names)[:_SHOWN]) + (", ..." if len(names) > _SHOWN else "")
    return f"{len(names)} name(s) in {here}/ have no file in {there}/: {shown}"


class FolderStereo(Dataset):
    """Stereo pairs in the folder layout of the module docstring, following the sample contract."""

    def __init__(self, root: Union[str, Path], transforms: Optional[Callable] = None) -> None:
        self.root = Path(root).expanduser()
        self.transforms = transforms
        self.settings = read_settings(self.root)
        for required in ("left", "right"):
            if not (self.root / required).is_dir():
                raise FileNotFoundError(f"folder dataset {self.root} has no {required}/ folder. Layout: {LAYOUT}")
        folders = {sub: _files(self.root / sub) for sub in SUBFOLDERS if (self.root / sub).is_dir()}
        names = set(folders["left"])
        if not names:
            raise FileNotFoundError(f"folder dataset {self.root}: left/ is empty. Layout: {LAYOUT}")
        for sub, files in folders.items():
            if sub == "left":
                continue
            if names - set(files):
                raise ValueError(f"folder dataset {self.root}: {_unpaired(names - set(files), 'left', sub)}")
            if set(files) - names:
                raise ValueError(f"folder dataset {self.root}: {_unpaired(set(files) - names, sub, 'left')}")
        self.names = sorted(names)
        self._images = [(folders["left"][n], folders["right"][n]) for n in self.names]
        self._disparities = [
            tuple(folders[sub][n] if sub in folders else None for sub in ("disparity", "disparity_right"))
            for n in self.names
        ]
        self._valid = [folders["valid"][n] if "valid" in folders else None for n in self.names]
        for index in range(len(self.names)):
            self._check_sizes(index)

    @property
    def has_gt(self) -> bool:
        return self._disparities[0][0] is not None

    def __len__(self) -> int:
        return len(self.names)

    def _encoding(self, path: Path) -> str:
        """The encoding of one disparity file, from dataset.json or its extension."""
        by_suffix = {suffix: name for name, suffix in ENCODINGS.items()}
        encoding = self.settings.encoding or by_suffix.get(path.suffix.lower())
        if encoding is None or path.suffix.lower() != ENCODINGS[encoding]:
            expected = ENCODINGS[self.settings.encoding] if self.settings.encoding else ", ".join(ENCODINGS.values())
            raise ValueError(f"cannot decode disparity file {path}: expected {expected} (see {SETTINGS_FILE})")
        return encoding

    def _disparity_size(self, path: Path) -> tuple[int, int]:
        """``(H, W)`` from the header of a disparity file, checking that it is of a kind that decodes."""
        encoding = self._encoding(path)
        if encoding == "pfm":
            return pfm_size(path)
        if encoding == "npy":
            try:
                array = np.load(path, mmap_mode="r", allow_pickle=False)
            except (ValueError, OSError) as e:
                raise ValueError(f"cannot decode disparity file {path}: {e}") from None
            if array.dtype.kind not in "fiu" or not (array.ndim == 2 or (array.ndim == 3 and array.shape[0] == 1)):
                raise ValueError(f"disparity file {path} must hold a (H, W) number array, got {array.dtype} "
                                 f"{tuple(array.shape)}")
            return tuple(array.shape[-2:])
        try:
            with Image.open(path) as image:
                mode, (width, height) = image.mode, image.size
        except (OSError, ValueError, SyntaxError) as e:
            raise ValueError(f"cannot decode disparity file {path}: {e}") from None
        if mode not in ("I;16", "I;16B", "I;16L", "I", "L"):
            raise ValueError(f"disparity PNG {path} must be single-channel (16-bit), found mode {mode}")
        return height, width

    def _check_sizes(self, index: int) -> None:
        left, right = self._images[index]
        sizes = {left: image_size(left), right: image_size(right)}
        for path in self._disparities[index]:
            if path is not None:
                sizes[path] = self._disparity_size(path)
        if self._valid[index] is not None:
            sizes[self._valid[index]] = image_size(self._valid[index])
        if len(set(sizes.values())) > 1:
            shown = ", ".join(f"{p.relative_to(self.root)} {h}x{w}" for p, (h, w) in sizes.items())
            raise ValueError(f"folder dataset {self.root}: pair {self.names[index]!r} mixes sizes: {shown}")

    def _decode(self, path: Path) -> torch.Tensor:
        """Stored values of a disparity file as float32 ``(1, H, W)``."""
        encoding = self._encoding(path)
        if encoding == "pfm":
            return read_pfm(path)
        if encoding == "png16":
            return read_png16(path).unsqueeze(0)
        try:
            array = np.load(path, allow_pickle=False)
        except (ValueError, OSError) as e:
            raise ValueError(f"cannot decode disparity file {path}: {e}") from None
        return torch.from_numpy(np.asarray(array, dtype=np.float32).reshape(1, *array.shape[-2:]))

    def _read_disparity(self, path: Optional[Path], valid_path: Optional[Path]):
        if path is None:
            return None, None
        stored = self._decode(path)
        invalid = ~torch.isfinite(stored)
        if self.settings.invalid_value is not None:
            invalid |= stored == self.settings.invalid_value
        scale = self.settings.disparity_scale or DEFAULT_SCALE[self._encoding(path)]
        disparity, valid = valid_disparity((stored / scale).masked_fill_(invalid, math.nan))
        if valid_path is not None:
            valid &= read_png16(valid_path) != 0
            disparity[0].masked_fill_(~valid, 0.0)
        return disparity, valid

    def __getitem__(self, index: int):
        left_path, right_path = self._images[index]
        images = (read_image(left_path), read_image(right_path))
        left_disparity, right_disparity = self._disparities[index]
        (d0, m0) = self._read_disparity(left_disparity, self._valid[index])
        (d1, m1) = self._read_disparity(right_disparity, None)
        if self.transforms is not None:
            return self.transforms(images, (d0, d1), (m0, m1))
        return images, (d0, d1), (m0, m1)


def write_folder_sample(root: Union[str, Path], name: str, images, disparities) -> None:
    """Write one sample into the folder layout: PNG images and PFM disparities (``None`` ones skipped)."""
    root = Path(root)
    for sub, image in zip(("left", "right"), images):
        (root / sub).mkdir(parents=True, exist_ok=True)
        Image.fromarray(image.permute(1, 2, 0).numpy()).save(root / sub / f"{name}.png")
    for sub, disparity in zip(("disparity", "disparity_right"), disparities):
        if disparity is not None:
            (root / sub).mkdir(parents=True, exist_ok=True)
            write_pfm(root / sub / f"{name}.pfm", disparity)

