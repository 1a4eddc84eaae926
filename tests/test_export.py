"""export.py, utils/deploy.py and hubconf.py: exports at a small size (1-2 iterations), the accuracy check passing
and catching a perturbed graph, the dynamic variant, the uint8 variant, bad input, and the hub entry points."""

import importlib.util
from pathlib import Path

import onnx
import pytest
import torch

import export
from models import get_model, list_models
from utils import deploy
from utils.evaluation import cascade_inference

REPO = Path(__file__).resolve().parents[1]


def run(argv: list[str]) -> int:
    parser = export.get_args_parser()
    args = parser.parse_args(argv)
    export.check_args(args, parser)
    return export.main(args, parser)


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "random.pth"
    torch.save(get_model("crestereo_base").state_dict(), path)
    return path


@pytest.fixture(scope="module")
def eager(weights) -> torch.nn.Module:
    return get_model("crestereo_base", weights=weights).eval()


@pytest.fixture(scope="module")
def static_onnx(weights, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("onnx") / "model.onnx"
    assert run(["--weights", str(weights), "--format", "onnx", "--height", "64", "--width", "96",
                "--iterations", "2", "--output", str(path)]) == 0
    return path


def normalised(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_onnx_graph_signature_and_metadata(static_onnx, eager):
    proto = onnx.load(str(static_onnx))
    assert max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")) >= 17

    def signature(values):
        return [(v.name, v.type.tensor_type.elem_type, [d.dim_value for d in v.type.tensor_type.shape.dim])
                for v in values]

    float32 = onnx.TensorProto.FLOAT
    assert signature(proto.graph.input) == [("left", float32, [1, 3, 64, 96]), ("right", float32, [1, 3, 64, 96])]
    assert signature(proto.graph.output) == [("disparity", float32, [1, 1, 64, 96])]
    operators = {node.op_type for node in proto.graph.node}
    assert "GridSample" not in operators and "Gather" in operators  # lowered to row gathers (slow ORT kernel)
    loaded = deploy.load_exported(static_onnx)
    assert loaded.metadata["iterations"] == 2 and loaded.metadata["size_divisor"] == 16
    assert loaded.static_size == (64, 96) and loaded.input_dtype == torch.float32
    left, right = normalised(1, 3, 64, 96, seed=1), normalised(1, 3, 64, 96, seed=2)
    with torch.no_grad():
        expected = cascade_inference(eager, left, right, 2, 1)[:, :1]
    torch.testing.assert_close(loaded(left, right), expected, atol=1e-4, rtol=0)


@pytest.mark.parametrize("shape", [(2, 5, 7, 9), (2, 4, 1, 9)])
def test_gather_grid_sample_equals_grid_sample(shape):
    generator = torch.Generator().manual_seed(0)
    image = torch.randn(*shape, generator=generator)
    grid = torch.rand(2, 4, 6, 2, generator=generator) * 2.6 - 1.3  # a third of the points outside the image
    grid[0, 0, :3] = torch.tensor([[-1.0, -1.0], [1.0, 1.0], [0.0, 1.0]])  # corners and edges exactly
    expected = torch.nn.functional.grid_sample(image, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    assert expected.abs().amax() > 0 and (expected == 0).any()
    torch.testing.assert_close(deploy.gather_grid_sample(image, grid), expected, atol=1e-6, rtol=0)


def test_a_perturbed_onnx_graph_is_caught(static_onnx, eager, tmp_path):
    proto = onnx.load(str(static_onnx))
    weight = max((t for t in proto.graph.initializer if t.data_type == onnx.TensorProto.FLOAT),
                 key=lambda t: len(t.raw_data))
    array = onnx.numpy_helper.to_array(weight).copy()
    array.flat[: array.size // 2] *= 1.05
    weight.CopyFrom(onnx.numpy_helper.from_array(array, weight.name))
    perturbed = tmp_path / "perturbed.onnx"
    onnx.save(proto, str(perturbed))
    module = deploy.DeployableStereo(eager, 2)
    inputs = {"random": (normalised(1, 3, 64, 96, seed=1), normalised(1, 3, 64, 96, seed=2))}
    good = deploy.compare(deploy.load_exported(static_onnx), module, inputs, atol=1e-3)
    bad = deploy.compare(deploy.load_exported(perturbed), module, inputs, atol=1e-3)
    assert good[0]["ok"] and good[0]["max_abs_diff"] < 1e-4
    assert not bad[0]["ok"] and bad[0]["max_abs_diff"] > 1e-3


def test_the_command_fails_when_the_export_differs(weights, tmp_path, monkeypatch, capsys):
    def save_perturbed(program, path, metadata):
        for name in [k for k in program.state_dict if "flow_head.conv1" in k]:  # no normalisation after it
            program.state_dict[name] = torch.nn.Parameter(program.state_dict[name] * 1.1)
        deploy.save_pt2(program, path, metadata)

    monkeypatch.setattr(export, "save_pt2", save_perturbed)
    code = run(["--weights", str(weights), "--format", "pt2", "--height", "64", "--width", "64", "--iterations", "2",
                "--output", str(tmp_path / "m.pt2")])
    out, err = capsys.readouterr()
    assert code == 1
    assert "FAILED (above --atol 0.001)" in out
    assert "differs from the eager model by more than --atol 0.001 px" in err


def test_pt2_dynamic_export_takes_other_batches_and_sizes(weights, eager, tmp_path, capsys):
    path = tmp_path / "dynamic.pt2"
    assert run(["--weights", str(weights), "--format", "pt2", "--height", "64", "--width", "64", "--iterations", "2",
                "--dynamic", "--output", str(path)]) == 0
    assert "random 2x3x80x80" in capsys.readouterr().out  # the check ran a second batch size and size
    loaded = deploy.load_exported(path)
    assert loaded.static_size is None
    assert "multiples of 16" in loaded.metadata["shape"]
    left, right = normalised(3, 3, 48, 96, seed=3), normalised(3, 3, 48, 96, seed=4)
    with torch.no_grad():
        expected = cascade_inference(eager, left, right, 2, 1)[:, :1]
    torch.testing.assert_close(loaded(left, right), expected, atol=1e-4, rtol=0)
    with pytest.raises(Exception, match="height_blocks|16"):
        loaded(normalised(1, 3, 56, 64), normalised(1, 3, 56, 64))


def test_onnx_dynamic_export_names_its_dimensions(weights, tmp_path):
    path = tmp_path / "dynamic.onnx"
    assert run(["--weights", str(weights), "--format", "onnx", "--height", "32", "--width", "64", "--iterations", "2",
                "--dynamic", "--output", str(path)]) == 0
    proto = onnx.load(str(path))
    dims = [d.dim_param or d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", 3, "16*height_blocks", "16*width_blocks"]
    assert "multiples of 16" in deploy.load_exported(path).metadata["shape"]


def test_two_cascades_and_uint8_variant_in_one_graph(weights, eager, tmp_path):
    path = tmp_path / "cascade.pt2"
    assert run(["--weights", str(weights), "--format", "pt2", "--height", "64", "--width", "64", "--iterations", "2",
                "--cascades", "2", "--with-preprocessing", "--output", str(path)]) == 0
    as_float, as_uint8 = deploy.load_exported(path), deploy.load_exported(tmp_path / "cascade_uint8.pt2")
    assert as_float.metadata["cascades"] == 2 and as_float.metadata["size_divisor"] == 32
    assert as_uint8.input_dtype == torch.uint8 and as_float.input_dtype == torch.float32
    images = torch.randint(0, 256, (2, 1, 3, 64, 64), generator=torch.Generator().manual_seed(5), dtype=torch.uint8)
    left, right = ((x.float() / 255 - 0.5) / 0.5 for x in images)
    with torch.no_grad():
        expected = cascade_inference(eager, left, right, 2, 2)[:, :1]
    torch.testing.assert_close(as_float(left, right), expected, atol=1e-4, rtol=0)
    torch.testing.assert_close(as_uint8(*images), expected, atol=1e-4, rtol=0)


@pytest.mark.parametrize("argv, message", [
    (["--height", "50"], "--height 50 and --width 64 must be multiples of 16"),
    (["--cascades", "2", "--height", "48"], "must be multiples of 32 for crestereo_base with 2 cascade(s)"),
    (["--model", "nope"], "unknown --model 'nope'; choose from crestereo_base"),
    (["--format", "tflite"], "argument --format: invalid choice: 'tflite'"),
    (["--weights", "BAD"], "cannot load --weights BAD: Unknown weights 'BAD'"),
    (["--weights", "missing.pth"], "cannot load --weights missing.pth: Weights file missing.pth does not exist"),
    (["--weights", "{garbage}"], "cannot load --weights"),
    (["--output", "{tmp}/no/such/dir/m.onnx"], "the folder of --output"),
    (["--output", "{tmp}/m.pt2"], "must end in .onnx for --format onnx"),
    (["--opset", "16"], "--opset 16 is too old"),
    (["--onnxruntime-absent"], "--format onnx: ONNX needs the optional package(s) onnxruntime: pip install"),
])
def test_bad_input_one_clear_line_before_any_export(argv, message, tmp_path, monkeypatch, capsys):
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    monkeypatch.setattr(export, "export_program", lambda *a: pytest.fail("export started despite bad input"))
    if argv == ["--onnxruntime-absent"]:
        real_find_spec = importlib.util.find_spec
        monkeypatch.setattr(importlib.util, "find_spec",
                            lambda name, *a: None if name == "onnxruntime" else real_find_spec(name, *a))
        argv = []
    argv = [a.format(tmp=tmp_path, garbage=garbage) for a in argv]
    defaults = ["--format", "onnx", "--height", "64", "--width", "64", "--output", str(tmp_path / "m.onnx")]
    with pytest.raises(SystemExit) as stop:
        run(defaults + argv)
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert message in err[-1] and len([line for line in err if "error" in line]) == 1


def hub_entry_points() -> list[str]:
    """What torch.hub.list reports for this checkout: the public callables of hubconf.py."""
    spec = importlib.util.spec_from_file_location("hubconf_under_test", REPO / "hubconf.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return sorted(name for name in dir(module) if callable(getattr(module, name)) and not name.startswith("_"))


def test_hub_entry_points_are_the_registry_and_build_as_get_model(weights):
    assert hub_entry_points() == list_models()
    for name in list_models():
        assert type(torch.hub.load(str(REPO), name, source="local")) is type(get_model(name))
    loaded = torch.hub.load(str(REPO), "crestereo_base", source="local", weights=str(weights))
    expected = get_model("crestereo_base", weights=weights).state_dict()
    assert loaded.state_dict().keys() == expected.keys()
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in expected.items())


def test_predict_through_onnxruntime_equals_the_torch_backend(static_onnx, weights, tmp_path, capsys):
    import numpy as np
    from PIL import Image

    import predict
    from utils import cli

    rng = np.random.default_rng(0)
    for name in ("l.png", "r.png"):
        Image.fromarray(rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)).save(tmp_path / name)
    common = ["--left", str(tmp_path / "l.png"), "--right", str(tmp_path / "r.png"), "--formats", "npy",
              "--device", "cpu"]
    assert cli.run(predict.main, predict.get_args_parser(), predict.check_args, argv=common + [
        "--backend", "onnxruntime", "--onnx", str(static_onnx), "--output-dir", str(tmp_path / "ort")]) == 0
    assert "2 iterations and 1 cascade(s) fixed in the graph" in capsys.readouterr().out
    assert cli.run(predict.main, predict.get_args_parser(), predict.check_args, argv=common + [
        "--weights", str(weights), "--n-iterations", "2", "--inference-size", "64", "96",
        "--output-dir", str(tmp_path / "torch")]) == 0
    through_ort, eager = np.load(tmp_path / "ort" / "l.npy"), np.load(tmp_path / "torch" / "l.npy")
    assert through_ort.shape == (37, 53)
    np.testing.assert_allclose(through_ort, eager, atol=1e-4, rtol=0)


@pytest.mark.parametrize("extra, message", [
    ([], "--backend onnxruntime needs --onnx PATH"),
    (["--onnx", "{onnx}", "--weights", "x.pth"], "drop --weights/--checkpoint"),
    (["--onnx", "{onnx}", "--scale", "0.5"], "is a static 64x96 graph"),
    (["--onnx", "{onnx}", "--onnxruntime-absent"], "ONNX needs the optional package(s) onnxruntime"),
])
def test_predict_onnxruntime_bad_input(extra, message, static_onnx, tmp_path, monkeypatch, capsys):
    import predict
    from utils import cli

    if "--onnxruntime-absent" in extra:
        real_find_spec = importlib.util.find_spec
        monkeypatch.setattr(importlib.util, "find_spec",
                            lambda name, *a: None if name == "onnxruntime" else real_find_spec(name, *a))
        extra = [e for e in extra if e != "--onnxruntime-absent"]
    image = tmp_path / "a.png"
    from PIL import Image

    Image.new("RGB", (40, 30)).save(image)
    argv = ["--left", str(image), "--right", str(image), "--output-dir", str(tmp_path / "out"),
            "--backend", "onnxruntime", *[e.format(onnx=static_onnx) for e in extra]]
    with pytest.raises(SystemExit) as stop:
        cli.run(predict.main, predict.get_args_parser(), predict.check_args, argv=argv)
    assert stop.value.code == 2 and message in capsys.readouterr().err
