"""Deployable forms of a stereo model: one graph for a fixed number of iterations and cascades, exported with
``torch.export`` (saved as ``.pt2``) or to ONNX, and run back through the loaded program or ONNX Runtime.

API:

- ``DeployableStereo(model, num_iters, num_cascades=1, uint8_input=False)``: ``forward(left, right)`` takes
  ``(B, 3, H, W)`` images (float32 normalised to [-1, 1] as the eval preset does, or uint8 in [0, 255] with
  ``uint8_input``) and returns the positive disparity ``(B, 1, H, W)`` float32 in input pixels, computed by
  ``utils.evaluation.cascade_inference``. H and W must be multiples of ``size_divisor``.
- ``export_program(module, example, dynamic)`` -> ``torch.export.ExportedProgram``; with ``dynamic`` the batch,
  H and W are symbolic, H and W multiples of the size divisor (the graph's range constraints say so).
- ``save_pt2`` / ``save_onnx`` write it with a metadata dict (``metadata``); ``load_exported(path)`` gives
  an ``ExportedStereo``: call it with tensors, read ``metadata``, ``input_dtype`` and ``static_size``.
- ``gather_grid_sample(image, grid)``: bilinear, zero-padded, corner-aligned ``grid_sample`` as four row gathers.
  ``save_onnx`` lowers every ``grid_sample`` of the graph to it, because ONNX Runtime's CPU ``GridSample`` kernel
  is about 5x slower than PyTorch's (16 % of an ORT forward of crestereo_base at 384x512, against 3 % in eager).
- ``compare(exported, reference, inputs, atol)``: max absolute difference and runtimes, per named input.
- ``onnx_operator_times(path, left, right)``: ONNX Runtime's profile of one forward, per operator type.

ONNX needs the optional packages ``onnx``, ``onnxscript`` and ``onnxruntime`` (requirements-dev.txt); they are
imported only when an ONNX file is written or run, and ``require_onnx()`` names what is missing.
"""

import importlib
import json
import re
import statistics
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn
from torch._decomp import decomposition_table
from torch.export import Dim, ExportedProgram

from utils.evaluation import cascade_inference, size_divisor
from utils.timing import operator_rows

FORMATS = ("onnx", "pt2")
ONNX_OPSET = 18  # the exporter's default; grid_sample is exported as gathers (no GridSample, opset 16)
ONNX_PACKAGES = ("onnx", "onnxscript", "onnxruntime")
METADATA_FILE = "stereo_metadata.json"  # inside a .pt2 archive
MEAN = STD = 0.5  # the eval preset's normalisation: (x / 255 - 0.5) / 0.5


class DeployableStereo(nn.Module):
    """``model`` with a fixed number of iterations and cascades, as one graph: (left, right) -> disparity."""

    def __init__(self, model: nn.Module, num_iters: int, num_cascades: int = 1, *, uint8_input: bool = False) -> None:
        super().__init__()
        self.model = model
        self.num_iters, self.num_cascades, self.uint8_input = num_iters, num_cascades, uint8_input

    @property
    def size_divisor(self) -> int:
        return size_divisor(self.model, self.num_cascades)

    def forward(self, left: Tensor, right: Tensor) -> Tensor:
        if self.uint8_input:
            left, right = ((x.float() / 255 - MEAN) / STD for x in (left, right))
        prediction = cascade_inference(self.model, left, right, self.num_iters, self.num_cascades)
        return prediction[:, :1].float()


def require_onnx() -> None:
    """Raise ImportError naming the optional ONNX packages that are not installed."""
    missing = [name for name in ONNX_PACKAGES if importlib.util.find_spec(name) is None]
    if missing:
        raise ImportError(
            f"ONNX needs the optional package(s) {', '.join(missing)}: pip install -r requirements-dev.txt "
            f"(or pip install {' '.join(missing)})"
        )


def _dims(divisor: int) -> dict[int, Dim]:
    return {0: Dim("batch"), 2: divisor * Dim("height_blocks", min=2), 3: divisor * Dim("width_blocks", min=2)}


def constraint(divisor: int) -> str:
    """The dynamic-shape rule of a graph, in words (stored in its metadata)."""
    return (
        f"batch >= 1; height and width multiples of {divisor}, at least {2 * divisor} "
        f"(height = {divisor} * height_blocks, width = {divisor} * width_blocks)"
    )


@torch.no_grad()
def export_program(module: DeployableStereo, example: tuple[Tensor, Tensor], dynamic: bool) -> ExportedProgram:
    """``torch.export`` of ``module`` in eval mode. A dynamic export needs an example batch of at least 2 (a
    batch of 1 would be specialised)."""
    module.eval()
    shapes = None
    if dynamic:
        dims = _dims(module.size_divisor)
        shapes = {"left": dims, "right": dims}
    return torch.export.export(module, example, dynamic_shapes=shapes)


def gather_grid_sample(image: Tensor, grid: Tensor) -> Tensor:
    """``F.grid_sample(image, grid, mode="bilinear", padding_mode="zeros", align_corners=True)`` computed as four
    gathers of the ``(B * H * W, C)`` rows of ``image`` (one per bilinear corner) weighted and summed; corners
    outside the image get weight 0. Equal to grid_sample up to float rounding (tests/test_export.py)."""
    b, c, h, w = image.shape
    out_h, out_w = grid.shape[1:3]
    x = (grid[..., 0] + 1) * ((w - 1) / 2)
    y = (grid[..., 1] + 1) * ((h - 1) / 2)
    x0, y0 = torch.floor(x), torch.floor(y)
    fx, fy = x - x0, y - y0
    rows = image.permute(0, 2, 3, 1).reshape(b * h * w, c)
    first_row = (torch.arange(b, device=image.device) * (h * w)).view(b, 1, 1)
    output = None
    for yy, wy in ((y0, 1 - fy), (y0 + 1, fy)):
        for xx, wx in ((x0, 1 - fx), (x0 + 1, fx)):
            inside = (xx >= 0) & (xx <= w - 1) & (yy >= 0) & (yy <= h - 1)
            weight = torch.where(inside, wx * wy, 0.0)
            index = torch.where(inside, yy * w + xx, 0.0).long() + first_row
            term = rows.index_select(0, index.flatten()).view(b, out_h, out_w, c) * weight.unsqueeze(-1)
            output = term if output is None else output + term
    return output.permute(0, 3, 1, 2)


def _grid_sampler_for_onnx(
    image: Tensor, grid: Tensor, interpolation_mode: int, padding_mode: int, align_corners: bool
) -> Tensor:
    if (interpolation_mode, padding_mode, align_corners) == (0, 0, True):  # bilinear, zeros: what the models use
        return gather_grid_sample(image, grid)
    return decomposition_table[torch.ops.aten.grid_sampler_2d.default](
        image, grid, interpolation_mode, padding_mode, align_corners
    )


def save_pt2(program: ExportedProgram, path: str | Path, metadata: dict) -> None:
    """``torch.export.save`` with ``metadata`` as JSON inside the archive."""
    torch.export.save(program, path, extra_files={METADATA_FILE: json.dumps(metadata)})


def save_onnx(program: ExportedProgram, path: str | Path, metadata: dict, opset: int = ONNX_OPSET) -> None:
    """Convert to ONNX (inputs ``left``, ``right``, output ``disparity``), with ``grid_sample`` lowered to
    `gather_grid_sample` (ONNX Runtime's GridSample is slow); dynamic dimensions are named ``batch``,
    ``height_blocks`` and ``width_blocks`` and ``metadata`` goes into the model's metadata properties."""
    require_onnx()
    import onnx

    program = program.run_decompositions({torch.ops.aten.grid_sampler.default: _grid_sampler_for_onnx})
    onnx_program = torch.onnx.export(
        program, input_names=["left", "right"], output_names=["disparity"], opset_version=opset, dynamo=True,
        verbose=False,
    )
    proto = onnx_program.model_proto
    names = {}
    for position, name in ((0, "batch"), (2, "height_blocks"), (3, "width_blocks")):
        param = proto.graph.input[0].type.tensor_type.shape.dim[position].dim_param
        symbols = re.findall(r"s\d+", param)
        if symbols:
            names[symbols[0]] = name
    if names:
        pattern = re.compile(r"\b(" + "|".join(names) + r")\b")
        for value in (*proto.graph.input, *proto.graph.output, *proto.graph.value_info):
            for dim in value.type.tensor_type.shape.dim:
                if dim.dim_param:
                    dim.dim_param = pattern.sub(lambda m: names[m.group(1)], dim.dim_param)
    onnx.helper.set_model_props(proto, {key: json.dumps(value) for key, value in metadata.items()})
    onnx.save(proto, str(path))


@dataclass
class ExportedStereo:
    """A loaded export: ``exported(left, right) -> disparity`` on CPU tensors, with its metadata."""

    run: Callable[[Tensor, Tensor], Tensor]
    metadata: dict
    input_dtype: torch.dtype
    static_size: tuple[int, int] | None  # (H, W) of a static graph, None when dynamic

    def __call__(self, left: Tensor, right: Tensor) -> Tensor:
        return self.run(left, right)


def _onnx_session(path: str | Path, threads: int | None, profile_prefix: str | None = None):
    require_onnx()
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.inter_op_num_threads = 1
    if profile_prefix is not None:
        options.enable_profiling = True
        options.profile_file_prefix = profile_prefix
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def onnx_operator_times(path: str | Path, left: Tensor, right: Tensor, threads: int | None = None) -> list[dict]:
    """Where an ONNX Runtime forward spends its time: kernel time per operator type of one run after a warm-up,
    from ORT's own profiler, as ``utils.timing.operator_rows`` (share of all kernel time)."""
    with tempfile.TemporaryDirectory() as folder:
        session = _onnx_session(path, threads, profile_prefix=str(Path(folder) / "ort"))
        feeds = {"left": left.contiguous().numpy(), "right": right.contiguous().numpy()}
        for _ in range(2):
            session.run(["disparity"], feeds)
        events = json.loads(Path(session.end_profiling()).read_text())
    last = [e for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"][-1]
    seconds, counts = Counter(), Counter()
    for event in events:
        inside = last["ts"] <= event.get("ts", -1) <= last["ts"] + last["dur"]
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time") and inside:
            op = event.get("args", {}).get("op_name", "?")
            seconds[op] += event["dur"] / 1e6
            counts[op] += 1
    return operator_rows(seconds, counts)


def load_exported(path: str | Path, threads: int | None = None) -> ExportedStereo:
    """Load a ``.onnx`` (ONNX Runtime on the CPU, ``threads`` intra-op threads, default torch's) or a ``.pt2``."""
    path = Path(path)
    if path.suffix == ".onnx":
        session = _onnx_session(path, threads)
        metadata = {k: json.loads(v) for k, v in session.get_modelmeta().custom_metadata_map.items()}
        dtype = torch.uint8 if session.get_inputs()[0].type == "tensor(uint8)" else torch.float32
        shape = session.get_inputs()[0].shape

        def run(left: Tensor, right: Tensor) -> Tensor:
            feeds = {"left": left.contiguous().numpy(), "right": right.contiguous().numpy()}
            return torch.from_numpy(session.run(["disparity"], feeds)[0])

    else:
        extra = {METADATA_FILE: ""}
        program = torch.export.load(path, extra_files=extra)
        metadata = json.loads(extra[METADATA_FILE] or "{}")
        module = program.module()
        placeholder = next(n for n in program.graph.nodes if n.op == "placeholder" and n.name == "left")
        value = placeholder.meta["val"]
        dtype, shape = value.dtype, list(value.shape)

        def run(left: Tensor, right: Tensor) -> Tensor:
            with torch.no_grad():
                return module(left, right)

    static = tuple(shape[2:]) if all(isinstance(s, int) for s in shape[2:]) else None
    return ExportedStereo(run, metadata, dtype, static)


def _timed(fn: Callable[[], Tensor], runs: int) -> tuple[Tensor, float]:
    times, output = [], None
    for _ in range(runs):
        start = time.perf_counter()
        output = fn()
        times.append(time.perf_counter() - start)
    return output, statistics.median(times)


def compare(
    exported: Callable[[Tensor, Tensor], Tensor],
    reference: nn.Module,
    inputs: dict[str, tuple[Tensor, Tensor]],
    atol: float,
    runs: int = 1,
) -> list[dict]:
    """Per named (left, right) input: max absolute difference between ``exported`` and ``reference`` (eager, in
    eval mode, no gradients) and the median of ``runs`` runtimes of each, after one untimed warm-up call of the
    exported model."""
    reference.eval()
    rows = []
    for name, (left, right) in inputs.items():
        with torch.no_grad():
            expected, eager_s = _timed(lambda a=left, b=right: reference(a, b), runs)
        exported(left, right)
        actual, exported_s = _timed(lambda a=left, b=right: exported(a, b), runs)
        if actual.shape != expected.shape:
            raise ValueError(f"{name}: exported output {tuple(actual.shape)}, eager {tuple(expected.shape)}")
        diff = (actual.float() - expected).abs().max().item()
        rows.append({
            "input": name, "shape": list(left.shape), "max_abs_diff": diff, "ok": diff <= atol,
            "eager_s": eager_s, "exported_s": exported_s,
        })
    return rows
