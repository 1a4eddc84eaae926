"""Data-loading benchmarks: ``python -m data.bench synthetic`` and ``python -m data.bench decode``.

synthetic: median milliseconds to generate one synthetic sample, per size and thread count.
decode: milliseconds to read one full-size Middlebury 2014 sample (1988x2964 pair, two PFM disparities)
through ``data.datasets.Middlebury2014Stereo`` against torchvision's PIL/numpy reader (converted to tensors).
The pair is skimage's Middlebury Motorcycle scene upsampled to the full 2014 size (needs scikit-image).
"""

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F


def _median_ms(fn: Callable[[], object], repeats: int) -> tuple[float, float]:
    """Median wall-clock and process-CPU milliseconds per call after one warm-up call."""
    fn()
    wall, cpu = [], []
    for _ in range(repeats):
        start_wall, start_cpu = time.perf_counter(), time.process_time()
        fn()
        wall.append(1000 * (time.perf_counter() - start_wall))
        cpu.append(1000 * (time.process_time() - start_cpu))
    return statistics.median(wall), statistics.median(cpu)


def bench_synthetic(sizes: list[str], threads: list[int], repeats: int) -> None:
    from data.synthetic import SyntheticStereo

    for size in sizes:
        height, width = (int(v) for v in size.split("x"))
        dataset = SyntheticStereo(size=(height, width), max_disparity=width / 8, length=repeats + 1)
        for n in threads:
            torch.set_num_threads(n)
            counter = iter(range(repeats + 1))
            wall, cpu = _median_ms(lambda: dataset[next(counter)], repeats)
            print(f"synthetic {height}x{width} (max_disparity {width / 8:g}), {n} thread(s): "
                  f"{wall:.1f} ms/sample wall, {cpu:.1f} ms CPU")


def _write_middlebury(root: Path) -> None:
    from skimage.data import stereo_motorcycle
    from torchvision.io import write_png

    from data.io import write_pfm

    left, right, disparity = stereo_motorcycle()
    size = (1988, 2964)
    scene = root / "Middlebury2014" / "train" / "Motorcycle-perfect"
    scene.mkdir(parents=True)
    for name, image in (("im0.png", left), ("im1.png", right)):
        tensor = torch.from_numpy(image).permute(2, 0, 1)[None].float()
        big = F.interpolate(tensor, size=size, mode="bicubic", antialias=True).clamp(0, 255).round()
        write_png(big[0].to(torch.uint8), str(scene / name))
    scale = size[1] / disparity.shape[1]
    big = F.interpolate(torch.from_numpy(disparity)[None, None], size=size, mode="nearest")[0, 0] * scale
    write_pfm(scene / "disp0.pfm", big)
    write_pfm(scene / "disp1.pfm", big)


def bench_decode(repeats: int) -> None:
    import torchvision.datasets as tvd
    from torchvision.transforms.functional import pil_to_tensor

    from data.datasets import Middlebury2014Stereo

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        _write_middlebury(Path(tmp))
        ours = Middlebury2014Stereo(tmp)
        reference = tvd.Middlebury2014Stereo(tmp)

        def torchvision_sample() -> tuple:
            left, right, disparity, valid = reference[0]
            return pil_to_tensor(left), pil_to_tensor(right), torch.from_numpy(disparity), torch.from_numpy(valid)

        sizes = {p.name: p.stat().st_size / 2**20 for p in (Path(tmp) / "Middlebury2014/train").rglob("*.*")}
        print("files (MiB): " + ", ".join(f"{k} {v:.1f}" for k, v in sorted(sizes.items())))
        for label, fn in (("data.datasets (torchvision.io)", lambda: ours[0]),
                          ("torchvision (PIL + numpy, to tensors)", torchvision_sample)):
            wall, cpu = _median_ms(fn, repeats)
            print(f"Middlebury 1988x2964 sample, {label}: {wall:.0f} ms wall, {cpu:.0f} ms CPU (1 thread)")


def main() -> None:
    parser = argparse.ArgumentParser(description="Data-loading benchmarks")
    parser.add_argument("what", choices=["synthetic", "decode"])
    parser.add_argument("--sizes", nargs="+", default=["384x512", "1024x1536"], help="synthetic sizes, HxW")
    parser.add_argument("--threads", nargs="+", type=int, default=[1, 2], help="synthetic thread counts")
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    if args.what == "synthetic":
        bench_synthetic(args.sizes, args.threads, args.repeats)
    else:
        bench_decode(args.repeats)


if __name__ == "__main__":
    main()
