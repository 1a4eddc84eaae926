"""Throughput of the data pipeline per CPU core: decoding, then the train or eval preset on the decoded sample.

Writes a Middlebury-sized (1988x2964) and a SceneFlow-sized (540x960) sample as PNG images and PFM
disparities (left and right, Middlebury with invalid pixels), decodes them with ``data.io`` as the datasets
do, and times decoding and each preset in the same iterations (medians over ``--runs`` after one warm-up)
with one thread. "x decode" is (decode + preset) / decode.

    .venv/bin/python scripts/bench_pipeline.py [--runs 7] [--threads 1] [--reference-order]

``--reference-order`` also times the reference pipeline order (colour, gamma and the right-view shift on
the full image before the crop), built from the same transforms, to show what crop-first saves.
"""

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as nnf
from torchvision.io import write_png

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import presets  # noqa: E402
import transforms as T  # noqa: E402
from data.io import read_image, read_pfm, valid_disparity, write_pfm  # noqa: E402

SIZES = {"middlebury": (1988, 2964), "sceneflow": (540, 960)}


def smooth_field(height: int, width: int, cells: int, generator: torch.Generator) -> torch.Tensor:
    """Low-frequency random field in [0, 1] of shape (1, H, W)."""
    coarse = torch.rand(1, 1, cells, max(2, cells * width // height), generator=generator)
    return nnf.interpolate(coarse, size=(height, width), mode="bicubic", align_corners=False)[0].clamp(0, 1)


def write_sample(folder: Path, height: int, width: int, with_invalid: bool) -> None:
    """Photo-like textured pair, right view = left shifted by the disparity, and PFM disparities."""
    g = torch.Generator().manual_seed(0)
    texture = torch.cat([smooth_field(height, width, 24, g) for _ in range(3)])
    texture = texture * 200 + torch.randn(3, height, width, generator=g) * 6 + 20
    disparity = smooth_field(height, width, 6, g) * (0.08 * width) + 0.01 * width
    xs = torch.arange(width).view(1, -1) - disparity[0].round().long()
    right = texture.gather(2, xs.clamp(0, width - 1).unsqueeze(0).expand(3, -1, -1))
    write_png(texture.clamp(0, 255).to(torch.uint8), str(folder / "im0.png"))
    write_png(right.clamp(0, 255).to(torch.uint8), str(folder / "im1.png"))
    for name in ("disp0.pfm", "disp1.pfm"):
        disp = disparity.clone()
        if with_invalid:
            holes = smooth_field(height, width, 12, g) > 0.8
            disp[holes] = float("inf")
        write_pfm(folder / name, disp)


def decode(folder: Path):
    """Read a sample exactly as the datasets do: uint8 images, zeroed invalid disparity and bool masks."""
    images = (read_image(folder / "im0.png"), read_image(folder / "im1.png"))
    d0, m0 = valid_disparity(read_pfm(folder / "disp0.pfm"))
    d1, m1 = valid_disparity(read_pfm(folder / "disp1.pfm"))
    return images, (d0, d1), (m0, m1)


def reference_order_preset(crop_size) -> T.Compose:
    """The reference order of section 3.3 at the train.py defaults: photometric ops before the crop."""
    return T.Compose(
        [
            T.AsymmetricColorJitter((0.8, 1.2), (0.8, 1.2), 0.0, 0.0, p=1.0),
            T.AsymmetricGammaAdjust(p=1.0, gamma_range=(0.8, 1.2)),
            T.RandomSpatialShift(1.0, 0.1, 2.0),
            T.ConvertImageDtype(torch.float32),
            T.RandomRescaleAndCrop(crop_size, (0.6, 1.0), 1.0, "linear"),
            T.RandomHorizontalFlip(0.5),
            T.RandomOcclusion(1.0),
            T.Normalize(0.5, 0.5),
            T.MakeValidDisparityMask(),
        ]
    )


def time_pipeline(folder: Path, transform, runs: int) -> tuple[float, float]:
    """Median seconds per sample of decoding and of ``transform`` on the decoded sample, timed in the same
    iterations so that load on the machine affects both alike."""
    decode_times, transform_times = [], []
    for i in range(runs + 1):
        torch.manual_seed(i)
        start = time.perf_counter()
        sample = decode(folder)
        middle = time.perf_counter()
        transform(*sample)
        end = time.perf_counter()
        decode_times.append(middle - start)
        transform_times.append(end - middle)
    return statistics.median(decode_times[1:]), statistics.median(transform_times[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7, help="timed runs per figure (median reported)")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (1 = per core)")
    parser.add_argument("--reference-order", action="store_true", help="also time the reference pipeline order")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    crop = (384, 512)
    pipelines = {
        "train (crop 384x512, linear 0.6-1.0)": presets.StereoMatchingTrainPreset(
            crop_size=crop, scaling_type="linear", scale_range=(0.6, 1.0), spatial_shift_prob=1.0,
            spatial_shift_max_angle=0.1, spatial_shift_max_displacement=2.0, occlusion_prob=0.5,
        ),
        "eval 384x512 (published protocol)": presets.StereoMatchingEvalPreset(),
        "eval native resolution": presets.StereoMatchingEvalPreset(resize_size=None),
    }
    if args.reference_order:
        pipelines["train, reference order"] = reference_order_preset(crop)

    print(f"torch {torch.__version__}, {args.threads} thread(s), median of {args.runs} runs\n")
    print("| sample | pipeline | decode s | transform s | samples/s | x decode | decode share |")
    print("|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for name, (height, width) in SIZES.items():
            folder = Path(tmp) / name
            folder.mkdir()
            write_sample(folder, height, width, with_invalid=name == "middlebury")
            label = f"{name} {height}x{width}"
            for pname, transform in pipelines.items():
                dec, tr = time_pipeline(folder, transform, args.runs)
                total = dec + tr
                print(
                    f"| {label} | {pname} | {dec:.3f} | {tr:.3f} | {1 / total:.2f} | {total / dec:.2f} "
                    f"| {100 * dec / total:.0f}% |"
                )


if __name__ == "__main__":
    main()
