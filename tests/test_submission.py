"""Benchmark submissions: each layout is written by predict.py, then read back with the project's own readers."""

import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import predict
from data import make_dataset
from data.io import read_pfm
from data.submission import SubmissionWriter
from utils import cli

H, W = 20, 36


class ConstantModel(torch.nn.Module):
    """Predicts 0.25 x (its input width) + 0.3 px everywhere: a known disparity at any size."""

    size_divisor = 16
    output_channels = 2

    def __init__(self):
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(()))

    def forward(self, left, right, flow_init=None, num_iters=10, return_all=True):
        b, _, h, w = left.shape
        disparity = torch.full((b, 1, h, w), 0.25 * w + 0.3)
        return [torch.cat([disparity, torch.zeros_like(disparity)], 1)]


def _image(path: Path, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (H, W, 3), dtype=np.uint8)).save(path)


def _run(argv, monkeypatch):
    monkeypatch.setattr(predict, "load_model_from_args", lambda args: (ConstantModel(), "constant"))
    return cli.run(predict.main, predict.get_args_parser(), predict.check_args, argv)


def _expected(size=None):
    """What ConstantModel gives at the input size: padded to 48 wide, cropped back; or run at ``size``, rescaled."""
    if size is None:
        return 0.25 * 48 + 0.3
    return (0.25 * 32 + 0.3) * W / size[1]  # --eval-size 16 24 pads to 16 x 32


@pytest.mark.parametrize("year", [2015, 2012])
def test_kitti_round_trip(tmp_path, monkeypatch, year):
    views = ("image_2", "image_3") if year == 2015 else ("colored_0", "colored_1")
    testing = tmp_path / f"Kitti{year}" / "testing"
    for k in range(2):
        for v, view in enumerate(views):
            _image(testing / view / f"{k:06d}_10.png", 2 * k + v)
        _image(testing / views[0] / f"{k:06d}_11.png", 9)  # second frames are not submitted
    out = tmp_path / "sub"
    assert _run(["--dataset", f"kitti{year}-test", "--dataset-root", str(tmp_path), "--weights", "W.X",
                 "--submission", str(out), "--zip", "--device", "cpu"], monkeypatch) == 0
    assert sorted(p.name for p in (out / "disp_0").iterdir()) == ["000000_10.png", "000001_10.png"]
    # read back as if it were the training ground truth, with the project's KITTI reader
    training = tmp_path / "readback" / f"Kitti{year}" / "training"
    for view in views:
        (training / view).mkdir(parents=True)
        for k in range(2):
            (training / view / f"{k:06d}_10.png").write_bytes((testing / view / f"{k:06d}_10.png").read_bytes())
    (training / ("disp_occ_0" if year == 2015 else "disp_noc")).symlink_to(out / "disp_0")
    dataset = make_dataset(f"kitti{year}-train", tmp_path / "readback")
    for k in range(2):
        _, (disparity, _), (valid, _) = dataset[k]
        assert disparity.shape == (1, H, W) and valid.all()
        assert torch.allclose(disparity, torch.full_like(disparity, _expected()), atol=0.5 / 256)
    with zipfile.ZipFile(tmp_path / "sub.zip") as z:
        assert sorted(z.namelist()) == ["disp_0/000000_10.png", "disp_0/000001_10.png"]


def test_middlebury_round_trip_at_eval_size(tmp_path, monkeypatch):
    scenes = ["Australia", "Bicycle2"]
    for k, scene in enumerate(scenes):
        for v in range(2):
            _image(tmp_path / "MiddEval3" / "testH" / scene / f"im{v}.png", 2 * k + v)
    out = tmp_path / "sub"
    assert _run(["--dataset", "middeval3-test-H", "--dataset-root", str(tmp_path), "--weights", "W.X",
                 "--submission", str(out), "--method-name", "Mine", "--eval-size", "16", "24", "--device", "cpu"],
                monkeypatch) == 0
    for scene in scenes:
        disparity = read_pfm(out / "testH" / scene / "disp0Mine.pfm")
        assert disparity.shape == (1, H, W)
        assert torch.allclose(disparity, torch.full_like(disparity, _expected((16, 24))), atol=1e-5)
        assert float((out / "testH" / scene / "timeMine.txt").read_text()) >= 0


def test_eth3d_round_trip(tmp_path, monkeypatch):
    for k, scene in enumerate(["lakeside_1l", "tunnel_2s"]):
        for v in range(2):
            _image(tmp_path / "ETH3D" / "two_view_test" / scene / f"im{v}.png", 2 * k + v)
    out = tmp_path / "sub"
    assert _run(["--dataset", "eth3d-test", "--dataset-root", str(tmp_path), "--weights", "W.X",
                 "--submission", str(out), "--device", "cpu"], monkeypatch) == 0
    assert sorted(p.name for p in (out / "low_res_two_view").iterdir()) == [
        "lakeside_1l.pfm", "lakeside_1l.txt", "tunnel_2s.pfm", "tunnel_2s.txt"]
    disparity = read_pfm(out / "low_res_two_view" / "tunnel_2s.pfm")
    assert torch.allclose(disparity, torch.full((1, H, W), _expected()), atol=1e-5)
    key, value = (out / "low_res_two_view" / "tunnel_2s.txt").read_text().split()
    assert key == "runtime" and float(value) >= 0


def test_folder_dataset_prediction_without_ground_truth(tmp_path, monkeypatch):
    for name in ("a", "b"):
        _image(tmp_path / "data" / "left" / f"{name}.png", 1)
        _image(tmp_path / "data" / "right" / f"{name}.png", 2)
    assert _run(["--dataset", f"folder:{tmp_path / 'data'}", "--weights", "W.X", "--output-dir", str(tmp_path / "o"),
                 "--formats", "pfm", "--device", "cpu"], monkeypatch) == 0
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == ["a.pfm", "b.pfm"]


@pytest.mark.parametrize("argv, message", [
    (["--dataset", "kitti2015-train", "--submission", "o"], "--submission needs a benchmark split; kitti2015-train"),
    (["--dataset", "synthetic-val", "--submission", "o"], "has none"),
    (["--left", "l.png", "--right", "r.png", "--submission", "o"], "--submission needs --dataset"),
    (["--dataset", "eth3d-test", "--output-dir", "o", "--zip"], "--zip zips a --submission"),
    (["--dataset", "eth3d-test", "--submission", "o", "--method-name", "my-method"], "letters and digits"),
    (["--dataset", "eth3d-test", "--left", "l.png", "--output-dir", "o"], "not both"),
    (["--dataset", "eth3d-test"], "exactly one of --output-dir"),
])
def test_bad_submission_requests_fail_before_the_model(argv, message, monkeypatch, capsys):
    monkeypatch.setattr(predict, "load_model_from_args", lambda args: pytest.fail("model built for bad input"))
    with pytest.raises(SystemExit):
        cli.run(predict.main, predict.get_args_parser(), predict.check_args, argv + ["--weights", "W.X"])
    assert message in capsys.readouterr().err


def test_writer_keeps_tiny_positive_disparities_valid(tmp_path):
    writer = SubmissionWriter(tmp_path, "kitti2015-test")
    writer.write(tmp_path / "000000_10.png", np.array([[0.001, 0.0, np.inf, 300.0]], np.float32), 0.1)
    stored = np.array(Image.open(tmp_path / "disp_0" / "000000_10.png"))
    assert stored.tolist() == [[1, 0, 0, 65535]]
