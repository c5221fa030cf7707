"""The distilled (synthetic) set: images, labels, an optional learned lr and metadata.

Stored with safetensors so that loading a file can never execute code (no pickle), and
with enough metadata that a set is refused when it does not fit the data it is used with.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import save_file

from ddsearch.atomic_files import replacing
from ddsearch.checkpoint import read_safetensors
from ddsearch.errors import DDSearchError

if TYPE_CHECKING:
    from ddsearch.data import RealData

FORMAT_TAG = "ddsearch-synset"
FORMAT_VERSION = "1"


@dataclass
class SyntheticSet:
    """A distilled set in the normalised space of its dataset.

    ``labels`` are int64 class ids ``[N]`` (hard) or float logits ``[N, classes]`` (soft); soft
    labels are turned into targets with a softmax wherever they are used.
    """

    images: torch.Tensor
    labels: torch.Tensor
    num_classes: int
    lr: float | None = None
    dataset: str = ""
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()
    method: str = ""
    class_names: list[str] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.images.ndim != 4:
            raise DDSearchError(f"synthetic images must be [N, C, H, W], got shape {tuple(self.images.shape)}")
        if self.labels.shape[0] != self.images.shape[0]:
            raise DDSearchError(
                f"synthetic set has {self.images.shape[0]} images but {self.labels.shape[0]} labels"
            )
        if self.soft and self.labels.shape[1] != self.num_classes:
            raise DDSearchError(f"soft labels have {self.labels.shape[1]} columns but the set has {self.num_classes} classes")

    @property
    def soft(self) -> bool:
        return self.labels.is_floating_point()

    @property
    def hard_labels(self) -> torch.Tensor:
        return self.labels.argmax(dim=1) if self.soft else self.labels

    @property
    def ipc(self) -> int:
        return self.images.shape[0] // max(self.num_classes, 1)

    def detached(self) -> "SyntheticSet":
        """A copy that shares nothing with the optimiser's leaf tensors."""
        return _replace(self, images=self.images.detach().clone(), labels=self.labels.detach().clone())

    def to(self, device: str | torch.device) -> "SyntheticSet":
        return _replace(self, images=self.images.to(device), labels=self.labels.to(device))

    # ---- IO -------------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write atomically (temp file + rename), so a crash never leaves half a synset."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tensors = {
            "images": self.images.detach().cpu().contiguous(),
            "labels": self.labels.detach().cpu().contiguous(),
        }
        meta = {
            "format": FORMAT_TAG,
            "version": FORMAT_VERSION,
            "dataset": self.dataset,
            "num_classes": str(self.num_classes),
            "lr": "" if self.lr is None else repr(float(self.lr)),
            "mean": json.dumps(list(self.mean)),
            "std": json.dumps(list(self.std)),
            "method": self.method,
            "class_names": json.dumps(self.class_names),
            "config": json.dumps(self.config, default=str),
        }
        with replacing(path) as partial:
            save_file(tensors, str(partial), metadata=meta)
        return path

    @classmethod
    def load(cls, path: str | Path, expect: "RealData | None" = None) -> "SyntheticSet":
        """Load and check a synset; with ``expect``, refuse one that does not fit that data.

        The header (metadata, tensor names, shapes, dtypes) is checked before the tensors are
        read, and the values after: a bad file is one clear line, never a traceback or a silent
        NaN evaluation.
        """
        header = SynsetHeader.read(path)
        if expect is not None:
            header.check_fits(expect)
        try:
            tensors, _ = read_safetensors(header.path)
        except (SafetensorError, OSError, ValueError) as err:
            raise DDSearchError(f"{header.path} is not a ddsearch synset file (not readable as safetensors: {err})") from None
        images, labels = tensors["images"], tensors["labels"]
        if not bool(torch.isfinite(images).all()):
            raise DDSearchError(f"{header.path} has NaN or infinite pixel values; it is unusable (a diverged distillation?)")
        if labels.is_floating_point() and not bool(torch.isfinite(labels).all()):
            raise DDSearchError(f"{header.path} has NaN or infinite soft labels")
        if not labels.is_floating_point() and labels.numel() and (labels.min() < 0 or labels.max() >= header.num_classes):
            raise DDSearchError(f"{header.path} has labels outside 0..{header.num_classes - 1} "
                                f"(found {int(labels.min())}..{int(labels.max())})")
        synset = cls(images=images, labels=labels.long() if not labels.is_floating_point() else labels, **header.fields)
        if expect is not None:
            synset.check_fits(expect, source=str(header.path))
        return synset

    def check_fits(self, data: "RealData", source: str = "synthetic set") -> None:
        """Refuse a set made for another dataset or shape: training on it would be silently wrong."""
        if self.dataset and self.dataset != data.name:
            raise DDSearchError(f"{source} was distilled from '{self.dataset}', not '{data.name}'; use a synset of {data.name}")
        shape = tuple(self.images.shape[1:])
        want = (data.channels, *data.image_size)
        if shape != want:
            raise DDSearchError(f"{source} has images of shape {shape} but {data.name} needs {want}; check the dataset's image_size")
        if self.num_classes != data.num_classes:
            raise DDSearchError(f"{source} has {self.num_classes} classes but {data.name} has {data.num_classes}")

    # ---- display --------------------------------------------------------------------------
    def grid(self, max_per_class: int = 10, min_cell: int = 28) -> np.ndarray:
        """A class x ipc image grid (uint8 HxWx3) in un-normalised colours, one row per class.

        Images smaller than ``min_cell`` pixels (8 px digits) are enlarged with nearest-neighbour
        so the grid is legible in the MLflow UI.
        """
        from torchvision.utils import make_grid

        channels = self.images.shape[1]
        mean = self.mean or (0.0,) * channels
        std = self.std or (1.0,) * channels
        images = self.images.detach().float().cpu()
        labels = self.hard_labels.cpu()
        rows = []
        for c in range(self.num_classes):
            picked = images[labels == c][:max_per_class]
            pad = max_per_class - picked.shape[0]
            if pad > 0:
                picked = torch.cat([picked, torch.zeros(pad, *images.shape[1:])])
            rows.append(picked)
        ordered = torch.cat(rows) if rows else images[:0]
        m = torch.tensor(mean).view(1, -1, 1, 1)
        s = torch.tensor(std).view(1, -1, 1, 1)
        ordered = (ordered * s + m).clamp(0, 1)
        factor = max(1, min_cell // ordered.shape[-1])
        if factor > 1:
            ordered = torch.nn.functional.interpolate(ordered, scale_factor=factor, mode="nearest")
        if ordered.shape[1] == 1:
            ordered = ordered.expand(-1, 3, -1, -1)
        padding = 1 if ordered.shape[-1] <= 32 else 2
        grid = make_grid(ordered, nrow=max_per_class, padding=padding, pad_value=1.0)
        return (grid.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)


def _replace(synset: SyntheticSet, **changes: Any) -> SyntheticSet:
    from dataclasses import replace

    return replace(synset, **changes)


def check_image_size(header: "SynsetHeader", dataset: str, image_size: int | None, flag: str = "--image-size") -> int | None:
    """The size to load the data at, checked against the synset before anything is loaded.

    The data set is loaded at ``--image-size`` or at its native size; a synset of another size
    (or channel count) is refused here, not after resizing a whole data set to its shape.
    """
    from ddsearch.data import dataset_spec

    spec = dataset_spec(dataset)
    if header.dataset and header.dataset != spec.name:
        raise DDSearchError(f"{header.path} was distilled from '{header.dataset}', not '{spec.name}'; "
                            f"use a synset of {spec.name}")
    channels, height, width = header.image_shape[1:]
    if height != width:
        raise DDSearchError(f"{header.path} has non-square images ({height}x{width}); ddsearch data sets are square")
    if spec.channels is not None and channels != spec.channels:
        raise DDSearchError(f"{header.path} has images of shape {tuple(header.image_shape[1:])} but {spec.name} "
                            f"images have {spec.channels} channel(s)")
    if image_size is not None:
        if image_size != height:
            raise DDSearchError(f"{header.path} has {height}x{width} images but {flag} is {image_size}")
        return image_size
    if spec.image_size is not None and height != spec.image_size:
        want = (spec.channels or channels, spec.image_size, spec.image_size)
        raise DDSearchError(f"{header.path} has images of shape {tuple(header.image_shape[1:])} but {spec.name} "
                            f"needs {want}; pass {flag} {height} to resize the data set to the synset")
    return None if spec.image_size is not None else height


_INT_DTYPES = ("I64", "I32", "I16", "U8", "I8")
_DTYPE_NAMES = {"F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16", "I64": "int64",
                "I32": "int32", "I16": "int16", "I8": "int8", "U8": "uint8", "BOOL": "bool"}


@dataclass
class SynsetHeader:
    """What a synset file says about itself, read and checked without loading its tensors."""

    path: Path
    image_shape: tuple[int, ...]
    label_shape: tuple[int, ...]
    label_dtype: str
    fields: dict[str, Any]

    @property
    def num_classes(self) -> int:
        return int(self.fields["num_classes"])

    @property
    def dataset(self) -> str:
        return str(self.fields["dataset"])

    @classmethod
    def read(cls, path: str | Path) -> "SynsetHeader":
        from safetensors import safe_open

        from ddsearch.paths import check_input_file

        path = check_input_file(path, "synset file")
        try:
            with safe_open(str(path), framework="pt") as handle:
                meta = handle.metadata() or {}
                info = {name: (tuple(handle.get_slice(name).get_shape()), handle.get_slice(name).get_dtype())
                        for name in handle.keys()}
        except (SafetensorError, OSError, ValueError) as err:
            raise DDSearchError(f"{path} is not a ddsearch synset file (not readable as safetensors: {err})") from None
        if meta.get("format") != FORMAT_TAG:
            raise DDSearchError(f"{path} is a safetensors file but not a ddsearch synset (no '{FORMAT_TAG}' metadata)")
        if not {"images", "labels"} <= info.keys():
            raise DDSearchError(f"{path} has ddsearch synset metadata but its tensors are named "
                                f"{', '.join(sorted(info)) or 'nothing'}; a synset holds 'images' and 'labels'")
        (image_shape, image_dtype), (label_shape, label_dtype) = info["images"], info["labels"]
        fields = _parse_meta(path, meta)
        num_classes = fields["num_classes"]
        if len(image_shape) != 4 or image_shape[0] == 0:
            raise DDSearchError(f"{path}: images must be a non-empty [N, C, H, W] tensor, got shape {list(image_shape)}")
        if image_dtype != "F32":
            raise DDSearchError(f"{path}: images are {_DTYPE_NAMES.get(image_dtype, image_dtype)}; a synset holds "
                                f"float32 images in the data set's normalised space")
        n, channels = image_shape[0], image_shape[1]
        if label_dtype in _INT_DTYPES:
            if label_shape != (n,):
                raise DDSearchError(f"{path}: hard labels must have shape [{n}], got {list(label_shape)}")
        elif label_dtype == "F32":
            if label_shape != (n, num_classes):
                raise DDSearchError(f"{path}: soft labels must have shape [{n}, {num_classes}] (one logit per class), "
                                    f"got {list(label_shape)}")
        else:
            raise DDSearchError(f"{path}: labels are {_DTYPE_NAMES.get(label_dtype, label_dtype)}; use int64 class ids "
                                f"or float32 logits")
        for key in ("mean", "std"):
            if fields[key] and len(fields[key]) != channels:
                raise DDSearchError(f"{path}: metadata '{key}' has {len(fields[key])} values for {channels} channel(s)")
        return cls(path, image_shape, label_shape, label_dtype, fields)

    def check_fits(self, data: "RealData") -> None:
        """The same checks as SyntheticSet.check_fits, before any tensor is read."""
        source = str(self.path)
        if self.dataset and self.dataset != data.name:
            raise DDSearchError(f"{source} was distilled from '{self.dataset}', not '{data.name}'; use a synset of {data.name}")
        want = (data.channels, *data.image_size)
        if tuple(self.image_shape[1:]) != want:
            raise DDSearchError(f"{source} has images of shape {tuple(self.image_shape[1:])} but {data.name} needs {want}; "
                                f"check the dataset's image_size")
        if self.num_classes != data.num_classes:
            raise DDSearchError(f"{source} has {self.num_classes} classes but {data.name} has {data.num_classes}")


def _parse_meta(path: Path, meta: dict[str, str]) -> dict[str, Any]:
    """The metadata as typed fields; a wrong value is one line naming the key."""
    import math

    def bad(key: str, why: str) -> DDSearchError:
        return DDSearchError(f"{path}: synset metadata '{key}' {why}")

    def json_value(key: str, default: str, kind: type) -> Any:
        try:
            value = json.loads(meta.get(key) or default)
        except (json.JSONDecodeError, RecursionError):
            raise bad(key, "is not valid JSON") from None
        if not isinstance(value, kind):
            raise bad(key, f"must be a JSON {kind.__name__}")
        return value

    text = meta.get("num_classes")
    if text is None:
        raise bad("num_classes", "is missing")
    try:
        num_classes = int(text)
    except ValueError:
        raise bad("num_classes", f"must be a whole number, got {text!r}") from None
    if num_classes < 2:
        raise bad("num_classes", f"must be at least 2 (a classifier needs two classes), got {num_classes}")
    lr = None
    if meta.get("lr"):
        try:
            lr = float(meta["lr"])
        except ValueError:
            raise bad("lr", f"must be a number, got {meta['lr']!r}") from None
        if not math.isfinite(lr) or lr <= 0:
            raise bad("lr", f"must be a finite number > 0, got {meta['lr']!r}")
    stats = {}
    for key in ("mean", "std"):
        values = json_value(key, "[]", list)
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values):
            raise bad(key, "must be a list of finite numbers")
        if key == "std" and any(v <= 0 for v in values):
            raise bad(key, "must be positive")
        stats[key] = tuple(float(v) for v in values)
    class_names = json_value("class_names", "[]", list)
    return {
        "num_classes": num_classes, "lr": lr, "dataset": str(meta.get("dataset", "")), "mean": stats["mean"],
        "std": stats["std"], "method": str(meta.get("method", "")), "class_names": [str(c) for c in class_names],
        "config": json_value("config", "{}", dict),
    }
