"""Folder datasets (``folder:ROOT``): layout, formats, dataset.json, errors, and every script that takes a name."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from data import dataset_spec, make_dataset
from data.io import write_pfm
from data.registry import dataset_tag, require_ground_truth
from data.synthetic import SyntheticStereo, write_folder

H, W = 6, 9


def _image(path: Path, value: int, size=(H, W)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((*size, 3), value, np.uint8)).save(path)


def _pairs(root: Path, names, suffix="png") -> None:
    for k, name in enumerate(names):
        _image(root / "left" / f"{name}.{suffix}", 10 + k)
        _image(root / "right" / f"{name}.{suffix}", 100 + k)


def _disparity(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).uniform(1, 20, (H, W)).astype(np.float32)


def test_synthetic_folder_reads_back_exactly(tmp_path):
    write_folder(str(tmp_path), length=2, size=(32, 48), max_disparity=8, seed=3)
    spec = dataset_spec(f"folder:{tmp_path}")
    assert spec.has_gt and spec.has_right_disparity and not spec.sparse_gt
    dataset = make_dataset(f"folder:{tmp_path}", None)
    scenes = SyntheticStereo(size=(32, 48), max_disparity=8, length=2, seed=3)
    assert len(dataset) == 2
    for index in range(2):
        scene = scenes.render(index)
        images, disparities, masks = dataset[index]
        for got, expected in zip(images + disparities, scene.images + scene.disparities):
            assert torch.equal(got, expected)
        assert all(m.dtype == torch.bool and m.all() for m in masks)


def test_png16_npy_pfm_and_valid_masks(tmp_path):
    _pairs(tmp_path, ["a", "b", "c"], suffix="jpg")
    truth = {name: _disparity(k) for k, name in enumerate("abc")}
    (tmp_path / "disparity").mkdir()
    png = np.round(truth["a"] * 256).astype(np.uint16)
    png[0, 0] = 0  # KITTI convention: 0 = no ground truth
    Image.fromarray(png).save(tmp_path / "disparity/a.png")
    npy = truth["b"].copy()
    npy[1, 1] = np.nan
    np.save(tmp_path / "disparity/b.npy", npy)
    pfm = truth["c"].copy()
    pfm[2, 2], pfm[3, 3] = np.inf, -4.0
    write_pfm(tmp_path / "disparity/c.pfm", pfm)
    (tmp_path / "valid").mkdir()
    for name in "abc":
        mask = np.full((H, W), 255, np.uint8)
        mask[-1] = 0
        Image.fromarray(mask).save(tmp_path / "valid" / f"{name}.png")

    dataset = make_dataset(f"folder:{tmp_path}", None)
    invalid = {"a": [(0, 0)], "b": [(1, 1)], "c": [(2, 2), (3, 3)]}
    for index, name in enumerate("abc"):
        (left, right), (disparity, right_disparity), (valid, right_valid) = dataset[index]
        assert left.shape == (3, H, W) and abs(int(left[0, 0, 0]) - (10 + index)) <= 2  # JPEG, paired by name
        assert right_disparity is None and right_valid is None
        expected_valid = np.ones((H, W), bool)
        expected_valid[-1] = False
        for y, x in invalid[name]:
            expected_valid[y, x] = False
        assert np.array_equal(valid.numpy(), expected_valid)
        tolerance = 0.5 / 256 if name == "a" else 0
        got = disparity[0].numpy()
        assert np.allclose(got[expected_valid], truth[name][expected_valid], atol=tolerance, rtol=0)
        assert (got[~expected_valid] == 0).all()


def test_dataset_json_scale_invalid_value_and_sparse(tmp_path):
    _pairs(tmp_path, ["x"])
    stored = np.round(_disparity(0) * 100).astype(np.uint16)
    stored[0, :3] = 65535
    (tmp_path / "disparity").mkdir()
    Image.fromarray(stored).save(tmp_path / "disparity/x.png")
    (tmp_path / "dataset.json").write_text(json.dumps(
        {"encoding": "png16", "disparity_scale": 100, "invalid_value": 65535, "sparse": True, "description": "mine"}
    ))
    spec = dataset_spec(f"folder:{tmp_path}")
    assert spec.sparse_gt and spec.description == "mine" and spec.has_gt and not spec.has_right_disparity
    _, (disparity, _), (valid, _) = make_dataset(f"folder:{tmp_path}", None)[0]
    assert not valid[0, :3].any() and valid[0, 3:].all() and valid[1:].all()
    assert torch.allclose(disparity[0][valid], torch.from_numpy(stored / 100.0).float()[valid])


def test_folder_without_disparity_serves_prediction_and_is_refused_for_ground_truth(tmp_path):
    _pairs(tmp_path, ["p", "q"])
    name = f"folder:{tmp_path}"
    assert not dataset_spec(name).has_gt
    images, disparities, masks = make_dataset(name, None)[1]
    assert disparities == (None, None) and masks == (None, None) and images[0].shape == (3, H, W)
    with pytest.raises(ValueError, match=r"evaluation needs ground truth.*no disparity/ folder.*disparity/<name>"):
        require_ground_truth(name, "evaluation")


@pytest.mark.parametrize("case, message", [
    ("unpaired", r"7 name\(s\) in left/ have no file in right/: n1, n2, n3, n4, n5, \.\.\."),
    ("orphan disparity", r"1 name\(s\) in disparity/ have no file in left/: zz"),
    ("missing disparity", r"1 name\(s\) in left/ have no file in disparity/: n0"),
    ("mixed sizes", r"pair 'n0' mixes sizes: left/n0.png 6x9, right/n0.png 7x9"),
    ("disparity size", r"pair 'n0' mixes sizes: .*disparity/n0.pfm 6x10"),
    ("rgb disparity", r"disparity PNG .*n0.png must be single-channel"),
    ("corrupt pfm", r"Corrupt PFM header in .*n0.pfm"),
    ("unknown format", r"cannot decode disparity file .*n0.exr: expected \.pfm, \.png, \.npy"),
    ("wrong extension for encoding", r"cannot decode disparity file .*n0.pfm: expected \.npy"),
    ("unknown key", r"dataset.json: unknown key\(s\) scale; known keys: encoding, disparity_scale"),
    ("unknown encoding", r"dataset.json: unknown encoding 'exr'; choose one of pfm, png16, npy"),
    ("bad scale", r"disparity_scale must be a positive number"),
    ("not an image", r"Cannot decode image file .*left/n0.png"),
    ("no right folder", r"has no right/ folder"),
])
def test_bad_folders_fail_when_built_with_one_line(tmp_path, case, message):
    _pairs(tmp_path, ["n0"])
    disparity = tmp_path / "disparity"
    disparity.mkdir()
    write_pfm(disparity / "n0.pfm", _disparity(0))
    if case == "unpaired":
        _pairs(tmp_path, ["n0"] + [f"n{k}" for k in range(1, 8)])
        for k in range(1, 8):
            (tmp_path / "right" / f"n{k}.png").unlink()
            write_pfm(disparity / f"n{k}.pfm", _disparity(k))
    elif case == "orphan disparity":
        write_pfm(disparity / "zz.pfm", _disparity(1))
    elif case == "missing disparity":
        (disparity / "n0.pfm").unlink()
        write_pfm(disparity / "other.pfm", _disparity(1))
        _pairs(tmp_path, ["other"])
    elif case == "mixed sizes":
        _image(tmp_path / "right/n0.png", 1, size=(H + 1, W))
    elif case == "disparity size":
        write_pfm(disparity / "n0.pfm", np.ones((H, W + 1), np.float32))
    elif case == "rgb disparity":
        (disparity / "n0.pfm").unlink()
        _image(disparity / "n0.png", 3)
    elif case == "corrupt pfm":
        (disparity / "n0.pfm").write_bytes(b"P6\n9 6\n255\n")
    elif case == "unknown format":
        (disparity / "n0.pfm").rename(disparity / "n0.exr")
    elif case == "wrong extension for encoding":
        (tmp_path / "dataset.json").write_text('{"encoding": "npy"}')
    elif case == "unknown key":
        (tmp_path / "dataset.json").write_text('{"scale": 256}')
    elif case == "unknown encoding":
        (tmp_path / "dataset.json").write_text('{"encoding": "exr"}')
    elif case == "bad scale":
        (tmp_path / "dataset.json").write_text('{"disparity_scale": 0}')
    elif case == "not an image":
        (tmp_path / "left/n0.png").write_text("hello")
    elif case == "no right folder":
        for path in (tmp_path / "right").iterdir():
            path.unlink()
        (tmp_path / "right").rmdir()
    with pytest.raises((ValueError, FileNotFoundError), match=message) as info:
        make_dataset(f"folder:{tmp_path}", None)
    assert "\n" not in str(info.value)


def test_name_errors_and_file_tag(tmp_path):
    with pytest.raises(ValueError, match="is not a folder"):
        dataset_spec(f"folder:{tmp_path / 'missing'}")
    with pytest.raises(ValueError, match=r"folder:ROOT for your own data"):
        dataset_spec("nonsense")
    assert dataset_tag(f"folder:{tmp_path / 'my scenes'}") == "folder-my_scenes"
    assert dataset_tag("kitti2015-train") == "kitti2015-train"


def test_train_eval_and_eda_accept_folder_names(tmp_path, capsys):
    import cascade_evaluation
    import disparity_eda
    import train

    data = tmp_path / "data"
    write_folder(str(data), length=2, size=(32, 48), max_disparity=8, seed=0)
    args = disparity_eda.get_args_parser().parse_args([
        "--train-datasets", f"folder:{data}", "--num-samples", "2", "--crop-size", "32", "32", "--workers", "0",
        "--output-dir", str(tmp_path / "eda"),
    ])
    report = disparity_eda.main(args)
    assert report["results"][f"folder:{data}"]["samples"] == 2

    no_gt = tmp_path / "no_gt"
    _pairs(no_gt, ["a"])
    parser = train.get_args_parser()
    with pytest.raises(ValueError, match="no disparity/ folder"):
        train.check_args(parser.parse_args(["--train-datasets", f"folder:{no_gt}", "--test-datasets",
                                            f"folder:{data}"]))
    from utils import cli

    with pytest.raises(SystemExit):
        cli.run(cascade_evaluation.main, cascade_evaluation.get_args_parser(), cascade_evaluation.check_args,
                ["--dataset", f"folder:{no_gt}", "--weights", "W.X", "--device", "cpu", "--output-dir", str(tmp_path)])
    assert "no disparity/ folder" in capsys.readouterr().err
