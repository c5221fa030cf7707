"""The data-set registry: name -> loader + description, and ``load_dataset`` (cf. timm's model registry).

Adding a data set is one ``register_dataset`` call with a loader that returns ``RawSplits``;
resizing, the validation split, normalisation and device placement are shared here.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from ddsearch.data import sources
from ddsearch.data.realdata import RawSplits, RealData, build_real_data, resize
from ddsearch.errors import DDSearchError, suggest

Loader = Callable[[Path, "tuple[int, int] | None", bool], RawSplits]


@dataclass(frozen=True)
class DatasetSpec:
    """One registry entry. ``None`` in channels/image_size/num_classes means "depends on the files"."""

    name: str
    loader: Loader
    description: str
    channels: int | None
    image_size: int | None
    num_classes: int | None
    download: str  # "embedded", "automatic", "manual" or "local": how the files get onto the disk


_REGISTRY: dict[str, DatasetSpec] = {}


def register_dataset(
    name: str,
    loader: Loader,
    description: str,
    *,
    channels: int | None = None,
    image_size: int | None = None,
    num_classes: int | None = None,
    download: str = "local",
) -> None:
    """Add (or replace) a data set under ``name``."""
    _REGISTRY[name] = DatasetSpec(name, loader, description, channels, image_size, num_classes, download)


register_dataset(
    "digits", sources.load_digits, "scikit-learn 8x8 handwritten digits (embedded, the offline default)",
    channels=1, image_size=8, num_classes=10, download="embedded",
)
register_dataset(
    "mnist", sources.load_mnist, "MNIST handwritten digits (torchvision)",
    channels=1, image_size=28, num_classes=10, download="automatic",
)
register_dataset(
    "fashion_mnist", sources.load_fashion_mnist, "Fashion-MNIST clothing images (torchvision)",
    channels=1, image_size=28, num_classes=10, download="automatic",
)
register_dataset(
    "cifar10", sources.load_cifar10, "CIFAR-10 natural images (torchvision)",
    channels=3, image_size=32, num_classes=10, download="automatic",
)
register_dataset(
    "mhist", sources.load_mhist,
    f"MHIST colorectal polyps HP vs SSA; on request from its authors ({sources.MHIST_URL}), root = your copy",
    channels=3, image_size=224, num_classes=2, download="manual",
)
register_dataset(
    "imagefolder", sources.load_imagefolder,
    "your own images: root/train/<class>/* and root/test/<class>/*",
    channels=None, image_size=None, num_classes=None, download="local",
)


def default_root() -> Path:
    """Where data sets live when no root is given: ``$DDSEARCH_DATA`` or ``~/.cache/ddsearch/data``."""
    env = os.environ.get("DDSEARCH_DATA")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "ddsearch" / "data"


def list_datasets() -> list[str]:
    """Registered data-set names, sorted."""
    return sorted(_REGISTRY)


def describe_datasets() -> list[dict]:
    """One row per data set, for the ``ddsearch datasets`` table."""
    return [
        {
            "name": s.name,
            "description": s.description,
            "channels": s.channels,
            "image_size": s.image_size,
            "classes": s.num_classes,
            "needs_download": s.download in ("automatic", "manual"),
            "download": s.download,
        }
        for s in (_REGISTRY[n] for n in list_datasets())
    ]


def _canonical(name: str) -> str:
    return name.strip().lower().replace("-", "_")


def dataset_spec(name: str) -> DatasetSpec:
    """The registry entry (native channels and size) of a data set, without loading it."""
    spec = _REGISTRY.get(_canonical(name))
    if spec is None:
        raise suggest(name, list_datasets(), "dataset")
    return spec


def _check_resize_fits(name: str, raw: RawSplits, size: tuple[int, int]) -> None:
    """Refuse a resize whose float32 result would not fit in half of the free memory."""
    images = int(raw.train_x.shape[0]) + int(raw.test_x.shape[0])
    need = images * int(raw.train_x.shape[1]) * size[0] * size[1] * 4
    try:
        import psutil

        free = int(psutil.virtual_memory().available)
    except Exception:  # noqa: BLE001 - no psutil: assume a generous machine
        free = 256 << 30
    if need > free // 2:
        raise DDSearchError(f"resizing {name} ({images} images) to {size[0]}x{size[1]} needs {need / 2**30:.1f} GiB, "
                            f"more than half of the {free / 2**30:.1f} GiB free; choose a smaller image_size")


def load_dataset(
    name: str,
    root: str | Path | None = None,
    image_size: int | None = None,
    val_size: float | int = 0.1,
    split_seed: int = 0,
    device: str | torch.device = "cpu",
    download: bool = True,
) -> RealData:
    """Load a registered data set as a normalised, device-resident ``RealData``.

    ``image_size`` resizes to a square (default: the data set's native size). ``val_size`` is a
    fraction (< 1) or a count carved from the training set, stratified and fixed by ``split_seed``;
    the test split is always held out.
    """
    spec = _REGISTRY.get(_canonical(name))
    if spec is None:
        raise suggest(name, list_datasets(), "dataset")
    if image_size is not None and (isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1):
        raise DDSearchError(f"image_size must be a positive integer, got {image_size!r}")
    size = (image_size, image_size) if image_size is not None else None
    root_path = Path(root).expanduser() if root is not None else default_root()

    raw = spec.loader(root_path, size, download)
    if size is not None and raw.image_size != size:
        _check_resize_fits(spec.name, raw, size)
        raw.train_x = resize(raw.train_x, size)
        raw.test_x = resize(raw.test_x, size)
    return build_real_data(spec.name, raw, val_size=val_size, split_seed=split_seed, device=device)
