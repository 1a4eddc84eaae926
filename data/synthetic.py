"""Procedural rectified stereo scenes with exact dense ground truth (``synthetic`` / ``synthetic-val``).

A scene is a background plane and a few objects (ellipses, rotated rectangles, polygons, blobs), each a
slanted plane ``d(x, y) = d0 + b (x - cx) + c (y - cy)`` carrying its own texture: multi-scale colour
noise, sharp-edged patches, and some nearly flat (low-texture) layers. Textures live on the left image's
pixel grid. The left view shows, at each pixel, the layer with the largest disparity (z-buffer). The right
view is rendered exactly: a right pixel ``xr`` sees layer ``l`` at ``xl = (xr + d0 - b cx + c (y - cy)) / (1 - b)``
(the inverse of ``xr = xl - d(xl, y)``), again keeping the largest disparity, and takes the layer's texture
linearly interpolated at ``xl``. So on pixels visible in both views the right image equals the left image
warped by the right disparity, up to uint8 rounding; pixels not visible in the other view are marked.

Each sample is a pure function of ``(seed, index)``: a private ``torch.Generator`` is seeded from both, so
workers, resumption and the global RNG do not change it.
"""

import argparse
import hashlib
import math
from contextlib import contextmanager
from typing import Callable, Iterator, NamedTuple, Optional

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset


class SyntheticScene(NamedTuple):
    images: tuple[torch.Tensor, torch.Tensor]  # uint8 (3, H, W) left, right
    disparities: tuple[torch.Tensor, torch.Tensor]  # float32 (1, H, W) left, right (positive, exact)
    masks: tuple[torch.Tensor, torch.Tensor]  # bool (H, W): valid ground truth (every pixel)
    occlusions: tuple[torch.Tensor, torch.Tensor]  # bool (H, W): not visible in the other view


class _Layer(NamedTuple):
    cx: float
    cy: float
    d0: float
    b: float
    c: float
    x0: int  # bounding box on the left pixel grid, inclusive
    x1: int
    y0: int
    y1: int
    shape: int  # 0 background, 1 ellipse, 2 rectangle, 3 polygon, 4 blob
    rx: float
    ry: float
    angle: float
    sides: int
    harmonics: tuple[float, ...]  # blob: amplitude and phase of harmonics 2, 3, 4


@contextmanager
def _one_thread() -> Iterator[None]:
    """Run on one intra-op thread, then restore the caller's setting.

    The generator's tensors are moderately sized and memory-bound, so more threads gain little, while on a
    busy machine OpenMP threads spinning for a core held by another process made a 320x448 sample 18x
    slower (1200 ms instead of 66 ms with 2 threads on 2 loaded cores). DataLoader workers use one already.
    """
    threads = torch.get_num_threads()
    if threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _seed(seed: int, index: int) -> int:
    digest = hashlib.blake2b(f"{seed}:{index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def _inside(layer: _Layer, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Whether left-grid points ``(x, y)`` (float tensors) lie on the layer's shape."""
    if layer.shape == 0:
        return torch.ones(torch.broadcast_shapes(x.shape, y.shape), dtype=torch.bool)
    cos, sin = math.cos(layer.angle), math.sin(layer.angle)
    dx, dy = x - layer.cx, y - layer.cy
    u = (dx * cos + dy * sin) / layer.rx
    v = (dy * cos - dx * sin) / layer.ry
    if layer.shape == 1:
        return u * u + v * v <= 1
    if layer.shape == 2:
        return torch.maximum(u.abs(), v.abs()) <= 1
    if layer.shape == 3:
        inside = torch.ones_like(u, dtype=torch.bool)
        for k in range(layer.sides):
            t = 2 * math.pi * k / layer.sides
            inside &= u * math.cos(t) + v * math.sin(t) <= math.cos(math.pi / layer.sides)
        return inside
    phi = torch.atan2(v, u)
    radius = torch.full_like(u, 0.7)
    for k, (amp, phase) in enumerate(zip(layer.harmonics[::2], layer.harmonics[1::2]), start=2):
        radius += 0.7 * amp * torch.cos(k * phi + phase)
    return u * u + v * v <= radius * radius


def _lookup(table: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """``table[ids]`` through index_select, which is several times faster than advanced indexing."""
    return table.index_select(0, ids.view(-1)).view(ids.shape)


def _channels_first(pixels: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """``(H * W, 3)`` pixels to a contiguous ``(3, H, W)`` image."""
    return pixels.view(height, width, 3).permute(2, 0, 1).contiguous()


def _texture(g: torch.Generator, out: torch.Tensor) -> None:
    """Fill ``out`` ``(3, height, width)`` with a float texture in [0, 255].

    Fractal noise (colour at every scale but the finest, which is luminance grain), a contrast that is
    sometimes very low (textureless areas), and in half the layers sharp-edged patches.
    """
    height, width = out.shape[1:]
    p = torch.rand(12, generator=g).tolist()
    levels = max(1, math.ceil(math.log2(max(height, width) / (2 + 6 * p[0]))))
    persistence = 0.6 + 0.3 * p[1]
    # Channels as the batch dimension: bilinear upsampling of (3, 1, h, w) is several times faster than (1, 3, h, w).
    noise = torch.rand(3, 1, math.ceil(height / 2**levels) + 1, math.ceil(width / 2**levels) + 1, generator=g)
    total = 1.0
    for k in range(levels - 1, -1, -1):
        size = (math.ceil(height / 2**k), math.ceil(width / 2**k))
        amplitude = persistence ** (levels - k)
        noise = F.interpolate(noise, size=size, mode="bilinear", align_corners=False)
        noise += torch.rand(3 if k else 1, 1, *size, generator=g).mul_(amplitude)
        total += amplitude
    noise = noise[:, 0, :height, :width]
    luminance = noise.mean(0, keepdim=True)
    texture = noise.mul_(p[2]).add_(luminance, alpha=1 - p[2])  # p[2]: how colourful
    contrast = 80 + 200 * p[3] if p[4] > 0.15 else 4 + 8 * p[3]
    base = torch.tensor(p[5:8]) * 200 + 28 - 2 * contrast
    texture.mul_(4 * contrast / total).add_(base[:, None, None])
    if p[8] < 0.5:
        step = (torch.tensor(p[9:12]) - 0.5)[:, None, None] * 80
        texture += torch.where(luminance > total / 2, step, -step)
    torch.clamp(texture, 0, 255, out=out)


class SyntheticStereo(Dataset):
    """Procedural stereo scenes; ``dataset[i]`` follows the sample contract, ``render(i)`` adds occlusions.

    Args:
        size: ``(H, W)`` of every sample.
        max_disparity, min_disparity: range of the ground-truth disparity, in pixels (``0 < min < max < W/2``).
        length: number of samples; each index is its own scene.
        seed: scene family; ``synthetic`` uses 0 and ``synthetic-val`` 1, so they never share scenes.
        num_objects: largest number of objects; each scene draws between a third of it and it.
        transforms: called as ``transforms(images, disparities, masks)``.
    """

    VAL_DEFAULTS = {"size": (256, 320), "length": 24, "seed": 1}

    def __init__(
        self,
        size: tuple[int, int] = (320, 448),
        max_disparity: float = 64.0,
        min_disparity: float = 1.0,
        length: int = 100_000,
        seed: int = 0,
        num_objects: int = 16,
        transforms: Optional[Callable] = None,
    ) -> None:
        if len(size) != 2 or min(size) < 16:
            raise ValueError(f"size must be (H, W) with both at least 16, got {size}")
        if not 0 < min_disparity < max_disparity < size[1] / 2:
            raise ValueError(
                f"need 0 < min_disparity < max_disparity < width / 2, got {min_disparity}, {max_disparity}, "
                f"width {size[1]}"
            )
        if length < 1 or num_objects < 0:
            raise ValueError(f"length must be >= 1 and num_objects >= 0, got {length}, {num_objects}")
        self.size = (int(size[0]), int(size[1]))
        self.max_disparity = float(max_disparity)
        self.min_disparity = float(min_disparity)
        self.length = int(length)
        self.seed = int(seed)
        self.num_objects = int(num_objects)
        self.transforms = transforms

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int):
        scene = self.render(index)
        if self.transforms is not None:
            return self.transforms(scene.images, scene.disparities, scene.masks)
        return scene.images, scene.disparities, scene.masks

    def _plane(self, g: torch.Generator, low: float, high: float, half_w: float, half_h: float) -> tuple:
        """Disparity at the centre in ``[low, high]`` and slants keeping the box within the disparity range."""
        p = torch.rand(4, generator=g).tolist()
        d0 = low + (high - low) * p[0]
        margin = min(d0 - self.min_disparity, self.max_disparity - d0) * p[1]
        b = max(-0.3, min(0.3, margin * (2 * p[2] - 1) / (2 * half_w)))
        c = margin * (2 * p[3] - 1) / (2 * half_h)
        return d0, b, c

    def _layers(self, g: torch.Generator) -> list[_Layer]:
        height, width = self.size
        dmin, dmax = self.min_disparity, self.max_disparity
        span = dmax - dmin
        right_edge = width + math.ceil(dmax)  # rightmost left-grid column a right pixel can see
        d0, b, c = self._plane(g, dmin, dmin + 0.3 * span, right_edge / 2, height / 2)
        layers = [_Layer(right_edge / 2, height / 2, d0, b, c, 0, right_edge, 0, height - 1, 0, 1, 1, 0, 0, ())]
        count = int(torch.randint(math.ceil(self.num_objects / 3), self.num_objects + 1, (), generator=g))
        for _ in range(count):
            p = torch.rand(14, generator=g).tolist()
            shape = 1 + int(4 * p[0])
            radius = min(height, width) * 0.04 * 10 ** (p[1])
            aspect = 0.4 * 6 ** p[2]
            rx, ry = radius * math.sqrt(aspect), radius / math.sqrt(aspect)
            angle = math.pi * p[3]
            cx, cy = right_edge * p[4], height * p[5]
            ex = rx * abs(math.cos(angle)) + ry * abs(math.sin(angle))
            ey = rx * abs(math.sin(angle)) + ry * abs(math.cos(angle))
            x0, x1 = max(0, math.floor(cx - ex)), min(right_edge, math.ceil(cx + ex))
            y0, y1 = max(0, math.floor(cy - ey)), min(height - 1, math.ceil(cy + ey))
            d0, b, c = self._plane(g, dmin + 0.15 * span, dmax, ex, ey)
            harmonics = tuple(v for k in range(3) for v in (0.1 * p[6 + 2 * k], 2 * math.pi * p[7 + 2 * k]))
            layers.append(_Layer(cx, cy, d0, b, c, x0, x1, y0, y1, shape, rx, ry, angle, 3 + int(4 * p[12]),
                                 harmonics))
        return layers

    def render(self, index: int) -> SyntheticScene:
        """Scene ``index``: images, exact disparities, valid masks and occlusion masks of both views."""
        if not 0 <= index < self.length:
            raise IndexError(f"index {index} out of range for {self.length} synthetic samples")
        with _one_thread():
            return self._render(torch.Generator().manual_seed(_seed(self.seed, index)))

    def _render(self, g: torch.Generator) -> SyntheticScene:
        height, width = self.size
        layers = self._layers(g)

        # All textures in one flat atlas; texel (x, y) of layer l sits at origin[l] + y * stride[l] + x.
        strides = [layer.x1 - layer.x0 + 2 for layer in layers]
        areas = [(layer.y1 - layer.y0 + 1) * stride for layer, stride in zip(layers, strides)]
        atlas = torch.empty(3, sum(areas))
        origins, offset = [], 0
        for layer, stride, area in zip(layers, strides, areas):
            _texture(g, atlas[:, offset:offset + area].view(3, -1, stride))
            origins.append(offset - layer.y0 * stride - layer.x0)
            offset += area
        origins, strides = torch.tensor(origins, dtype=torch.int32), torch.tensor(strides, dtype=torch.int32)
        texels = atlas.round_().t().to(torch.uint8, memory_format=torch.contiguous_format)  # (texel, RGB)

        ys = torch.arange(height, dtype=torch.float32)[:, None]
        columns = torch.arange(width, dtype=torch.float32)[None, :]
        background = layers[0]  # covers every pixel of both views: the z-buffers start from it
        disp_left = background.d0 + background.b * (columns - background.cx) + background.c * (ys - background.cy)
        x_left = (columns + background.d0 - background.b * background.cx + background.c * (ys - background.cy))
        disp_right = x_left.div_(1 - background.b).sub_(columns)
        ids_left = torch.zeros((height, width), dtype=torch.int32)
        ids_right = torch.zeros((height, width), dtype=torch.int32)
        for i, layer in enumerate(layers[1:], start=1):
            rows = slice(layer.y0, layer.y1 + 1)
            y = ys[rows]
            if layer.x0 < width:
                cols = slice(layer.x0, min(layer.x1, width - 1) + 1)
                x = torch.arange(cols.start, cols.stop, dtype=torch.float32)[None, :]
                d = layer.d0 + layer.b * (x - layer.cx) + layer.c * (y - layer.cy)
                closer = _inside(layer, x, y) & (d > disp_left[rows, cols])
                disp_left[rows, cols] = torch.where(closer, d, disp_left[rows, cols])
                ids_left[rows, cols] = torch.where(closer, i, ids_left[rows, cols])
            corners = [layer.d0 + layer.b * (x - layer.cx) + layer.c * (yy - layer.cy)
                       for x in (layer.x0, layer.x1) for yy in (layer.y0, layer.y1)]
            start = max(0, math.floor(layer.x0 - max(corners)) - 1)
            stop = min(width, math.ceil(layer.x1 - min(corners)) + 2)
            if start >= stop:
                continue
            cols = slice(start, stop)
            xr = torch.arange(start, stop, dtype=torch.float32)[None, :]
            xl = (xr + layer.d0 - layer.b * layer.cx + layer.c * (y - layer.cy)) / (1 - layer.b)
            d = xl - xr
            on_layer = (xl >= layer.x0) & (xl <= layer.x1) & _inside(layer, xl, y)
            closer = on_layer & (d > disp_right[rows, cols])
            disp_right[rows, cols] = torch.where(closer, d, disp_right[rows, cols])
            ids_right[rows, cols] = torch.where(closer, i, ids_right[rows, cols])

        xs = torch.arange(width, dtype=torch.int32)[None, :]
        yi = torch.arange(height, dtype=torch.int32)[:, None]
        texel = _lookup(origins, ids_left) + yi * _lookup(strides, ids_left) + xs
        left = texels.index_select(0, texel.view(-1))

        xl = xs + disp_right
        floor = xl.floor()
        weight = (xl - floor).view(-1, 1)
        texel = (_lookup(origins, ids_right) + yi * _lookup(strides, ids_right) + floor.int()).view(-1)
        right = texels.index_select(0, texel).float().lerp_(texels.index_select(0, texel + 1).float(), weight)

        occluded_left = self._occluded(xs - disp_left, ids_left, ids_right)
        occluded_right = self._occluded(xl, ids_right, ids_left)
        full = torch.ones((height, width), dtype=torch.bool)
        return SyntheticScene(
            images=(_channels_first(left, height, width), _channels_first(right.round_().byte(), height, width)),
            disparities=(disp_left[None].contiguous(), disp_right[None].contiguous()),
            masks=(full, full.clone()),
            occlusions=(occluded_left, occluded_right),
        )

    @staticmethod
    def _occluded(x_other: torch.Tensor, ids: torch.Tensor, ids_other: torch.Tensor) -> torch.Tensor:
        """Pixels whose point, at column ``x_other`` of the other view, is out of frame or hidden there."""
        width = ids.shape[1]
        floor = x_other.floor()
        inside = (floor >= 0) & (floor < width - 1)
        first = floor.clamp_(0, width - 2).long()
        hidden = ids_other.gather(1, first) != ids
        hidden |= ids_other.gather(1, first + 1) != ids
        return hidden | ~inside


def write_folder(directory: str, length: int, size: tuple[int, int], max_disparity: float, seed: int) -> int:
    """Write ``length`` scenes as a folder dataset (``folder:DIRECTORY``, see ``data/folder.py``); returns the count.

    Left/right PNGs and both exact disparities as PFM (every pixel has ground truth, so no ``valid/``).
    """
    from .folder import write_folder_sample

    scenes = SyntheticStereo(size=size, max_disparity=max_disparity, length=length, seed=seed)
    for index in range(length):
        scene = scenes.render(index)
        write_folder_sample(directory, f"{index:05d}", scene.images, scene.disparities)
    return length


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(description="Write synthetic scenes as a folder dataset (folder:DIR)")
    parser.add_argument("--write-folder", required=True, metavar="DIR", help="folder to write into (created)")
    parser.add_argument("--length", type=int, default=8, help="number of scenes")
    parser.add_argument("--size", type=int, nargs=2, default=[256, 320], metavar=("H", "W"))
    parser.add_argument("--max-disparity", type=float, default=48.0)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    try:
        count = write_folder(args.write_folder, args.length, tuple(args.size), args.max_disparity, args.seed)
    except ValueError as e:
        parser.error(str(e))
    except OSError as e:
        parser.error(f"cannot write {args.write_folder}: {e}")
    print(f"Wrote {count} scenes to {args.write_folder}; use it as --dataset folder:{args.write_folder}")


if __name__ == "__main__":
    main()
