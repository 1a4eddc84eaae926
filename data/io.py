"""File formats of the stereo datasets: images, PFM and the datasets' disparity encodings.

Every reader returns torch tensors and raises ``ValueError`` naming the file when it is corrupt or truncated.
Disparity decoders return a float32 ``(1, H, W)`` map; they do not decide validity (``valid_disparity`` does).
"""

import json
import math
import os
from pathlib import Path
from typing import Union

import numpy as np
import torch
from PIL import Image
from torchvision.io import ImageReadMode, decode_image

PathLike = Union[str, os.PathLike]


def _decode(path: PathLike, mode: ImageReadMode) -> torch.Tensor:
    try:
        return decode_image(str(path), mode=mode)
    except FileNotFoundError:
        raise
    except (RuntimeError, ValueError, OSError) as e:
        raise ValueError(f"Cannot decode image file {path} (corrupt or truncated?): {e}") from e


def read_image(path: PathLike) -> torch.Tensor:
    """RGB image as uint8 ``(3, H, W)`` (grayscale and RGBA are converted).

    torchvision.io decodes PNG, JPEG, GIF and WebP; other formats Pillow knows (BMP, TIFF, PPM, ...) are
    decoded with Pillow, so that any image a user has can be read.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Image file not found: {path}")
    try:
        return _decode(path, ImageReadMode.RGB)
    except ValueError as torchvision_error:
        try:
            with Image.open(path) as image:
                rgb = np.asarray(image.convert("RGB"))
        except (OSError, ValueError, SyntaxError):
            raise torchvision_error from None
        return torch.from_numpy(rgb.copy()).permute(2, 0, 1).contiguous()


def image_size(path: PathLike) -> tuple[int, int]:
    """``(H, W)`` of an image from its header only (Pillow opens lazily); ``ValueError`` if it is no image."""
    try:
        with Image.open(path) as image:
            width, height = image.size
    except FileNotFoundError:
        raise
    except (OSError, ValueError, SyntaxError) as e:
        raise ValueError(f"Cannot decode image file {path}: {e}") from e
    return height, width


def read_png16(path: PathLike) -> torch.Tensor:
    """Single-channel 8- or 16-bit PNG as float32 ``(H, W)`` holding the raw integer values."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"File not found: {path}")
    img = _decode(path, ImageReadMode.UNCHANGED)
    if img.shape[0] != 1:
        raise ValueError(f"Expected a single-channel PNG in {path}, found {img.shape[0]} channels")
    return img[0].to(torch.float32)


def _pfm_header(f, path: PathLike) -> tuple[int, int, int, float]:
    """``(height, width, channels, scale)`` from the three header lines of an open PFM file."""
    try:
        header = f.readline().strip()
        dims = f.readline().split()
        scale = float(f.readline().strip())
        width, height = int(dims[0]), int(dims[1])
    except (ValueError, IndexError) as e:
        raise ValueError(f"Corrupt PFM header in {path}") from e
    if header not in (b"PF", b"Pf") or len(dims) != 2 or width <= 0 or height <= 0:
        raise ValueError(f"Corrupt PFM header in {path}: expected 'PF' or 'Pf' then 'W H'")
    return height, width, 3 if header == b"PF" else 1, scale


def pfm_size(path: PathLike) -> tuple[int, int]:
    """``(H, W)`` of a PFM file from its header."""
    with open(path, "rb") as f:
        return _pfm_header(f, path)[:2]


def read_pfm(path: PathLike) -> torch.Tensor:
    """First channel of a PFM file as float32 ``(1, H, W)``, top row first (PFM stores rows bottom-up)."""
    with open(path, "rb") as f:
        height, width, channels, scale = _pfm_header(f, path)
        dtype = np.dtype("<f4") if scale < 0 else np.dtype(">f4")
        count = width * height * channels
        data = np.fromfile(f, dtype=dtype, count=count)
    if data.size != count:
        raise ValueError(f"Truncated PFM file {path}: expected {count} values, found {data.size}")
    data = data.reshape(height, width, channels)[::-1, :, 0]
    return torch.from_numpy(data.astype(np.float32)).unsqueeze(0)


def write_pfm(path: PathLike, disparity: Union[torch.Tensor, np.ndarray]) -> None:
    """Write a single-channel float32 map of shape ``(H, W)`` or ``(1, H, W)`` as little-endian PFM."""
    array = disparity.detach().cpu().numpy() if isinstance(disparity, torch.Tensor) else np.asarray(disparity)
    if array.ndim == 3 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != 2:
        raise ValueError(f"write_pfm expects a (H, W) or (1, H, W) map, got shape {tuple(array.shape)}")
    height, width = array.shape
    with open(path, "wb") as f:
        f.write(f"Pf\n{width} {height}\n-1.0\n".encode("ascii"))
        f.write(np.ascontiguousarray(array[::-1], dtype="<f4").tobytes())


def read_png_disparity(path: PathLike, divisor: float) -> torch.Tensor:
    """16-bit PNG disparity stored as ``value * divisor`` (KITTI: 256, CREStereo: 32, InStereo2K: 100)."""
    return (read_png16(path) / divisor).unsqueeze(0)


def read_sintel_disparity(path: PathLike) -> torch.Tensor:
    """Sintel's RGB-encoded disparity: ``d = R * 4 + G / 2**6 + B / 2**14`` (from the dataset's README)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"File not found: {path}")
    rgb = _decode(path, ImageReadMode.RGB).to(torch.float64)
    disparity = rgb[0] * 4 + rgb[1] / 2**6 + rgb[2] / 2**14
    return disparity.to(torch.float32).unsqueeze(0)


def read_fallingthings_disparity(path: PathLike) -> torch.Tensor:
    """FallingThings depth PNG (units of 0.1 mm) to disparity with the camera's ``fx`` and a 6 cm baseline.

    ``fx`` comes from ``_camera_settings.json`` beside the depth map. Depth 0 (no depth) gives disparity 0.
    """
    camera_path = Path(path).parent / "_camera_settings.json"
    try:
        with open(camera_path) as f:
            fx = float(json.load(f)["camera_settings"][0]["intrinsic_settings"]["fx"])
    except FileNotFoundError:
        raise FileNotFoundError(f"Camera settings not found: {camera_path} (needed to read {path})") from None
    except (ValueError, KeyError, IndexError, TypeError) as e:
        raise ValueError(f"Cannot read camera_settings[0].intrinsic_settings.fx from {camera_path}") from e
    depth = read_png16(path)
    baseline_cm, depth_units_per_cm = 6.0, 100.0
    numerator = baseline_cm * depth_units_per_cm * fx
    disparity = torch.where(depth > 0, numerator / depth.clamp(min=1), torch.zeros_like(depth))
    return disparity.unsqueeze(0)


def valid_disparity(disparity: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Zero non-finite and non-positive values in place; return ``(disparity, valid (H, W) bool)``."""
    valid = (disparity > 0) & (disparity < math.inf)  # NaN fails both comparisons
    return disparity.masked_fill_(~valid, 0), valid[0]
