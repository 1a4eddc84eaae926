"""Dataset registry, corrected dataset readers and procedurally generated scenes."""

from .collate import stereo_collate
from .registry import DatasetSpec, dataset_spec, list_datasets, make_dataset

__all__ = ["DatasetSpec", "dataset_spec", "list_datasets", "make_dataset", "stereo_collate"]
