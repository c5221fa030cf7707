"""Real data sets by name -> ``RealData`` (one normalised tensor per split, on the device)."""

from ddsearch.data.realdata import RawSplits, RealData, stratified_split
from ddsearch.data.registry import (
    DatasetSpec,
    dataset_spec,
    default_root,
    describe_datasets,
    list_datasets,
    load_dataset,
    register_dataset,
)

__all__ = [
    "DatasetSpec",
    "dataset_spec",
    "RawSplits",
    "RealData",
    "default_root",
    "describe_datasets",
    "list_datasets",
    "load_dataset",
    "register_dataset",
    "stratified_split",
]
