"""The one evaluation loop, shared by ``cascade_evaluation.py`` and ``train.py`` validation.

API:

- ``cascade_inference(model, left, right, num_iters, num_cascades) -> (B, 2, H, W)``: the cascade
  inference of torchvision's reference scripts. The inputs are resized (bilinear, ``align_corners=True``) to
  ``1/2**k`` of their size for ``k = c-1 .. 1``; the model runs from the coarsest level to the full one,
  each level seeded with the previous level's prediction (``flow_init``). H and W must be multiples of
  ``model.size_divisor * 2**(c-1)``.
- ``evaluate(model, loader, cascades=(1,), iterations=(10,), *, device, metrics=DEFAULT_METRICS,
  padder_type="kitti", autocast_dtype=None, on_prediction=None, progress=True, desc="evaluation")
  -> {(c, i): {"reference": {metric: value}, "pooled": {metric: value}}}``.
  ``loader`` yields ``stereo_collate`` batches ``(left, right, disp, valid)`` of normalised images; use
  ``make_eval_loader`` so that every sample is seen exactly once across processes. Each batch is read and
  moved to the device once and then run for every (cascades x iterations) configuration. Inputs are padded
  (``padder_type`` "kitti" or "sintel", replicate) to the multiple the model and the number of cascades need
  and predictions are cropped back; ``padder_type="none"`` requires inputs of such a size already.
  The metric sums are all-reduced across processes, so every rank returns the same dataset-wide numbers
  (the two aggregations are described in ``utils.metrics``). A tqdm bar with ETA is shown on rank 0.
  ``on_prediction(config, sample_indices, left, right, disp, valid, pred)`` is called per batch and
  configuration with unpadded tensors (e.g. to save figures). The model's train/eval mode is restored.

Typical validation call from training::

    results = evaluate(model, loader, cascades=[1], iterations=[10], device=device)
    mae = results[(1, 10)]["reference"]["mae"]
"""

import warnings
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from utils.distributed import EvalBatchSampler, all_reduce_sum, is_main_process
from utils.lr_consistency import lr_error, right_view_disparity, unreliable_mask
from utils.metrics import DEFAULT_METRICS, MetricAccumulator, check_metrics
from utils.padder import PADDER_MODES, InputPadder

Config = tuple[int, int]


def size_divisor(model: nn.Module, num_cascades: int = 1) -> int:
    """The multiple that H and W must be of for ``num_cascades`` cascades of ``model``."""
    model = getattr(model, "module", model)
    return int(getattr(model, "size_divisor", 1)) * 2 ** (num_cascades - 1)


def _last_prediction(output: Tensor | Sequence[Tensor]) -> Tensor:
    return output if isinstance(output, Tensor) else output[-1]


def cascade_inference(model: nn.Module, left: Tensor, right: Tensor, num_iters: int, num_cascades: int) -> Tensor:
    """Coarse-to-fine inference over an image pyramid; returns the full-resolution ``(B, 2, H, W)`` prediction."""
    if num_cascades < 1 or num_iters < 1:
        raise ValueError(f"cascades and iterations must be at least 1, got {num_cascades} and {num_iters}")
    if left.shape != right.shape:
        raise ValueError(f"left {tuple(left.shape)} and right {tuple(right.shape)} images differ in shape")
    divisor = size_divisor(model, num_cascades)
    h, w = left.shape[-2:]
    if h % divisor or w % divisor:
        raise ValueError(
            f"{num_cascades} cascade(s) need height and width divisible by {divisor} "
            f"(size divisor {size_divisor(model)} x 2^{num_cascades - 1}), got height {h} and width {w}; "
            f"pad the inputs with InputPadder(shape, divisor={divisor})"
        )
    levels = [(left, right)]
    for k in range(1, num_cascades):
        size = (h // 2**k, w // 2**k)
        levels.append(
            tuple(F.interpolate(x, size=size, mode="bilinear", align_corners=True) for x in (left, right))
        )
    flow_init = None
    for level_left, level_right in reversed(levels):
        output = model(level_left, level_right, flow_init=flow_init, num_iters=num_iters, return_all=False)
        flow_init = _last_prediction(output)
    return flow_init


def make_eval_loader(
    dataset: Dataset, batch_size: int = 1, num_workers: int = 0, pin_memory: bool = False
) -> DataLoader:
    """A loader that shards ``dataset`` across processes without repeats (see ``EvalBatchSampler``)."""
    from data.collate import stereo_collate

    return DataLoader(
        dataset,
        batch_sampler=EvalBatchSampler(len(dataset), batch_size),
        num_workers=num_workers,
        collate_fn=stereo_collate,
        pin_memory=pin_memory,
    )


def _sample_indices(loader: DataLoader) -> list[list[int]] | None:
    sampler = getattr(loader, "batch_sampler", None)
    return list(sampler) if isinstance(sampler, EvalBatchSampler) else None


@torch.inference_mode()
def evaluate(
    model: nn.Module,
    loader: DataLoader,
    cascades: Sequence[int] = (1,),
    iterations: Sequence[int] = (10,),
    *,
    device: torch.device | str,
    metrics: Sequence[str] = DEFAULT_METRICS,
    padder_type: str = "kitti",
    autocast_dtype: torch.dtype | None = None,
    on_prediction: Callable[..., None] | None = None,
    progress: bool = True,
    desc: str = "evaluation",
    lr_threshold: float | None = None,
) -> dict[Config, dict[str, dict[str, float]]]:
    """Run every (cascades x iterations) configuration on each batch; see the module docstring.

    With ``lr_threshold`` (px), each configuration also predicts the right view (mirrored, swapped pair) and
    scores again on the left-right consistent pixels only: ``results[config]["lr_consistent"]`` holds those
    metrics and ``"dropped"``, the fraction of scored pixels the check removed.
    """
    check_metrics(metrics)
    if lr_threshold is not None and lr_threshold <= 0:
        raise ValueError(f"the left-right threshold must be positive, got {lr_threshold}")
    if padder_type not in PADDER_MODES + ("none",):
        raise ValueError(f"unknown padder type {padder_type!r}; choose from {list(PADDER_MODES) + ['none']}")
    device = torch.device(device)
    configs = list(dict.fromkeys((c, i) for c in cascades for i in iterations))
    if not configs:
        raise ValueError("give at least one number of cascades and one number of iterations")
    accumulators = {config: MetricAccumulator(metrics, device) for config in configs}
    consistent = {config: MetricAccumulator(metrics, device) for config in configs} if lr_threshold else {}
    dropped = torch.zeros(len(configs), 2, dtype=torch.float64, device=device)  # (dropped, scored) pixels
    batch_indices = _sample_indices(loader)
    was_training = model.training
    model.eval()
    try:
        bar = tqdm(loader, desc=desc, disable=not (progress and is_main_process()), dynamic_ncols=True)
        for batch_number, (left, right, disp, valid) in enumerate(bar):
            if disp is None:
                raise ValueError("the evaluation dataset has no ground-truth disparity; pick a split with ground truth")
            left, right, disp = (x.to(device, non_blocking=True) for x in (left, right, disp))
            valid = valid.to(device, non_blocking=True) if valid is not None else None
            indices = batch_indices[batch_number] if batch_indices is not None else None
            padders: dict[int, InputPadder] = {}
            for c, i in configs:
                divisor = size_divisor(model, c)
                padder = None
                if padder_type != "none":
                    if divisor not in padders:
                        padders[divisor] = InputPadder(left.shape, mode=padder_type, divisor=divisor)
                    padder = padders[divisor]

                def predict(first: Tensor, second: Tensor) -> Tensor:
                    pair = padder.pad(first, second) if padder is not None else (first, second)
                    with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
                        out = cascade_inference(model, *pair, num_iters=i, num_cascades=c)[:, :1].float()
                    return padder.unpad(out) if padder is not None else out

                pred = predict(left, right)
                accumulators[(c, i)].update(pred, disp, valid)
                if lr_threshold:
                    error = lr_error(pred[:, 0], right_view_disparity(predict, left, right)[:, 0])
                    scored = valid if valid is not None else torch.ones_like(error, dtype=torch.bool)
                    kept = scored & ~unreliable_mask(error, lr_threshold)
                    consistent[(c, i)].update(pred, disp, kept)
                    dropped[configs.index((c, i))] += torch.stack([(scored & ~kept).sum(), scored.sum()]).double()
                if on_prediction is not None:
                    on_prediction((c, i), indices, left, right, disp, valid, pred)
    finally:
        model.train(was_training)

    totals = all_reduce_sum(torch.stack([accumulators[config].state for config in configs]))
    results = {}
    for config, state in zip(configs, totals):
        accumulators[config].state = state
        results[config] = {"reference": accumulators[config].reference(), "pooled": accumulators[config].pooled()}
    if lr_threshold:
        lr_totals = all_reduce_sum(torch.stack([consistent[config].state for config in configs]))
        dropped = all_reduce_sum(dropped)
        for n, (config, state) in enumerate(zip(configs, lr_totals)):
            consistent[config].state = state
            results[config]["lr_consistent"] = {
                "reference": consistent[config].reference(),
                "pooled": consistent[config].pooled(),
                "dropped": (dropped[n, 0] / dropped[n, 1].clamp(min=1)).item(),
            }
    seen, expected = accumulators[configs[0]].num_samples, len(loader.dataset)
    if seen != expected:
        warnings.warn(f"evaluated {seen} samples but the dataset has {expected}", RuntimeWarning)
    return results

