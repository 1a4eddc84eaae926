import numpy as np
import pytest
import torch
from PIL import Image

import predict
from data.io import read_pfm, read_png_disparity
from models import get_model
from utils import cli


def write_image(path, height, width, seed=0):
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(path)
    return path


class WidthModel(torch.nn.Module):
    """Predicts disparity 0.1 x (its input width) everywhere, +1 px per recurrent iteration."""

    size_divisor = 16
    output_channels = 2

    def __init__(self):
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(()))  # gives the model a device
        self.inputs = []

    def forward(self, left, right, flow_init=None, num_iters=10, return_all=True):
        self.inputs.append(tuple(left.shape))
        b, _, h, w = left.shape
        disparity = torch.full((b, 1, h, w), 0.1 * w + num_iters)
        return [torch.cat([disparity, torch.zeros_like(disparity)], 1)]


def run(argv, monkeypatch=None, model=None):
    """predict.py's command line: parse, check, main; bad input exits with status 2 and its message on stderr."""
    if model is not None:
        monkeypatch.setattr(predict, "load_model_from_args", lambda args: (model, "stub"))
    return cli.run(predict.main, predict.get_args_parser(), predict.check_args, argv)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "random.pth"
    torch.save({"model": get_model("crestereo_base").state_dict(), "args": {"model": "crestereo_base"}}, path)
    return path


def test_real_model_outputs_read_back_and_keep_the_odd_input_size(tmp_path, checkpoint):
    left, right = write_image(tmp_path / "l.png", 37, 53), write_image(tmp_path / "r.png", 37, 53, seed=1)
    out = tmp_path / "out"
    code = run(["--left", str(left), "--right", str(right), "--checkpoint", str(checkpoint), "--output-dir", str(out),
                "--n-iterations", "2", "--formats", "pfm", "png16", "npy", "color", "--device", "cpu"])
    assert code == 0
    raw = np.load(out / "l.npy")
    assert raw.shape == (37, 53) and raw.dtype == np.float32 and np.isfinite(raw).all()
    np.testing.assert_array_equal(read_pfm(out / "l.pfm")[0].numpy(), raw)
    png = read_png_disparity(out / "l.png", 256.0)[0].numpy()
    assert png.shape == (37, 53)
    np.testing.assert_allclose(png, np.clip(raw, 0, 65535 / 256), atol=0.5 / 256 + 1e-6)
    assert Image.open(out / "l_color.png").size[0] > 53


def test_png16_and_pfm_round_trip_a_known_disparity(tmp_path):
    disparity = np.linspace(0.0, 250.0, 7 * 9, dtype=np.float32).reshape(7, 9)
    disparity[0, 0] = -3.0  # negative: invalid (0) in the KITTI convention
    predict.write_png16(tmp_path / "d.png", disparity)
    decoded = read_png_disparity(tmp_path / "d.png", 256.0)[0].numpy()
    np.testing.assert_allclose(decoded, np.clip(disparity, 0, None), atol=0.5 / 256)
    assert decoded[0, 0] == 0
    args = predict.get_args_parser().parse_args(
        ["--left", "x", "--right", "y", "--weights", "w.pth", "--output-dir", "o", "--formats", "pfm", "npy",
         "--focal", "700", "--baseline", "0.12"]
    )
    predict.write_outputs(tmp_path / "sub" / "d", disparity, args)
    np.testing.assert_array_equal(read_pfm(tmp_path / "sub" / "d.pfm")[0].numpy(), disparity)
    depth = read_pfm(tmp_path / "sub" / "d_depth.pfm")[0].numpy()
    np.testing.assert_allclose(depth[disparity > 0], 700 * 0.12 / disparity[disparity > 0], rtol=1e-6)
    assert depth[0, 0] == 0 and np.array_equal(np.load(tmp_path / "sub" / "d_depth.npy"), depth)


@pytest.mark.parametrize("size_args, model_size", [
    ([], (48, 64)),  # 37x53 padded to multiples of 16
    (["--scale", "0.5"], (32, 32)),  # 18x26 (rounded) padded
    (["--inference-size", "20", "100"], (32, 112)),
])
def test_padding_resize_and_disparity_rescaling(tmp_path, monkeypatch, size_args, model_size):
    model = WidthModel()
    left, right = write_image(tmp_path / "l.png", 37, 53), write_image(tmp_path / "r.png", 37, 53, seed=1)
    code = run(["--left", str(left), "--right", str(right), "--weights", "w", "--output-dir", str(tmp_path / "o"),
                "--formats", "npy", "--n-iterations", "3", *size_args], monkeypatch, model)
    assert code == 0 and model.inputs == [(1, 3, *model_size)]
    disparity = np.load(tmp_path / "o" / "l.npy")
    assert disparity.shape == (37, 53)
    # The model saw width w (padded width model_size[1]); its w-pixel disparity is scaled by 53 / w.
    unpadded_width = {(): 53, ("--scale", "0.5"): 26, ("--inference-size", "20", "100"): 100}[tuple(size_args)]
    expected = (0.1 * model_size[1] + 3) * 53 / unpadded_width
    np.testing.assert_allclose(disparity, expected, rtol=1e-5)


def test_folder_run_reports_bad_pairs_goes_on_and_fails_at_the_end(tmp_path, monkeypatch, capsys):
    for scene in ("a", "b"):  # equal file names in different folders must not collide
        write_image(tmp_path / "left" / scene / "im.png", 20, 30)
        write_image(tmp_path / "right" / scene / "im.png", 20, 30)
    write_image(tmp_path / "left" / "c" / "im.png", 20, 30)
    write_image(tmp_path / "right" / "c" / "im.png", 20, 31)  # size mismatch
    (tmp_path / "left" / "d").mkdir()
    (tmp_path / "left" / "d" / "im.png").write_bytes(b"not a png")  # unreadable
    write_image(tmp_path / "right" / "d" / "im.png", 20, 30)
    code = run(["--left", str(tmp_path / "left" / "*" / "im.png"), "--right", str(tmp_path / "right" / "*" / "im.png"),
                "--weights", "w", "--output-dir", str(tmp_path / "o"), "--formats", "npy"], monkeypatch, WidthModel())
    assert code == 1
    assert sorted(p.relative_to(tmp_path / "o").as_posix() for p in (tmp_path / "o").rglob("*.npy")) == [
        "a/im.npy", "b/im.npy"]
    err = capsys.readouterr().err
    assert "2 pair(s) failed" in err and "20x30" in err and "20x31" in err and "cannot read" in err


def test_output_names_never_collide():
    from pathlib import Path

    names = predict.output_names([Path("/x/s1/im0.png"), Path("/x/s2/im0.png"), Path("/x/s2/im0.jpg")])
    assert names == ["s1/im0", "s2/im0_png", "s2/im0_jpg"]
    assert predict.output_names([Path("/data/left/0001.png")]) == ["0001"]


@pytest.mark.parametrize("argv, message", [
    (["--focal", "700"], "both --focal"),
    (["--scale", "0"], "--scale must be positive"),
    (["--n-iterations", "0"], "at least 1"),
])
def test_bad_flags_are_rejected_before_any_work(tmp_path, argv, message, capsys):
    argv = ["--left", "l", "--right", "r", "--weights", "w", "--output-dir", str(tmp_path), *argv]
    with pytest.raises(ValueError, match=message):
        predict.check_args(predict.get_args_parser().parse_args(argv))
    with pytest.raises(SystemExit) as exit_info:
        cli.parse_args(predict.get_args_parser(), predict.check_args, argv)
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_missing_inputs_weights_and_unwritable_output(tmp_path, monkeypatch, capsys):
    def fails(argv, message, model=None):
        with pytest.raises(SystemExit) as exit_info:
            run(argv, monkeypatch, model)
        assert exit_info.value.code == 2 and message in capsys.readouterr().err

    left = write_image(tmp_path / "l.png", 20, 30)
    fails(["--left", str(tmp_path / "nothing*.png"), "--right", str(left), "--weights", "w", "--output-dir",
           str(tmp_path / "o")], "no images found")
    write_image(tmp_path / "r" / "a.png", 20, 30), write_image(tmp_path / "r" / "b.png", 20, 30)
    fails(["--left", str(left), "--right", str(tmp_path / "r"), "--weights", "w", "--output-dir", str(tmp_path)],
          "1 left and 2 right")
    fails(["--left", str(left), "--right", str(left), "--checkpoint", str(tmp_path / "missing.pth"),
           "--output-dir", str(tmp_path / "o")], "missing.pth does not exist")
    fails(["--left", str(left), "--right", str(left), "--weights", "NoSuch.WEIGHTS", "--output-dir",
           str(tmp_path / "o"), "--device", "cpu"], "Unknown weights")
    blocker = tmp_path / "file"
    blocker.write_text("")
    fails(["--left", str(left), "--right", str(left), "--weights", "w", "--output-dir", str(blocker / "o")],
          "cannot write to --output-dir", WidthModel())


def test_cascades_pad_to_the_larger_multiple_and_run_coarse_to_fine(tmp_path, monkeypatch):
    model = WidthModel()
    left, right = write_image(tmp_path / "l.png", 37, 53), write_image(tmp_path / "r.png", 37, 53, seed=1)
    code = run(["--left", str(left), "--right", str(right), "--weights", "w", "--output-dir", str(tmp_path / "o"),
                "--formats", "npy", "--n-cascades", "2", "--n-iterations", "2"], monkeypatch, model)
    assert code == 0 and model.inputs == [(1, 3, 32, 32), (1, 3, 64, 64)]
    np.testing.assert_allclose(np.load(tmp_path / "o" / "l.npy"), 0.1 * 64 + 2, rtol=1e-6)
