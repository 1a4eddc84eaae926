"""Training and evaluation pipelines built from ``transforms.py``, and built from the entry scripts' flags.

Both presets take and return ``(images, disparities, masks)`` (docs/architecture.md) and output float32
normalised images, float32 ``(1, h, w)`` disparities and bool ``(h, w)`` masks. ``train_preset_from_args`` and
``make_training_mixture`` turn train.py's data flags (``utils.cli.add_training_data_arguments``) into the
training preset of a dataset and into the mixture train.py reads; ``eval_preset_from_args`` does the same for the
evaluation-protocol flags.
"""

from collections.abc import Sequence
from typing import Any, Optional, Union

import torch
from torch import nn

import transforms as T
from data.mixture import TrainingMixture, check_dataset_steps
from data.registry import dataset_spec, make_dataset, require_ground_truth

Number = Union[float, Sequence[float]]


class StereoMatchingTrainPreset(nn.Module):
    """Training augmentation with the options of torchvision's reference scripts, every one reachable from
    train.py.

    Order: [Resize] -> RandomRescaleAndCrop -> AsymmetricColorJitter -> AsymmetricGammaAdjust -> [Grayscale]
    -> RandomHorizontalFlip -> RandomVerticalFlip -> RandomSpatialShift -> float -> RandomOcclusion ->
    RandomErase -> Normalize -> MakeValidDisparityMask -> ValidateModelInput.

    The flips (which may swap the views) come before every step that perturbs one view only: the spatial
    shift, the occlusion and the erasing must land on the final right view, never on the left view the
    ground truth belongs to (torchvision shifts before flipping, so half its flipped samples carry a rotated,
    shifted left view against unshifted labels). Scale and crop come first, so colour, gamma and the
    spatial shift work on the crop instead of the full image (torchvision's reference scripts spend most of
    their time there). Colour, gamma and grayscale are per-pixel, so this only changes the mean that contrast
    is taken against (crop mean instead of image mean); the shift of the right view replicates the crop's
    border instead of exposing its neighbours. ``sparse_gt`` selects exact point scattering for sparse ground
    truth (KITTI).
    """

    def __init__(
        self,
        *,
        crop_size: Sequence[int],
        resize_size: Optional[Union[int, Sequence[int]]] = None,
        rescale_prob: float = 1.0,
        scaling_type: str = "exponential",
        scale_range: Sequence[float] = (-0.2, 0.5),
        scale_interpolation_type: str = "bilinear",
        use_grayscale: bool = False,
        mean: Number = 0.5,
        std: Number = 0.5,
        max_disparity: Optional[float] = None,
        spatial_shift_prob: float = 0.5,
        spatial_shift_max_angle: float = 0.5,
        spatial_shift_max_displacement: float = 0.5,
        spatial_shift_interpolation_type: str = "bilinear",
        gamma_range: Sequence[float] = (0.8, 1.2),
        brightness: Number = (0.8, 1.2),
        contrast: Number = (0.8, 1.2),
        saturation: Number = 0.0,
        hue: Number = 0.0,
        asymmetric_jitter_prob: float = 1.0,
        horizontal_flip_prob: float = 0.5,
        vertical_flip_prob: float = 0.0,
        occlusion_prob: float = 0.0,
        occlusion_px_range: Sequence[int] = (50, 100),
        erase_prob: float = 0.0,
        erase_px_range: Sequence[int] = (50, 100),
        erase_num_repeats: int = 1,
        sparse_gt: bool = False,
    ) -> None:
        super().__init__()
        steps: list[nn.Module] = []
        if resize_size is not None:
            gt_resampling = "sparse" if sparse_gt else "mask-aware"
            steps.append(T.Resize(resize_size, scale_interpolation_type, gt_resampling=gt_resampling))
        steps += [
            T.RandomRescaleAndCrop(
                crop_size, scale_range, rescale_prob, scaling_type, scale_interpolation_type, sparse_gt=sparse_gt
            ),
            T.AsymmetricColorJitter(brightness, contrast, saturation, hue, p=asymmetric_jitter_prob),
            T.AsymmetricGammaAdjust(p=asymmetric_jitter_prob, gamma_range=gamma_range),
        ]
        if use_grayscale:
            steps.append(T.ConvertToGrayscale())
        steps += [
            T.RandomHorizontalFlip(horizontal_flip_prob),
            T.RandomVerticalFlip(vertical_flip_prob),
            T.RandomSpatialShift(
                spatial_shift_prob,
                spatial_shift_max_angle,
                spatial_shift_max_displacement,
                spatial_shift_interpolation_type,
            ),
            T.ConvertImageDtype(torch.float32),
            T.RandomOcclusion(occlusion_prob, occlusion_px_range),
            T.RandomErase(erase_prob, erase_px_range, max_erase=erase_num_repeats),
            T.Normalize(mean, std),
            T.MakeValidDisparityMask(max_disparity),
            T.ValidateModelInput(),
        ]
        self.transforms = T.Compose(steps)

    def forward(self, images, disparities, masks) -> T.Sample:
        return self.transforms(images, disparities, masks)


class StereoMatchingEvalPreset(nn.Module):
    """Evaluation preprocessing, in one of two modes.

    - ``resize_size=(H, W)`` (default 384x512): the protocol of torchvision's published numbers. Images to
      float in [0, 1], bilinear resize without antialias; the raw disparity map resized bilinearly without
      antialias (only pixels without ground truth count as 0) and multiplied by ``W / W_orig``; mask
      nearest-resized and AND-ed with ``disp > 0``; normalised. With ``sparse_gt`` (KITTI) the valid points
      are moved to the nearest output pixel instead of being blended with the empty pixels around them.
    - ``resize_size=None``: native resolution. Only float conversion, normalisation and the valid mask; the
      evaluation loop pads the model input and crops the prediction back.

    Without grayscale the images come out as ``utils.preprocessing.eval_input`` makes them (the same kernels),
    which is what the published weights' ``transforms()`` give (tests/test_models_weights.py checks it).
    """

    def __init__(
        self,
        *,
        resize_size: Optional[Union[int, Sequence[int]]] = (384, 512),
        mean: Number = 0.5,
        std: Number = 0.5,
        max_disparity: Optional[float] = None,
        interpolation_type: str = "bilinear",
        use_grayscale: bool = False,
        sparse_gt: bool = False,
    ) -> None:
        super().__init__()
        # Without grayscale, float conversion is fused into the resize (or the normalisation), which then
        # skip converting full-resolution images; the values are those of the unfused order.
        steps: list[nn.Module] = []
        if use_grayscale:
            steps += [T.ConvertImageDtype(torch.float32), T.ConvertToGrayscale()]
        if resize_size is not None:
            gt_resampling = "sparse" if sparse_gt else "published"
            steps.append(T.Resize(resize_size, interpolation_type, gt_resampling=gt_resampling, dtype=torch.float32))
        steps += [T.Normalize(mean, std), T.MakeValidDisparityMask(max_disparity), T.ValidateModelInput()]
        self.transforms = T.Compose(steps)

    def forward(self, images, disparities, masks) -> T.Sample:
        return self.transforms(images, disparities, masks)


def eval_preset_from_weights(weights: Any, **overrides: Any) -> StereoMatchingEvalPreset:
    """The eval preset that published weights were evaluated with.

    Reads ``weights.meta["eval_preset"]`` (as ``models/weights.py`` writes it: ``resize_size``, ``mean``,
    ``std``, ``interpolation``, ``antialias``) when present, otherwise uses the published protocol (384x512,
    mean = std = 0.5); ``overrides`` win (e.g. ``resize_size=None`` for native resolution).
    """
    meta = getattr(weights, "meta", None) or {}
    kwargs = dict(meta.get("eval_preset", {}))
    if kwargs.pop("antialias", False):
        raise ValueError("The eval preset resizes without antialias; these weights ask for antialias=True")
    interpolation = kwargs.pop("interpolation", None)
    if interpolation is not None:
        kwargs["interpolation_type"] = getattr(interpolation, "value", interpolation)  # InterpolationMode or str
    kwargs.update(overrides)
    return StereoMatchingEvalPreset(**kwargs)


def eval_preset_from_args(args: Any, **overrides: Any) -> StereoMatchingEvalPreset:
    """The eval preset of the evaluation-protocol flags (``--eval-size`` already parsed, ``--norm-mean``,
    ``--norm-std``, ``--max-disparity``, ``--interpolation-strategy``, ``--use-grayscale``), as
    cascade_evaluation.py and train.py's validation build it; ``overrides`` win (e.g. ``sparse_gt``)."""
    kwargs = dict(
        resize_size=args.eval_size, mean=args.norm_mean, std=args.norm_std, max_disparity=args.max_disparity,
        interpolation_type=args.interpolation_strategy, use_grayscale=args.use_grayscale,
    )
    kwargs.update(overrides)
    return StereoMatchingEvalPreset(**kwargs)


def _range(values: Sequence[float]) -> Union[float, tuple[float, ...]]:
    return values[0] if len(values) == 1 else tuple(values)


def train_preset_from_args(args: Any, dataset_name: str) -> StereoMatchingTrainPreset:
    """The training preset of `dataset_name` from the flags of ``utils.cli.add_training_data_arguments``; sparse
    ground truth (KITTI) is scattered exactly where the registry says the dataset has it."""
    return StereoMatchingTrainPreset(
        crop_size=args.crop_size,
        resize_size=args.resize_size,
        rescale_prob=args.rescale_prob,
        scaling_type=args.scaling_type,
        scale_range=args.scale_range,
        scale_interpolation_type=args.interpolation_strategy,
        use_grayscale=args.use_grayscale,
        mean=args.norm_mean,
        std=args.norm_std,
        max_disparity=args.max_disparity,
        spatial_shift_prob=args.spatial_shift_prob,
        spatial_shift_max_angle=args.spatial_shift_max_angle,
        spatial_shift_max_displacement=args.spatial_shift_max_displacement,
        spatial_shift_interpolation_type=args.interpolation_strategy,
        gamma_range=args.gamma_range,
        brightness=_range(args.brightness_range),
        contrast=_range(args.contrast_range),
        saturation=_range(args.saturation_range),
        hue=_range(args.hue_range),
        asymmetric_jitter_prob=args.asymmetric_jitter_prob,
        horizontal_flip_prob=args.flip_prob,
        vertical_flip_prob=args.vertical_flip_prob,
        occlusion_prob=args.occlusion_prob,
        occlusion_px_range=args.occlusion_px_range,
        erase_prob=args.erase_prob,
        erase_px_range=args.erase_px_range,
        erase_num_repeats=args.erase_num_repeats,
        sparse_gt=dataset_spec(dataset_name).sparse_gt,
    )


def make_training_mixture(args: Any, world_size: int) -> TrainingMixture:
    """Every training dataset with its preset, and the mixture train.py reads, from the data flags (checked)."""
    for name in args.train_datasets:
        require_ground_truth(name, f"training dataset {name}")
    check_dataset_steps(args.train_datasets, args.dataset_steps)
    datasets = []
    for name in args.train_datasets:
        datasets.append(make_dataset(name, args.dataset_root, transforms=train_preset_from_args(args, name)))
    return TrainingMixture(
        datasets, args.dataset_steps, args.batch_size, world_size,
        steps_is_epochs=args.steps_is_epochs, seed=args.seed, names=args.train_datasets,
    )
