"""Upload layouts of the benchmark servers: KITTI 2012/2015, Middlebury v3 (MiddEval3) and ETH3D two-view.

``SubmissionWriter(out, dataset_name, method_name)`` writes one file set per test pair from its left image
path, its left-view disparity (in pixels of the input image) and its runtime; ``finish(zip_it)`` optionally
zips ``out``. The rules followed, per benchmark, are quoted next to each writer.
"""

import zipfile
from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image

from .io import write_pfm

# registry name -> (benchmark, Middlebury split folder)
BENCHMARKS = {
    "kitti2015-test": ("kitti", None),
    "kitti2012-test": ("kitti", None),
    "middlebury2014-test": ("middlebury", "testF"),
    **{f"middeval3-{s}-{r}": ("middlebury", f"{'training' if s == 'train' else 'test'}{r}")
       for s in ("train", "test") for r in "FHQ"},
    "eth3d-test": ("eth3d", None),
}


def check_submission_dataset(name: str) -> str:
    """The benchmark of registry split ``name``; ``ValueError`` naming the splits that have one."""
    if name not in BENCHMARKS:
        raise ValueError(f"--submission needs a benchmark split; {name} has none. Choose one of "
                         f"{', '.join(BENCHMARKS)}")
    return BENCHMARKS[name][0]


def write_kitti_png(path: Union[str, Path], disparity: np.ndarray) -> None:
    """KITTI's disparity PNG.

    KITTI 2015 devkit readme (devkit_scene_flow): "Disparity maps are saved as uint16 PNG images [...]. A 0
    value indicates an invalid pixel [...]. Otherwise, the disparity for a pixel can be computed by converting
    the uint16 value to float and dividing it by 256.0". Positive predictions below 1/256 px are stored as 1
    so that they do not turn into "invalid"; values above 255.996 px are clipped.
    """
    finite = np.nan_to_num(disparity, nan=0.0, posinf=0.0, neginf=0.0)
    encoded = np.clip(np.round(finite * 256.0), 0, 65535)
    encoded[(finite > 0) & (encoded == 0)] = 1
    Image.fromarray(encoded.astype(np.uint16)).save(path)


class SubmissionWriter:
    """Writes the upload layout of the benchmark that ``dataset_name`` belongs to into ``out``."""

    def __init__(self, out: Union[str, Path], dataset_name: str, method_name: str = "CREStereo") -> None:
        self.benchmark = check_submission_dataset(dataset_name)
        self.split = BENCHMARKS[dataset_name][1]
        if not method_name.isalnum():
            raise ValueError(f"--method-name {method_name!r} must be letters and digits only (it is part of the "
                             "Middlebury file names disp0<Method>.pfm)")
        self.out, self.method = Path(out), method_name
        self.written: list[Path] = []

    def write(self, left_path: Union[str, Path], disparity: np.ndarray, seconds: float) -> list[Path]:
        """Write the files of one pair; returns their paths."""
        left_path = Path(left_path)
        if self.benchmark == "kitti":
            # KITTI 2015 devkit readme: the zip holds "disp_0/" with one PNG per test image, named like its
            # input image (000000_10.png), first frames (_10) only, at the input's size. KITTI 2012's devkit
            # (devkit_stereo_flow) asks for the same disp_0/<id>_10.png layout -- quoted from memory of that
            # readme, not checked against a copy here.
            files = [self.out / "disp_0" / left_path.name]
            files[0].parent.mkdir(parents=True, exist_ok=True)
            write_kitti_png(files[0], disparity)
        elif self.benchmark == "middlebury":
            # MiddEval3 SDK README: results go to <split>/<Scene>/disp0<ALG>.pfm (float PFM, inf = unknown)
            # with time<ALG>.txt holding the runtime in seconds, one number.
            folder = self.out / self.split / left_path.parent.name
            files = [folder / f"disp0{self.method}.pfm", folder / f"time{self.method}.txt"]
            folder.mkdir(parents=True, exist_ok=True)
            write_pfm(files[0], disparity.astype(np.float32))
            files[1].write_text(f"{seconds:.4f}\n")
        else:
            # ETH3D submission format: low_res_two_view/<scene>.pfm (left disparity, PFM, inf = no estimate)
            # and low_res_two_view/<scene>.txt containing "runtime <seconds>".
            folder = self.out / "low_res_two_view"
            scene = left_path.parent.name
            files = [folder / f"{scene}.pfm", folder / f"{scene}.txt"]
            folder.mkdir(parents=True, exist_ok=True)
            write_pfm(files[0], disparity.astype(np.float32))
            files[1].write_text(f"runtime {seconds:.4f}\n")
        self.written += files
        return files

    def finish(self, zip_it: bool = False) -> Path:
        """``out``, or ``out.zip`` holding it (paths relative to ``out``) with ``zip_it``."""
        if not zip_it:
            return self.out
        archive = self.out.with_name(self.out.name + ".zip")
        with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as z:
            for path in sorted(self.written):
                z.write(path, path.relative_to(self.out).as_posix())
        return archive
