"""The one dataset registry: name -> builder and description, used by every script.

``make_dataset(name, root)`` checks the name and the expected directory before building anything, so a
wrong name or root fails at once with a message that lists the valid names or shows the expected layout.
Besides the fixed names, ``folder:ROOT`` names a folder dataset (``data/folder.py``) at the path ``ROOT``
(absolute, or relative to the working directory; ``--dataset-root`` does not apply to it).
"""

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Union

from torch.utils.data import Dataset

from . import datasets as D
from . import folder

Builder = Callable[..., Dataset]


@dataclass(frozen=True)
class DatasetSpec:
    """What a registry name loads; the README dataset table is made of these fields."""

    name: str
    description: str
    directory: Optional[str]  # expected directory under --dataset-root (None: generated, or a folder dataset)
    layout: str  # files under ``directory``
    encoding: str  # how disparities are stored
    valid: str  # which pixels the valid mask keeps
    has_gt: bool
    sparse_gt: bool
    has_right_disparity: bool
    builder: Builder = field(repr=False, compare=False)
    options: tuple[str, ...] = ()


_PFM = "PFM float32, absolute value in pixels"
_FINITE = "finite and > 0"
_SF_LAYOUT = "frames_{cleanpass,finalpass}/{P}/{left,right}/*.png, disparity/{P}/{left,right}/*.pfm"
_SYNTH = ("size", "max_disparity", "min_disparity", "length", "seed", "num_objects")


def _spec(name: str, description: str, directory: Optional[str], layout: str, encoding: str, valid: str,
          builder: Builder, *, has_gt: bool = True, sparse_gt: bool = False, right: bool = False,
          options: tuple[str, ...] = ()) -> DatasetSpec:
    return DatasetSpec(name, description, directory, layout, encoding, valid, has_gt, sparse_gt, right, builder,
                       options)


def _sceneflow(variant: str, prefix: str) -> DatasetSpec:
    return _spec(
        f"sceneflow-{variant.lower().replace('flyingthings3d', 'flyingthings')}",
        f"SceneFlow {variant}, clean and final passes", f"SceneFlow/{variant}",
        _SF_LAYOUT.replace("{P}", prefix), _PFM, _FINITE,
        lambda root, t, **_: D.SceneFlowStereo(root, variant, "both", t), right=True,
    )


def _middlebury(name: str, description: str, split: str, calibration: Optional[str], ambient: bool) -> DatasetSpec:
    test = split == "test"
    suffix = {None: "", "perfect": "-perfect", "both": "-{perfect,imperfect}"}[calibration]
    views = "im1.png and, drawn at random, im1E.png, im1L.png" if ambient else "im1.png"
    layout = f"<Scene>{suffix}/im0.png, {views}" + ("" if test else ", disp0.pfm, disp1.pfm")
    return _spec(
        name, description, f"Middlebury2014/{split}", layout,
        "none (test split)" if test else _PFM + ", inf = unknown",
        "none" if test else _FINITE,
        lambda root, t, **_: D.Middlebury2014Stereo(root, split, calibration, ambient, t),
        has_gt=not test, right=not test,
    )


def _middeval3(split: str, resolution: str) -> DatasetSpec:
    test = split == "test"
    folder = f"MiddEval3/{'test' if test else 'training'}{resolution}"
    full = {"F": "full", "H": "half", "Q": "quarter"}[resolution]
    return _spec(
        f"middeval3-{split}-{resolution}", f"MiddEval3 {split} scenes at {full} resolution (benchmark layout)",
        folder, "<Scene>/im0.png, im1.png, calib.txt" + ("" if test else ", disp0GT.pfm, mask0nocc.png"),
        "none (test split)" if test else _PFM + ", inf = unknown",
        "none" if test else "finite > 0 and mask0nocc != 0 (training); mask0nocc == 255 only (evaluation)",
        lambda root, t, for_eval=False: D.MiddEval3Stereo(root, split, resolution, t, for_eval=for_eval),
        has_gt=not test,
    )


def _synthetic(transforms: Optional[Callable], validation: bool, options: dict) -> Dataset:
    # Imported here so that ``python -m data.synthetic`` does not find its module already imported by the package.
    from .synthetic import SyntheticStereo

    defaults = SyntheticStereo.VAL_DEFAULTS if validation else {}
    return SyntheticStereo(transforms=transforms, **{**defaults, **options})


_SPECS = [
    _spec("crestereo", "CREStereo synthetic set (shapenet, reflective, tree, hole)", "CREStereo",
          "{shapenet,reflective,tree,hole}/<n>_{left,right}.jpg, <n>_{left,right}.disp.png",
          "uint16 PNG / 32", "> 0", lambda root, t, **_: D.CREStereo(root, t), right=True),
    _spec("eth3d-train", "ETH3D low-res two-view training scenes", "ETH3D",
          "two_view_training/<scene>/im{0,1}.png, two_view_training_gt/<scene>/{disp0GT.pfm,mask0nocc.png}",
          _PFM + ", inf = unknown",
          "finite > 0 and mask0nocc != 0 (training); mask0nocc == 255 only (evaluation)",
          lambda root, t, for_eval: D.ETH3DStereo(root, "train", t, for_eval=for_eval)),
    _spec("eth3d-test", "ETH3D low-res two-view test scenes (no ground truth)", "ETH3D/two_view_test",
          "<scene>/im{0,1}.png", "none (test split)", "none",
          lambda root, t, **_: D.ETH3DStereo(root, "test", t), has_gt=False),
    _middlebury("middlebury2014-train", "Middlebury 2014 training scenes, perfect calibration",
                "train", "perfect", False),
    _middlebury("middlebury2014-other", "Middlebury 2014 additional scenes, both calibrations, ambient right views",
                "additional", "both", True),
    _middlebury("middlebury2014-train-ambient", "Middlebury 2014 training scenes, perfect, ambient right views",
                "train", "perfect", True),
    _middlebury("middlebury2014-test", "Middlebury 2014 (MiddEval3 full-res) test scenes, no ground truth",
                "test", None, False),
    *(_middeval3(split, res) for split in ("train", "test") for res in "FHQ"),
    _spec("instereo2k", "InStereo2K training split", "InStereo2k/train",
          "<scene>/{left,right}.png, <scene>/{left,right}_disp.png", "uint16 PNG / 100, 0 = unknown", "> 0",
          lambda root, t, **_: D.InStereo2k(root, "train", t), right=True),
    _spec("instereo2k-test", "InStereo2K test split (with ground truth)", "InStereo2k/test",
          "<scene>/{left,right}.png, <scene>/{left,right}_disp.png", "uint16 PNG / 100, 0 = unknown", "> 0",
          lambda root, t, **_: D.InStereo2k(root, "test", t), right=True),
    _spec("fallingthings", "FallingThings, single and mixed objects", "FallingThings",
          "{single/<obj>/<scene>,mixed/<scene>}/<n>.{left,right}.jpg, <n>.{left,right}.depth.png, "
          "_camera_settings.json", "uint16 depth (0.1 mm): d = 6 * 100 * fx / depth, 0 = unknown", _FINITE,
          lambda root, t, **_: D.FallingThingsStereo(root, "both", t), right=True),
    _spec("carla-highres", "CARLA high-resolution scenes (from the CREStereo repository)", "carla-highres/trainingF",
          "<scene>/{im0.png,im1.png,disp0GT.pfm,disp1GT.pfm}", _PFM, _FINITE,
          lambda root, t, **_: D.CarlaStereo(root, t), right=True),
    _spec("sintel", "MPI Sintel stereo, final pass", "Sintel/training",
          "final_{left,right}/<scene>/*.png, {disparities,occlusions,outofframe}/<scene>/*.png",
          "RGB PNG: R*4 + G/2^6 + B/2^14", "> 0, not occluded, not out of frame",
          lambda root, t, **_: D.SintelStereo(root, "final", t)),
    _spec("sintel-clean", "MPI Sintel stereo, clean pass", "Sintel/training",
          "clean_{left,right}/<scene>/*.png, {disparities,occlusions,outofframe}/<scene>/*.png",
          "RGB PNG: R*4 + G/2^6 + B/2^14", "> 0, not occluded, not out of frame",
          lambda root, t, **_: D.SintelStereo(root, "clean", t)),
    _sceneflow("Monkaa", "<scene>"),
    _sceneflow("Driving", "<focal>/<direction>/<speed>"),
    _sceneflow("FlyingThings3D", "<TRAIN|TEST>/<A|B|C>/<seq>"),
    _spec("kitti2012-train", "KITTI 2012 training pairs (sparse LiDAR ground truth)", "Kitti2012/training",
          "colored_{0,1}/*_10.png, disp_noc/*_10.png", "uint16 PNG / 256, 0 = unknown", "> 0",
          lambda root, t, **_: D.Kitti2012Stereo(root, "train", t), sparse_gt=True),
    _spec("kitti2012-test", "KITTI 2012 test pairs (no ground truth)", "Kitti2012/testing",
          "colored_{0,1}/*_10.png", "none (test split)", "none",
          lambda root, t, **_: D.Kitti2012Stereo(root, "test", t), has_gt=False),
    _spec("kitti2015-train", "KITTI 2015 training pairs, first frame (sparse ground truth)", "Kitti2015/training",
          "image_{2,3}/*_10.png, disp_occ_0/*_10.png", "uint16 PNG / 256, 0 = unknown", "> 0",
          lambda root, t, **_: D.Kitti2015Stereo(root, "train", t), sparse_gt=True),
    _spec("kitti2015-test", "KITTI 2015 test pairs, first frame (no ground truth)", "Kitti2015/testing",
          "image_{2,3}/*_10.png", "none (test split)", "none",
          lambda root, t, **_: D.Kitti2015Stereo(root, "test", t), has_gt=False),
    _spec("synthetic", "Procedural slanted-plane scenes for training (generated, no download)", None,
          "none", "exact, generated", "every pixel", lambda root, t, **o: _synthetic(t, False, o),
          right=True, options=_SYNTH),
    _spec("synthetic-val", "Procedural scenes for validation: fixed, small, other seed than synthetic", None,
          "none", "exact, generated", "every pixel",
          lambda root, t, **o: _synthetic(t, True, o),
          right=True, options=_SYNTH),
]
_REGISTRY = {spec.name: spec for spec in _SPECS}


FOLDER_PREFIX = "folder:"


def list_datasets() -> list[str]:
    """All registry names, in the order of the README table (``folder:ROOT`` names are not listed)."""
    return list(_REGISTRY)


def _folder_spec(name: str) -> DatasetSpec:
    """The spec of ``folder:ROOT``, read from the folder: ground truth present, sparse, right-view disparity."""
    raw = name[len(FOLDER_PREFIX):]
    root = Path(raw).expanduser()
    if not raw or not root.is_dir():
        raise ValueError(f"Dataset {name!r}: {raw or '(empty path)'} is not a folder. "
                         f"Give folder:ROOT with ROOT holding {folder.LAYOUT}")
    settings = folder.read_settings(root)
    has_gt = (root / "disparity").is_dir()
    encoding = settings.encoding or "by extension: .pfm, .png / 256, .npy"
    if settings.disparity_scale is not None:
        encoding += f", stored x {settings.disparity_scale:g}"
    return _spec(
        name, settings.description or f"Folder dataset at {root}", None, folder.LAYOUT,
        encoding if has_gt else "none (no disparity/ folder)",
        "finite and > 0" + (", valid/ != 0" if (root / "valid").is_dir() else "") if has_gt else "none",
        lambda _root, t, **_: folder.FolderStereo(root, t), has_gt=has_gt, sparse_gt=settings.sparse,
        right=(root / "disparity_right").is_dir(),
    )


def dataset_spec(name: str) -> DatasetSpec:
    """The description of ``name``; unknown names raise ``ValueError`` listing the valid ones."""
    if name.startswith(FOLDER_PREFIX):
        return _folder_spec(name)
    if name not in _REGISTRY:
        raise ValueError(f"Unknown dataset {name!r}. Valid names: {', '.join(_REGISTRY)}, or folder:ROOT for "
                         "your own data")
    return _REGISTRY[name]


def require_ground_truth(name: str, use: str) -> DatasetSpec:
    """The spec of ``name``, or ``ValueError`` saying what is missing if it has no ground truth for ``use``."""
    spec = dataset_spec(name)
    if spec.has_gt:
        return spec
    if name.startswith(FOLDER_PREFIX):
        root = name[len(FOLDER_PREFIX):]
        raise ValueError(f"{use} needs ground truth, but folder dataset {root} has no disparity/ folder; add "
                         f"{root}/disparity/<name>.pfm (or .png x256, .npy) for every left/<name> image")
    raise ValueError(f"{use} needs ground truth, but {name} is a split without it; pick one with ground truth "
                     "(e.g. middlebury2014-train)")


def dataset_tag(name: str) -> str:
    """``name`` made safe for file names: ``folder:/data/my scenes`` gives ``folder-my_scenes``."""
    if name.startswith(FOLDER_PREFIX):
        name = "folder-" + (Path(name[len(FOLDER_PREFIX):]).expanduser().resolve().name or "root")
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def make_dataset(
    name: str,
    root: Union[str, Path, None],
    transforms: Optional[Callable] = None,
    *,
    for_eval: bool = False,
    **options: Any,
) -> Dataset:
    """Build dataset ``name`` from its official layout under ``root`` (``--dataset-root``).

    ``for_eval=True`` selects the benchmark's evaluation mask where it differs from the training one (ETH3D).
    ``options`` are dataset-specific (synthetic: ``size``, ``max_disparity``, ``length``, ...).
    """
    spec = dataset_spec(name)
    unknown = sorted(set(options) - set(spec.options))
    if unknown:
        accepted = ", ".join(spec.options) or "none"
        raise ValueError(f"Dataset {name!r} does not take option(s) {', '.join(unknown)}; accepted: {accepted}")
    if spec.directory is None:
        return spec.builder(root, transforms, **options)
    if root is None:
        raise ValueError(f"Dataset {name!r} needs --dataset-root (the folder that contains {spec.directory}/)")
    root = Path(root).expanduser()
    expected = root / spec.directory
    where = f"Expected layout under {expected}/: {spec.layout}"
    if not root.is_dir():
        raise FileNotFoundError(f"Dataset root {root} does not exist or is not a directory. {where}")
    if not expected.is_dir():
        raise FileNotFoundError(f"Dataset {name!r}: directory {expected} not found. {where}")
    try:
        dataset = spec.builder(root, transforms, for_eval=for_eval)
    except FileNotFoundError as e:
        raise FileNotFoundError(f"Dataset {name!r}: {e}. {where}") from e
    if len(dataset) == 0:
        raise FileNotFoundError(f"Dataset {name!r} is empty. {where}")
    return dataset


def image_pairs(dataset: Dataset) -> list[tuple[str, str]]:
    """The (left, right) image files of a file-backed dataset, in sample order; ``ValueError`` for generated ones."""
    pairs = getattr(dataset, "_images", None)
    if pairs is None:
        raise ValueError(f"{type(dataset).__name__} is generated, it has no image files; pick a split on disk")
    return [(str(left), str(right)) for left, right in pairs]
