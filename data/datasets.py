"""Thin subclasses of torchvision's stereo datasets that follow the sample contract of docs/architecture.md.

Every class here:
- decodes images with ``torchvision.io`` into uint8 ``(3, H, W)`` tensors (torchvision returns PIL images);
- returns disparities as float32 ``(1, H, W)`` tensors and always a bool ``(H, W)`` mask next to each
  disparity (torchvision returns numpy arrays, float64 for KITTI, and mostly no mask);
- marks non-finite and non-positive disparities invalid and sets them to 0 (torchvision keeps ``inf``);
- returns the triple ``(images, disparities, masks)`` (torchvision returns a 3- or 4-tuple without the right view);
- pairs files by the parts of their names that the glob's wildcards match, and names the file without a
  partner (torchvision pairs independently sorted lists and only reports the counts).

Each class docstring names what else it corrects in its torchvision parent.
"""

import os
import re
from glob import glob
from itertools import zip_longest
from pathlib import Path
from typing import Callable, Optional, Union

import torch
import torchvision.datasets as tvd
from torch.utils.data import Dataset

from .io import read_fallingthings_disparity, read_image, read_pfm, read_png16, read_png_disparity
from .io import read_sintel_disparity, valid_disparity

Sample = tuple[tuple[torch.Tensor, torch.Tensor], tuple, tuple]
DisparityAndMask = tuple[Optional[torch.Tensor], Optional[torch.Tensor]]


def _keyed_glob(pattern: str) -> dict[tuple[str, ...], str]:
    """Files matching ``pattern``, keyed by the strings its ``*`` wildcards match."""
    regex = re.compile(re.escape(pattern).replace(r"\*", "([^/]*)"))
    return {regex.fullmatch(path).groups(): path for path in glob(pattern)}


class _ContractMixin:
    """Overrides shared by all readers; placed before the torchvision class in the bases."""

    def _read_img(self, file_path: Union[str, Path]) -> torch.Tensor:
        return read_image(file_path)

    def _scan_pairs(self, paths_left_pattern: str, paths_right_pattern: Optional[str] = None) -> list:
        left = _keyed_glob(paths_left_pattern)
        if not left:
            raise FileNotFoundError(f"No files match {paths_left_pattern}")
        keys = self.__dict__.setdefault("_keys", {})
        keys.update({path: key for key, path in left.items()})
        if paths_right_pattern is None:
            return [(left[k], None) for k in sorted(left)]
        right = _keyed_glob(paths_right_pattern)
        if not right:
            raise FileNotFoundError(f"No files match {paths_right_pattern}")
        for key in sorted(left.keys() ^ right.keys()):
            orphan = left.get(key) or right.get(key)
            expected = paths_right_pattern if key in left else paths_left_pattern
            raise ValueError(f"{orphan} has no partner matching {expected} (unequal left/right file counts)")
        return [(left[k], right[k]) for k in sorted(left)]

    def _check_alignment(self) -> None:
        """Every left image must have the left disparity of the same scene and frame (or None)."""
        for (image, _), (disparity, _) in zip_longest(self._images, self._disparities, fillvalue=(None, None)):
            if image is None:
                raise ValueError(f"Disparity file {disparity} has no matching left image")
            if disparity is None:
                continue
            if self._keys[image] != self._keys[disparity]:
                raise ValueError(
                    f"Left image {image} and disparity {disparity} do not match: a file is missing from one list"
                )

    def _decode_disparity(self, file_path: str) -> torch.Tensor:
        return read_pfm(file_path).abs_()

    def _read_disparity(self, file_path: Optional[str]) -> DisparityAndMask:
        if file_path is None:
            return None, None
        return valid_disparity(self._decode_disparity(file_path))

    def __getitem__(self, index: int) -> Sample:
        left_path, right_path = self._images[index]
        images = (self._read_img(left_path), self._read_img(right_path))
        (left_disparity, left_mask), (right_disparity, right_mask) = map(self._read_disparity, self._disparities[index])
        disparities, masks = (left_disparity, right_disparity), (left_mask, right_mask)
        for path, disparity, image in zip(self._disparities[index], disparities, images):
            if disparity is not None and disparity.shape[-2:] != image.shape[-2:]:
                raise ValueError(f"{path} is {tuple(disparity.shape[-2:])} but its image is {tuple(image.shape[-2:])}")
        if self.transforms is not None:
            return self.transforms(images, disparities, masks)
        return images, disparities, masks


class CarlaStereo(_ContractMixin, tvd.CarlaStereo):
    """CARLA high-res scenes: ``carla-highres/trainingF/<scene>/{im0,im1}.png, disp{0,1}GT.pfm``.

    Corrects: torchvision returns no valid mask (non-finite values stay valid) and its docstring says
    ``img0.png``/``img1.png`` while the files are ``im0.png``/``im1.png``.
    """

    def __init__(self, root: Union[str, Path], transforms: Optional[Callable] = None) -> None:
        super().__init__(root, transforms)
        self._check_alignment()


class _KittiMixin(_ContractMixin):
    """The layout both KITTI benchmarks share: ``<folder>/{training,testing}/<left|right>/*_10.png`` (first
    frames only), training disparity ``<disparity>/*_10.png`` as ``uint16 / 256`` with 0 = no ground truth."""

    def _scan_kitti(self, root: Union[str, Path], split: str, folder: str, views: tuple[str, str],
                    disparity: str) -> None:
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        base = Path(root) / folder / (split + "ing")
        self._images = self._scan_pairs(str(base / views[0] / "*_10.png"), str(base / views[1] / "*_10.png"))
        if split == "train":
            self._disparities = self._scan_pairs(str(base / disparity / "*_10.png"))
        else:
            self._disparities = [(None, None)] * len(self._images)
        self._check_alignment()

    def _decode_disparity(self, file_path: str) -> torch.Tensor:
        return read_png_disparity(file_path, 256.0)


class Kitti2012Stereo(_KittiMixin, tvd.Kitti2012Stereo):
    """KITTI 2012: ``Kitti2012/{training,testing}/colored_{0,1}/*_10.png``, ``training/disp_noc/*_10.png``.

    Disparity is ``uint16 / 256`` with 0 = no ground truth. Corrects: torchvision decodes to float64 and
    never produces the mask it declares (0 stays a valid disparity), and globs ``disp_noc/*.png`` without
    pairing it to the images.
    """

    def __init__(self, root: Union[str, Path], split: str = "train", transforms: Optional[Callable] = None) -> None:
        super(tvd.Kitti2012Stereo, self).__init__(root, transforms)
        self._scan_kitti(root, split, "Kitti2012", ("colored_0", "colored_1"), "disp_noc")


class Kitti2015Stereo(_KittiMixin, tvd.Kitti2015Stereo):
    """KITTI 2015: ``Kitti2015/{training,testing}/image_{2,3}/*_10.png``, ``training/disp_occ_0/*_10.png``.

    Disparity is ``uint16 / 256`` with 0 = no ground truth. Corrects: torchvision globs ``image_2/*.png``
    (both the ``_10`` and ``_11`` frames, 400 images against 200 disparities, so pairs are misaligned) and
    uses ``disp_occ_1`` (the disparity of the *second frame*, not of the right view) as right disparity.
    Here the right disparity is None. It also decodes to float64 and never produces its declared mask.
    """

    def __init__(self, root: Union[str, Path], split: str = "train", transforms: Optional[Callable] = None) -> None:
        super(tvd.Kitti2015Stereo, self).__init__(root, transforms)
        self._scan_kitti(root, split, "Kitti2015", ("image_2", "image_3"), "disp_occ_0")


class Middlebury2014Stereo(_ContractMixin, tvd.Middlebury2014Stereo):
    """Middlebury 2014: ``Middlebury2014/{train,additional}/<Scene>-{perfect,imperfect}/``, ``test/<Scene>/``.

    Disparity ``disp{0,1}.pfm``, ``inf`` = unknown. Corrects: ambient right views (``im1E.png``,
    ``im1L.png``) are drawn with torch's RNG instead of Python's ``random`` (so ``torch.manual_seed`` makes
    samples reproducible); NaN disparities are invalid too; a missing calibration for train/additional
    raises a message that says what to pass (torchvision's claims it falls back to "perfect"). Downloading
    is not offered (its test-split download fails on an existing directory).
    """

    def __init__(
        self,
        root: Union[str, Path],
        split: str = "train",
        calibration: Optional[str] = "perfect",
        use_ambient_views: bool = False,
        transforms: Optional[Callable] = None,
    ) -> None:
        if split != "test" and calibration is None:
            raise ValueError(f"Middlebury split {split!r} needs calibration='perfect', 'imperfect' or 'both'")
        super().__init__(root, split, calibration, use_ambient_views, transforms)
        self._check_alignment()

    def _read_img(self, file_path: Union[str, Path]) -> torch.Tensor:
        file_path = Path(file_path)
        if self.use_ambient_views and file_path.name == "im1.png":
            views = [file_path] + [file_path.with_name(n) for n in ("im1E.png", "im1L.png")]
            views = [v for v in views if v.exists()]
            file_path = views[int(torch.randint(len(views), ()))]
        return read_image(file_path)


class CREStereo(_ContractMixin, tvd.CREStereo):
    """CREStereo synthetic data: ``CREStereo/{shapenet,reflective,tree,hole}/<n>_{left,right}{.jpg,.disp.png}``.

    Disparity is ``uint16 / 32``. Corrects: torchvision declares a built-in mask but never produces one,
    and its docstring names the disparity files ``.disp.jpg`` while they are ``.disp.png``.
    """

    def __init__(self, root: Union[str, Path], transforms: Optional[Callable] = None) -> None:
        super().__init__(root, transforms)
        self._check_alignment()

    def _decode_disparity(self, file_path: str) -> torch.Tensor:
        return read_png_disparity(file_path, 32.0)


class FallingThingsStereo(_ContractMixin, tvd.FallingThingsStereo):
    """FallingThings: ``FallingThings/{single/<obj>/<scene>,mixed/<scene>}/<n>.{left,right}{.jpg,.depth.png}``.

    Disparity = ``6 cm * fx * 100 / depth`` (depth in 0.1 mm, ``fx`` from ``_camera_settings.json``).
    Corrects: torchvision turns depth 0 (no depth) into an ``inf`` disparity that stays valid.
    """

    def __init__(self, root: Union[str, Path], variant: str = "both", transforms: Optional[Callable] = None) -> None:
        super().__init__(root, variant, transforms)
        self._check_alignment()

    def _decode_disparity(self, file_path: str) -> torch.Tensor:
        return read_fallingthings_disparity(file_path)


class SceneFlowStereo(_ContractMixin, tvd.SceneFlowStereo):
    """SceneFlow: ``SceneFlow/<variant>/frames_{cleanpass,finalpass}/<prefix>/{left,right}/*.png`` and
    ``<variant>/disparity/<prefix>/{left,right}/*.pfm``.

    Corrects: torchvision returns no valid mask, so non-finite PFM values stay valid.
    """

    def __init__(
        self,
        root: Union[str, Path],
        variant: str = "FlyingThings3D",
        pass_name: str = "both",
        transforms: Optional[Callable] = None,
    ) -> None:
        super().__init__(root, variant, pass_name, transforms)
        self._check_alignment()


class SintelStereo(_ContractMixin, tvd.SintelStereo):
    """Sintel stereo: ``Sintel/training/{final,clean}_{left,right}/<scene>/*.png``, ``disparities``,
    ``occlusions`` and ``outofframe`` with the same ``<scene>/<frame>.png`` names.

    Disparity is RGB-encoded (``R * 4 + G / 2**6 + B / 2**14``); valid where neither occluded nor out of
    frame. Corrects: a missing occlusion or out-of-frame mask is reported when the dataset is built (torchvision
    fails only when the sample is read), and zero disparities are invalid.
    """

    def __init__(self, root: Union[str, Path], pass_name: str = "final", transforms: Optional[Callable] = None) -> None:
        super().__init__(root, pass_name, transforms)
        self._check_alignment()
        for disparity in {left for left, _ in self._disparities}:
            self._get_occlussion_mask_paths(disparity)

    def _read_disparity(self, file_path: Optional[str]) -> DisparityAndMask:
        if file_path is None:
            return None, None
        disparity, valid = valid_disparity(read_sintel_disparity(file_path))
        occlusion_path, out_of_frame_path = self._get_occlussion_mask_paths(file_path)
        valid &= (read_png16(occlusion_path) == 0) & (read_png16(out_of_frame_path) == 0)
        return disparity, valid


class InStereo2k(_ContractMixin, tvd.InStereo2k):
    """InStereo2K: ``InStereo2k/{train,test}/<scene>/{left,right}.png, {left,right}_disp.png``.

    Corrects: torchvision divides the 16-bit disparity PNG by 1024; the dataset's README specifies 100,
    and 0 marks pixels without ground truth.
    """

    def __init__(self, root: Union[str, Path], split: str = "train", transforms: Optional[Callable] = None) -> None:
        super().__init__(root, split, transforms)
        self._check_alignment()

    def _decode_disparity(self, file_path: str) -> torch.Tensor:
        return read_png_disparity(file_path, 100.0)


class ETH3DStereo(_ContractMixin, tvd.ETH3DStereo):
    """ETH3D two-view: ``ETH3D/{two_view_training,two_view_test}/<scene>/im{0,1}.png`` and
    ``two_view_training_gt/<scene>/{disp0GT.pfm,mask0nocc.png}``.

    ``mask0nocc.png`` follows Middlebury's convention: 255 = non-occluded, 128 = occluded, 0 = unknown.
    With ``for_eval=True`` only the 255 pixels are valid (what the benchmark scores). For training every
    pixel with a finite positive ground truth that the mask does not mark unknown (0) is valid, i.e.
    occluded pixels are kept: their disparity is measured and a network must learn to fill occlusions.
    Corrects: torchvision treats every non-zero mask value as valid for evaluation too, keeps ``inf``
    disparities and documents the test directory as ``two_view_testing`` (it is ``two_view_test``).
    """

    def __init__(
        self,
        root: Union[str, Path],
        split: str = "train",
        transforms: Optional[Callable] = None,
        for_eval: bool = False,
    ) -> None:
        super().__init__(root, split, transforms)
        self.for_eval = for_eval
        self._check_alignment()

    def _read_disparity(self, file_path: Optional[str]) -> DisparityAndMask:
        return _nocc_disparity(file_path, self.for_eval)


def _nocc_disparity(file_path: Optional[str], for_eval: bool) -> DisparityAndMask:
    """``disp0GT.pfm`` and the ``mask0nocc.png`` beside it (Middlebury's labels: 255 nocc, 128 occluded, 0 unknown).

    Evaluation keeps the 255 pixels only; training every pixel with finite positive ground truth not marked 0.
    """
    if file_path is None:
        return None, None
    disparity, valid = valid_disparity(read_pfm(file_path).abs_())
    labels = read_png16(os.path.join(os.path.dirname(file_path), "mask0nocc.png"))
    if labels.shape != valid.shape:
        raise ValueError(
            f"mask0nocc.png beside {file_path} is {tuple(labels.shape)}, the disparity {tuple(valid.shape)}"
        )
    valid &= (labels == 255) if for_eval else (labels != 0)
    return disparity, valid


class MiddEval3Stereo(_ContractMixin, Dataset):
    """MiddEval3 (the Middlebury v3 benchmark's own layout) at resolution F, H or Q:
    ``MiddEval3/{training,test}{F,H,Q}/<Scene>/{im0.png, im1.png, calib.txt}`` and, for training,
    ``disp0GT.pfm`` (inf = unknown) with ``mask0nocc.png``.

    With ``for_eval=True`` only non-occluded pixels (255) are valid: the "nonocc" mask of the leaderboard's
    default table. torchvision has no reader for this layout.
    """

    def __init__(self, root: Union[str, Path], split: str = "train", resolution: str = "F",
                 transforms: Optional[Callable] = None, for_eval: bool = False) -> None:
        if split not in ("train", "test") or resolution not in ("F", "H", "Q"):
            raise ValueError(
                f"MiddEval3 needs split 'train'/'test' and resolution F/H/Q, got {split!r}, {resolution!r}"
            )
        self.transforms, self.for_eval, self.resolution = transforms, for_eval, resolution
        base = Path(root) / "MiddEval3" / f"{'training' if split == 'train' else 'test'}{resolution}"
        self._images = self._scan_pairs(str(base / "*" / "im0.png"), str(base / "*" / "im1.png"))
        if split == "train":
            self._disparities = [(d, None) for d, _ in self._scan_pairs(str(base / "*" / "disp0GT.pfm"))]
            self._check_alignment()
        else:
            self._disparities = [(None, None)] * len(self._images)

    def __len__(self) -> int:
        return len(self._images)

    def _read_disparity(self, file_path: Optional[str]) -> DisparityAndMask:
        return _nocc_disparity(file_path, self.for_eval)
