"""Every registry name loads a miniature dataset written in its official layout and formats.

Each writer below creates a few samples with known disparities (including the dataset's invalid markers)
and returns what the reader must produce: the left/right image fill values (to check pairing), the left
and right disparities with invalid pixels at 0, and the masks.
"""

import json
import random
from pathlib import Path
from typing import NamedTuple, Optional

import numpy as np
import pytest
import torch
import torchvision.datasets as tvd
from PIL import Image

from data import dataset_spec, list_datasets, make_dataset, stereo_collate
from data.io import read_image, read_pfm, write_pfm

H, W = 6, 9
pytestmark = pytest.mark.filterwarnings("ignore:The image decoding and encoding capabilities:DeprecationWarning")


class Expected(NamedTuple):
    left: int  # fill value of the left image
    right: int  # fill value of the right image
    disparity: Optional[np.ndarray]  # (H, W) float32, invalid = 0
    valid: Optional[np.ndarray]  # (H, W) bool
    right_disparity: Optional[np.ndarray] = None
    right_valid: Optional[np.ndarray] = None


def _image(path: Path, value: int, size: tuple[int, int] = (H, W)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((*size, 3), value, np.uint8)).save(path)


def _png16(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array.astype(np.uint16)).save(path)


def _png8(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array.astype(np.uint8)).save(path)


def _pfm(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_pfm(path, array)


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def _pfm_disparity(seed: int, sign: float = 1.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Stored PFM values (with inf, nan, 0, negative sign) and the expected (disparity, valid)."""
    d = _rng(seed).uniform(0.5, 40, (H, W)).astype(np.float32)
    stored = sign * d
    stored[0, 0], stored[1, 2], stored[2, 3] = np.inf, np.nan, 0.0
    valid = np.ones((H, W), bool)
    valid[0, 0] = valid[1, 2] = valid[2, 3] = False
    return stored, np.where(valid, d, 0).astype(np.float32), valid


def _png_disparity(seed: int, divisor: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    raw = _rng(seed).integers(1, 60000, (H, W)).astype(np.uint16)
    raw[0, :3] = 0
    expected = (torch.from_numpy(raw.astype(np.float32)) / divisor).numpy()
    return raw, expected, raw > 0


def write_carla(root: Path) -> list[Expected]:
    out = []
    for k, scene in enumerate(["town01", "town02"]):
        base = root / "carla-highres" / "trainingF" / scene
        _image(base / "im0.png", 10 + k), _image(base / "im1.png", 20 + k)
        stored, d, v = _pfm_disparity(k, sign=-1.0)
        stored_r, dr, vr = _pfm_disparity(k + 10)
        _pfm(base / "disp0GT.pfm", stored), _pfm(base / "disp1GT.pfm", stored_r)
        out.append(Expected(10 + k, 20 + k, d, v, dr, vr))
    return out


def _kitti(root: Path, year: int, split: str) -> list[Expected]:
    base = root / f"Kitti{year}" / (split + "ing")
    left_dir, right_dir = ("colored_0", "colored_1") if year == 2012 else ("image_2", "image_3")
    out = []
    for k in range(3):
        name = f"{k:06d}"
        _image(base / left_dir / f"{name}_10.png", 30 + k), _image(base / right_dir / f"{name}_10.png", 40 + k)
        if year == 2015:  # second frames: must not be picked up
            _image(base / left_dir / f"{name}_11.png", 90), _image(base / right_dir / f"{name}_11.png", 91)
        if split == "test":
            out.append(Expected(30 + k, 40 + k, None, None))
            continue
        raw, d, v = _png_disparity(k, 256.0)
        _png16(base / ("disp_noc" if year == 2012 else "disp_occ_0") / f"{name}_10.png", raw)
        if year == 2015:
            _png16(base / "disp_occ_1" / f"{name}_10.png", raw // 2)
        out.append(Expected(30 + k, 40 + k, d, v))
    return out


def _middlebury(root: Path, split: str, calibrations: list[str], ambient: bool = False) -> list[Expected]:
    scenes = {"train": ["Adirondack", "Motorcycle"], "additional": ["Backpack", "Couch"], "test": ["Plants"]}[split]
    out = []
    for calibration in calibrations:
        for k, scene in enumerate(scenes):
            base = root / "Middlebury2014" / split / (scene + calibration)
            value = 50 + k + (5 if calibration == "-imperfect" else 0)
            _image(base / "im0.png", value), _image(base / "im1.png", value + 100)
            if ambient:
                _image(base / "im1E.png", value + 110), _image(base / "im1L.png", value + 120)
            if split == "test":
                out.append(Expected(value, value + 100, None, None))
                continue
            stored, d, v = _pfm_disparity(value)
            stored_r, dr, vr = _pfm_disparity(value + 1)
            _pfm(base / "disp0.pfm", stored), _pfm(base / "disp1.pfm", stored_r)
            out.append(Expected(value, value + 100, d, v, dr, vr))
    # the calibrations are scanned in turn, scenes in sorted order within each
    return out


def write_crestereo(root: Path) -> list[Expected]:
    out = []
    for k, sub in enumerate(["shapenet", "reflective", "tree", "hole"]):
        base = root / "CREStereo" / sub
        _image(base / "0001_left.jpg", 60 + 10 * k), _image(base / "0001_right.jpg", 65 + 10 * k)
        raw, d, v = _png_disparity(k, 32.0)
        raw_r, dr, vr = _png_disparity(k + 5, 32.0)
        _png16(base / "0001_left.disp.png", raw), _png16(base / "0001_right.disp.png", raw_r)
        out.append(Expected(60 + 10 * k, 65 + 10 * k, d, v, dr, vr))
    return out


def write_fallingthings(root: Path) -> list[Expected]:
    fx = 768.1605834960938
    out = []
    for k, rel in enumerate(["single/002_master_chef_can_16k/kitchen_0", "mixed/kitchen_1"]):
        base = root / "FallingThings" / rel
        base.mkdir(parents=True)
        camera = {"camera_settings": [{"name": "left", "intrinsic_settings": {"fx": fx, "fy": fx}}]}
        (base / "_camera_settings.json").write_text(json.dumps(camera))
        _image(base / "000000.left.jpg", 100 + 20 * k), _image(base / "000000.right.jpg", 110 + 20 * k)
        sides = []
        for side, seed in (("left", k), ("right", k + 7)):
            depth = _rng(seed).integers(3000, 60000, (H, W)).astype(np.uint16)
            depth[1, :2] = 0  # no depth
            _png16(base / f"000000.{side}.depth.png", depth)
            d = (6.0 * 100.0 * fx) / torch.from_numpy(depth.astype(np.float32))
            sides += [np.where(depth > 0, d.numpy(), 0).astype(np.float32), depth > 0]
        out.append(Expected(100 + 20 * k, 110 + 20 * k, *sides))
    return out


def _sceneflow(root: Path, variant: str) -> list[Expected]:
    prefix = {"Monkaa": "a_rain_of_stones_x2", "Driving": "15mm_focallength/scene_forwards/fast",
              "FlyingThings3D": "TRAIN/A/0000"}[variant]
    base = root / "SceneFlow" / variant
    disparities = []
    for k in range(2):
        stored, d, v = _pfm_disparity(k)
        stored_r, dr, vr = _pfm_disparity(k + 3)
        _pfm(base / "disparity" / prefix / "left" / f"000{k}.pfm", stored)
        _pfm(base / "disparity" / prefix / "right" / f"000{k}.pfm", stored_r)
        disparities.append((d, v, dr, vr))
    out = []
    for p, pass_dir in enumerate(["frames_cleanpass", "frames_finalpass"]):
        for k in range(2):
            value = 140 + 10 * p + k
            _image(base / pass_dir / prefix / "left" / f"000{k}.png", value)
            _image(base / pass_dir / prefix / "right" / f"000{k}.png", value + 50)
            out.append(Expected(value, value + 50, *disparities[k]))
    return out


def _sintel(root: Path, pass_name: str) -> list[Expected]:
    base = root / "Sintel" / "training"
    out = []
    frames = [("alley_1", "frame_0001"), ("alley_1", "frame_0002"), ("cave_2", "frame_0001")]
    for k, (scene, frame) in enumerate(frames):
        for p, value in (("clean", 150 + k), ("final", 170 + k)):
            _image(base / f"{p}_left" / scene / f"{frame}.png", value)
            _image(base / f"{p}_right" / scene / f"{frame}.png", value + 50)
        rgb = _rng(k).integers(0, 256, (H, W, 3)).astype(np.uint8)
        rgb[0, 0] = 0  # zero disparity: invalid
        _png8(base / "disparities" / scene / f"{frame}.png", rgb)
        occlusion = np.zeros((H, W), np.uint8)
        occlusion[2, :4] = 255
        out_of_frame = np.zeros((H, W), np.uint8)
        out_of_frame[:, -1] = 255
        _png8(base / "occlusions" / scene / f"{frame}.png", occlusion)
        _png8(base / "outofframe" / scene / f"{frame}.png", out_of_frame)
        r, g, b = (rgb[..., i].astype(np.float64) for i in range(3))
        d = (r * 4 + g / 64 + b / 16384).astype(np.float32)
        valid = (d > 0) & (occlusion == 0) & (out_of_frame == 0)
        value = 150 + k if pass_name == "clean" else 170 + k
        out.append(Expected(value, value + 50, d, valid))
    return out


def _instereo2k(root: Path, split: str) -> list[Expected]:
    out = []
    for k, scene in enumerate(["part1_000001", "part1_000002"]):
        base = root / "InStereo2k" / split / scene
        value = 180 + k + (10 if split == "test" else 0)
        _image(base / "left.png", value), _image(base / "right.png", value + 30)
        raw, d, v = _png_disparity(k, 100.0)
        raw_r, dr, vr = _png_disparity(k + 9, 100.0)
        _png16(base / "left_disp.png", raw), _png16(base / "right_disp.png", raw_r)
        out.append(Expected(value, value + 30, d, v, dr, vr))
    return out


def _eth3d(root: Path, split: str, for_eval: bool = False) -> list[Expected]:
    base = root / "ETH3D"
    out = []
    for k, scene in enumerate(["delivery_area_1l", "electro_1l"]):
        folder = "two_view_training" if split == "train" else "two_view_test"
        value = 200 + k + (10 if split == "test" else 0)
        _image(base / folder / scene / "im0.png", value), _image(base / folder / scene / "im1.png", value + 40)
        if split == "test":
            out.append(Expected(value, value + 40, None, None))
            continue
        stored, d, v = _pfm_disparity(k)
        labels = np.full((H, W), 255, np.uint8)
        labels[3, :] = 128  # occluded: ground truth exists
        labels[4, :2] = 0  # unknown
        _pfm(base / "two_view_training_gt" / scene / "disp0GT.pfm", stored)
        _png8(base / "two_view_training_gt" / scene / "mask0nocc.png", labels)
        valid = v & ((labels == 255) if for_eval else (labels != 0))
        out.append(Expected(value, value + 40, d, valid))
    return out


def _middeval3(root: Path, split: str, resolution: str, for_eval: bool = False) -> list[Expected]:
    """The MiddEval3 benchmark layout: <split><res>/<Scene>/im0.png, im1.png, calib.txt (+ disp0GT.pfm, mask0nocc)."""
    base = root / "MiddEval3" / f"{'training' if split == 'train' else 'test'}{resolution}"
    out = []
    for k, scene in enumerate(["Adirondack", "Jadeplant"]):
        value = 150 + k + (10 if split == "test" else 0)
        _image(base / scene / "im0.png", value), _image(base / scene / "im1.png", value + 20)
        (base / scene / "calib.txt").write_text(f"width={W}\nheight={H}\nndisp=32\n")
        if split == "test":
            out.append(Expected(value, value + 20, None, None))
            continue
        stored, d, v = _pfm_disparity(k)
        labels = np.full((H, W), 255, np.uint8)
        labels[2, :] = 128
        labels[5, 3:] = 0
        _pfm(base / scene / "disp0GT.pfm", stored)
        _png8(base / scene / "mask0nocc.png", labels)
        out.append(Expected(value, value + 20, d, v & ((labels == 255) if for_eval else (labels != 0))))
    return out


WRITERS = {
    "crestereo": write_crestereo,
    **{f"middeval3-{split}-{res}": (lambda root, s=split, r=res: _middeval3(root, s, r))
       for split in ("train", "test") for res in "FHQ"},
    "eth3d-train": lambda root: _eth3d(root, "train"),
    "eth3d-test": lambda root: _eth3d(root, "test"),
    "middlebury2014-train": lambda root: _middlebury(root, "train", ["-perfect"]),
    "middlebury2014-other": lambda root: _middlebury(root, "additional", ["-perfect", "-imperfect"]),
    "middlebury2014-train-ambient": lambda root: _middlebury(root, "train", ["-perfect"]),
    "middlebury2014-test": lambda root: _middlebury(root, "test", [""]),
    "instereo2k": lambda root: _instereo2k(root, "train"),
    "instereo2k-test": lambda root: _instereo2k(root, "test"),
    "fallingthings": write_fallingthings,
    "carla-highres": write_carla,
    "sintel": lambda root: _sintel(root, "final"),
    "sintel-clean": lambda root: _sintel(root, "clean"),
    "sceneflow-monkaa": lambda root: _sceneflow(root, "Monkaa"),
    "sceneflow-driving": lambda root: _sceneflow(root, "Driving"),
    "sceneflow-flyingthings": lambda root: _sceneflow(root, "FlyingThings3D"),
    "kitti2012-train": lambda root: _kitti(root, 2012, "train"),
    "kitti2012-test": lambda root: _kitti(root, 2012, "test"),
    "kitti2015-train": lambda root: _kitti(root, 2015, "train"),
    "kitti2015-test": lambda root: _kitti(root, 2015, "test"),
}
JPEG = {"crestereo", "fallingthings"}


def test_every_registry_name_is_covered():
    assert set(list_datasets()) == set(WRITERS) | {"synthetic", "synthetic-val"}


def test_middeval3_evaluation_keeps_non_occluded_pixels_only(tmp_path):
    expected = _middeval3(tmp_path, "train", "H", for_eval=True)
    dataset = make_dataset("middeval3-train-H", tmp_path, for_eval=True)
    for i, exp in enumerate(expected):
        _, (disparity, _), (valid, _) = dataset[i]
        _check_gt(disparity, valid, exp.disparity, exp.valid)
        assert not valid[2].any()  # the occluded row
    with pytest.raises(FileNotFoundError, match="MiddEval3/trainingQ"):
        make_dataset("middeval3-train-Q", tmp_path)


def _check_gt(disparity, valid, expected_disparity, expected_valid):
    if expected_disparity is None:
        assert disparity is None and valid is None
        return
    assert disparity.dtype == torch.float32 and disparity.shape == (1, H, W)
    assert valid.dtype == torch.bool and valid.shape == (H, W)
    torch.testing.assert_close(valid, torch.from_numpy(expected_valid))
    torch.testing.assert_close(disparity[0], torch.from_numpy(expected_disparity), rtol=1e-6, atol=1e-6)
    assert torch.isfinite(disparity).all() and (disparity >= 0).all()


@pytest.mark.parametrize("name", sorted(WRITERS))
def test_loads_official_layout(tmp_path, name):
    expected = WRITERS[name](tmp_path)
    dataset = make_dataset(name, tmp_path)
    spec = dataset_spec(name)
    assert len(dataset) == len(expected)
    tolerance = 2 if name in JPEG else 0
    for i, exp in enumerate(expected):
        images, disparities, masks = dataset[i]
        for image in images:
            assert image.dtype == torch.uint8 and image.shape == (3, H, W)
        assert abs(images[0].float().mean().item() - exp.left) <= tolerance
        if not name.endswith("ambient"):
            assert abs(images[1].float().mean().item() - exp.right) <= tolerance
        _check_gt(disparities[0], masks[0], exp.disparity, exp.valid)
        _check_gt(disparities[1], masks[1], exp.right_disparity, exp.right_valid)
        assert spec.has_gt == (disparities[0] is not None)
        assert spec.has_right_disparity == (disparities[1] is not None)


def test_transforms_receive_the_triple(tmp_path):
    write_carla(tmp_path)
    calls = []

    def transforms(images, disparities, masks):
        calls.append((len(images), len(disparities), len(masks)))
        return images, tuple(d * 2 for d in disparities), masks

    plain = make_dataset("carla-highres", tmp_path)[0]
    transformed = make_dataset("carla-highres", tmp_path, transforms)[0]
    assert calls == [(2, 2, 2)]
    torch.testing.assert_close(transformed[1][0], plain[1][0] * 2)


# Regression tests, one per corrected torchvision defect.

def test_instereo2k_disparity_is_divided_by_100(tmp_path):
    _instereo2k(tmp_path, "train")
    raw = np.asarray(Image.open(tmp_path / "InStereo2k/train/part1_000001/left_disp.png")).astype(np.float32)
    disparity = make_dataset("instereo2k", tmp_path)[0][1][0][0].numpy()
    np.testing.assert_allclose(disparity[raw > 0], raw[raw > 0] / 100, rtol=1e-6)
    torchvision_disparity = tvd.InStereo2k(tmp_path)[0][2][0]
    np.testing.assert_allclose(torchvision_disparity, raw / 1024, rtol=1e-6)  # the defect


def test_kitti2015_pairs_first_frames_with_disp_occ_0_only(tmp_path):
    _kitti(tmp_path, 2015, "train")
    assert len(tvd.Kitti2015Stereo(tmp_path)) == 6  # torchvision: frames _10 and _11 against 3 disparities
    dataset = make_dataset("kitti2015-train", tmp_path)
    assert len(dataset) == 3
    assert all(dataset[i][1][1] is None and dataset[i][2][1] is None for i in range(3))  # no disp_occ_1
    assert not dataset_spec("kitti2015-train").has_right_disparity


def test_kitti_zero_is_invalid_and_float32(tmp_path):
    expected = _kitti(tmp_path, 2012, "train")
    _, disparities, masks = make_dataset("kitti2012-train", tmp_path)[0]
    assert disparities[0].dtype == torch.float32
    assert not masks[0][0, :3].any() and masks[0].sum() == expected[0].valid.sum()
    assert dataset_spec("kitti2012-train").sparse_gt and dataset_spec("kitti2015-train").sparse_gt


def test_kitti2012_test_is_the_test_split(tmp_path):
    _kitti(tmp_path, 2012, "train")
    for k in range(2):
        _image(tmp_path / "Kitti2012/testing/colored_0" / f"{k:06d}_10.png", 7)
        _image(tmp_path / "Kitti2012/testing/colored_1" / f"{k:06d}_10.png", 8)
    dataset = make_dataset("kitti2012-test", tmp_path)
    assert len(dataset) == 2
    images, disparities, masks = dataset[0]
    assert images[0].float().mean() == 7 and disparities == (None, None) and masks == (None, None)


def test_crestereo_and_kitti_produce_masks(tmp_path):
    write_crestereo(tmp_path)
    _, _, masks = make_dataset("crestereo", tmp_path)[0]
    assert masks[0] is not None and masks[1] is not None
    assert not masks[0][0, :3].any()


def test_middlebury_names_construct_with_ambient_views(tmp_path):
    _middlebury(tmp_path, "additional", ["-perfect", "-imperfect"], ambient=True)
    _middlebury(tmp_path, "train", ["-perfect"], ambient=True)
    assert len(make_dataset("middlebury2014-other", tmp_path)) == 4
    dataset = make_dataset("middlebury2014-train-ambient", tmp_path)
    assert len(dataset) == 2 and dataset.use_ambient_views


def test_ambient_views_use_torch_rng(tmp_path):
    _middlebury(tmp_path, "train", ["-perfect"], ambient=True)
    dataset = make_dataset("middlebury2014-train-ambient", tmp_path)

    def draws(seed, python_seed):
        random.seed(python_seed)
        torch.manual_seed(seed)
        return [int(dataset[0][0][1].float().mean()) for _ in range(12)]

    first = draws(0, 1)
    assert draws(0, 2) == first  # Python's random plays no part
    assert set(first) == {150, 160, 170}  # im1.png, im1E.png, im1L.png all drawn
    assert draws(1, 1) != first


def test_non_finite_disparities_are_invalid(tmp_path):
    _middlebury(tmp_path, "train", ["-perfect"])
    write_fallingthings(tmp_path)
    _, disparities, masks = make_dataset("middlebury2014-train", tmp_path)[0]
    assert not masks[0][0, 0] and not masks[0][1, 2] and disparities[0][0, 0, 0] == 0  # inf, nan
    _, disparities, masks = make_dataset("fallingthings", tmp_path)[0]
    assert not masks[0][1, :2].any() and torch.isfinite(disparities[0]).all()  # depth 0


def test_eth3d_masks_for_training_and_evaluation(tmp_path):
    train = _eth3d(tmp_path, "train")
    evaluation = _eth3d(tmp_path / "eval", "train", for_eval=True)
    _, _, masks = make_dataset("eth3d-train", tmp_path)[0]
    assert masks[0][3].all() and not masks[0][4, :2].any()  # occluded (128) kept, unknown (0) dropped
    torch.testing.assert_close(masks[0], torch.from_numpy(train[0].valid))
    _, _, masks = make_dataset("eth3d-train", tmp_path / "eval", for_eval=True)[0]
    assert not masks[0][3].any()  # evaluation scores non-occluded (255) pixels only
    torch.testing.assert_close(masks[0], torch.from_numpy(evaluation[0].valid))


def test_test_splits_collate(tmp_path):
    _eth3d(tmp_path, "test")
    dataset = make_dataset("eth3d-test", tmp_path)
    left, right, disparity, valid = stereo_collate([dataset[0], dataset[1]])
    assert left.shape == right.shape == (2, 3, H, W) and disparity is None and valid is None


def test_collate_stacks_left_ground_truth(tmp_path):
    write_carla(tmp_path)
    dataset = make_dataset("carla-highres", tmp_path)
    left, right, disparity, valid = stereo_collate([dataset[0], dataset[1]])
    assert left.dtype == torch.uint8 and left.shape == (2, 3, H, W)
    assert disparity.shape == (2, 1, H, W) and valid.shape == (2, H, W) and valid.dtype == torch.bool
    torch.testing.assert_close(disparity[1], dataset[1][1][0])


def test_collate_rejects_mixed_batches(tmp_path):
    write_carla(tmp_path)
    _eth3d(tmp_path, "test")
    with pytest.raises(ValueError, match="with and without"):
        stereo_collate([make_dataset("carla-highres", tmp_path)[0], make_dataset("eth3d-test", tmp_path)[0]])


# io


def test_pfm_reader_matches_torchvision_on_big_endian_three_channels(tmp_path):
    from torchvision.datasets.utils import _read_pfm

    data = _rng(0).normal(size=(H, W, 3)).astype(">f4")
    path = tmp_path / "x.pfm"
    path.write_bytes(f"PF\n{W} {H}\n1.0\n".encode() + data.tobytes())
    torch.testing.assert_close(read_pfm(path), torch.from_numpy(_read_pfm(str(path), slice_channels=1).copy()))
    torch.testing.assert_close(read_pfm(path)[0], torch.from_numpy(data[::-1, :, 0].astype(np.float32).copy()))


def test_pfm_write_read_round_trip(tmp_path):
    array = _rng(1).normal(size=(1, H, W)).astype(np.float32)
    write_pfm(tmp_path / "a.pfm", torch.from_numpy(array))
    torch.testing.assert_close(read_pfm(tmp_path / "a.pfm"), torch.from_numpy(array))


@pytest.mark.parametrize("content", [b"P6\n3 2\n255\n", b"Pf\n9 6\n-1.0\n" + b"\0" * 20, b"Pf\nnine six\n-1\n"])
def test_corrupt_pfm_names_the_file(tmp_path, content):
    path = tmp_path / "bad.pfm"
    path.write_bytes(content)
    with pytest.raises(ValueError, match="bad.pfm"):
        read_pfm(path)


# Bad input


def test_unknown_name_lists_valid_names():
    with pytest.raises(ValueError, match="Valid names: crestereo, eth3d-train"):
        make_dataset("kitti", "/data")
    with pytest.raises(ValueError, match="middlebury2014-train"):
        dataset_spec("middlebury")


def test_missing_root_names_directory_and_layout(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nowhere does not exist.*image_\{2,3\}/\*_10.png"):
        make_dataset("kitti2015-train", tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match=r"Kitti2015/training not found.*disp_occ_0"):
        make_dataset("kitti2015-train", tmp_path)
    with pytest.raises(ValueError, match="--dataset-root"):
        make_dataset("sintel", None)


def test_empty_layout_names_pattern_and_layout(tmp_path):
    (tmp_path / "InStereo2k" / "train").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match=r"left.png.*Expected layout under .*InStereo2k/train"):
        make_dataset("instereo2k", tmp_path)


def test_unequal_left_right_counts_name_the_file(tmp_path):
    write_carla(tmp_path)
    (tmp_path / "carla-highres/trainingF/town02/im1.png").unlink()
    with pytest.raises(ValueError, match=r"town02/im0.png has no partner"):
        make_dataset("carla-highres", tmp_path)


def test_missing_disparity_names_the_image(tmp_path):
    _kitti(tmp_path, 2012, "train")
    (tmp_path / "Kitti2012/training/disp_noc/000001_10.png").unlink()
    with pytest.raises(ValueError, match=r"000001_10.png and disparity .*000002_10.png do not match"):
        make_dataset("kitti2012-train", tmp_path)


def test_missing_sintel_occlusion_mask_fails_at_construction(tmp_path):
    _sintel(tmp_path, "final")
    (tmp_path / "Sintel/training/occlusions/cave_2/frame_0001.png").unlink()
    with pytest.raises(FileNotFoundError, match="occlusions/cave_2/frame_0001.png"):
        make_dataset("sintel", tmp_path)


@pytest.mark.parametrize("suffix", ["png", "jpg"])
def test_truncated_image_names_the_file(tmp_path, suffix):
    path = tmp_path / f"half.{suffix}"
    Image.fromarray(_rng(0).integers(0, 256, (32, 32, 3)).astype(np.uint8)).save(path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ValueError, match=f"half.{suffix}"):
        read_image(path)
    with pytest.raises(FileNotFoundError, match="missing.png"):
        read_image(tmp_path / "missing.png")


def test_truncated_image_fails_when_read(tmp_path):
    write_carla(tmp_path)
    path = tmp_path / "carla-highres/trainingF/town01/im1.png"
    path.write_bytes(path.read_bytes()[:40])
    dataset = make_dataset("carla-highres", tmp_path)
    with pytest.raises(ValueError, match="town01/im1.png"):
        dataset[0]


def test_disparity_of_wrong_size_names_the_file(tmp_path):
    write_carla(tmp_path)
    _pfm(tmp_path / "carla-highres/trainingF/town01/disp0GT.pfm", np.ones((H + 1, W), np.float32))
    with pytest.raises(ValueError, match="town01/disp0GT.pfm is"):
        make_dataset("carla-highres", tmp_path)[0]


def test_unknown_option_is_rejected(tmp_path):
    write_carla(tmp_path)
    with pytest.raises(ValueError, match="does not take option.*size"):
        make_dataset("carla-highres", tmp_path, size=(4, 4))
    with pytest.raises(ValueError, match="accepted: size"):
        make_dataset("synthetic", None, colour=True)
