"""A study's real data on its device: what the CLI, the search, NAS and PAD's cache commands load.

Kept apart from the run engine (:mod:`ddsearch.runner`), which only receives the data.
"""

from __future__ import annotations

import torch

from ddsearch.config import Study
from ddsearch.data import RealData
from ddsearch.errors import DDSearchError


def resolve_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise DDSearchError("device 'cuda' was asked for but no CUDA GPU is visible; use device: auto or cpu")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def load_study_data(study: Study, device: torch.device | None = None) -> RealData:
    """The study's real data on its device (the validation split is what searches optimise)."""
    from ddsearch.data import load_dataset

    ds = study.dataset
    return load_dataset(
        ds.name,
        root=ds.root,
        image_size=ds.image_size,
        val_size=ds.val_size,
        split_seed=ds.split_seed,
        device=device or resolve_device(study.device),
        download=ds.download,
    )
