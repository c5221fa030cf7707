"""Source loaders: each reads one data set from disk into un-normalised tensors (``RawSplits``).

A loader has the signature ``loader(root, image_size, download) -> RawSplits``. It only reads;
splitting, normalisation and device placement happen once, in ``realdata.build_real_data``.
Every failure a user can fix (missing files, bad CSV, corrupt image) becomes a one-line
``DDSearchError`` that says what was looked for, where, and what to do.
Heavy imports (sklearn, torchvision, pandas, PIL) are local so ``import ddsearch.data`` stays light.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ddsearch.data.realdata import RawSplits, stratified_split
from ddsearch.errors import DDSearchError
from ddsearch.paths import existing_dirs, remove_empty_new_dirs

Size = tuple[int, int]

#: Fraction and seed of the test split carved from ``load_digits`` (it has no official one).
#: Fixed on purpose: the test set must not move when a study changes ``split_seed``.
DIGITS_TEST_FRACTION = 0.2
DIGITS_TEST_SEED = 12345

#: Above this many images the PIL loaders show a progress bar (when stderr is a TTY).
PROGRESS_MIN_IMAGES = 200

MHIST_URL = "https://bmirds.github.io/MHIST/"
MHIST_CLASSES = ["HP", "SSA"]
MHIST_COLUMNS = ("Image Name", "Majority Vote Label", "Partition")
MHIST_SSA_COLUMN = "Number of Annotators who Selected SSA (Out of 7)"  # documented, not needed to load

IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
GRAYSCALE_MODES = ("1", "L", "LA")


def _one_line(text: object) -> str:
    """Collapse an exception's message to one line (the CLI prints errors as a single line)."""
    return " ".join(str(text).split())


# ---------------------------------------------------------------------- digits
def load_digits(root: Path, image_size: Size | None, download: bool) -> RawSplits:
    """scikit-learn's embedded 8x8 digits; a fixed stratified 20% test split is carved off."""
    from sklearn.datasets import load_digits as sk_load_digits

    bunch = sk_load_digits()
    x = torch.from_numpy(np.asarray(bunch.images, dtype=np.float32) / 16.0).unsqueeze(1)
    y = torch.from_numpy(np.asarray(bunch.target, dtype=np.int64))
    train_idx, test_idx = stratified_split(y, DIGITS_TEST_FRACTION, DIGITS_TEST_SEED)
    return RawSplits(
        train_x=x[train_idx],
        train_y=y[train_idx],
        test_x=x[test_idx],
        test_y=y[test_idx],
        class_names=[str(c) for c in range(10)],
        train_source_idx=train_idx,
        test_source_idx=test_idx,
    )


# ---------------------------------------------------------------------- torchvision
def _torchvision_load(cls_name: str, folder: str, root: Path, download: bool) -> tuple[object, object]:
    """Build the train and test torchvision datasets, turning 'not found'/'download failed' into one line."""
    import torchvision.datasets as tvd

    cls = getattr(tvd, cls_name)
    # torchvision makes root/<folder>/raw before it downloads; a failed download must not leave
    # those empty folders behind (and nothing that was there before is touched).
    existed = existing_dirs(root / folder)
    missing = [p for p in [root / folder, *(root / folder).parents] if not p.exists()]  # deepest first
    try:
        return cls(str(root), train=True, download=download), cls(str(root), train=False, download=download)
    except Exception as err:  # torchvision raises RuntimeError, URLError, OSError, ... depending on the failure
        remove_empty_new_dirs(root / folder, existed)
        for made in missing:
            if not made.exists():
                continue
            try:
                made.rmdir()  # only the empty folders the attempt created
            except OSError:
                break
        where = root / folder
        if download:
            why = f"files not found under {where} and the download failed ({_one_line(err)})"
        else:
            why = f"files not found under {where} and download=False"
        raise DDSearchError(
            f"cannot load {cls_name}: {why}; set root (or $DDSEARCH_DATA) to a folder that holds "
            f"{folder}/, or connect to the internet and allow download"
        ) from err


def _mnist_like(cls_name: str, folder: str, class_names: list[str] | None) -> Callable[[Path, Size | None, bool], RawSplits]:
    def load(root: Path, image_size: Size | None, download: bool) -> RawSplits:
        train, test = _torchvision_load(cls_name, folder, root, download)
        return RawSplits(
            train_x=train.data.unsqueeze(1).contiguous(),  # uint8 [N, 1, 28, 28], read in one go
            train_y=train.targets.long(),
            test_x=test.data.unsqueeze(1).contiguous(),
            test_y=test.targets.long(),
            class_names=class_names or list(train.classes),
        )

    load.__doc__ = f"torchvision {cls_name} (uint8 tensors read straight from the IDX files)."
    load.__name__ = f"load_{folder.lower()}"
    return load


load_mnist = _mnist_like("MNIST", "MNIST", [str(c) for c in range(10)])
load_fashion_mnist = _mnist_like("FashionMNIST", "FashionMNIST", None)


def load_cifar10(root: Path, image_size: Size | None, download: bool) -> RawSplits:
    """torchvision CIFAR-10, from its numpy ``.data`` arrays (no per-item PIL conversion)."""
    train, test = _torchvision_load("CIFAR10", "cifar-10-batches-py", root, download)

    def nchw(a: np.ndarray) -> Tensor:
        return torch.from_numpy(np.ascontiguousarray(a)).permute(0, 3, 1, 2).contiguous()

    return RawSplits(
        train_x=nchw(train.data),
        train_y=torch.as_tensor(train.targets, dtype=torch.long),
        test_x=nchw(test.data),
        test_y=torch.as_tensor(test.targets, dtype=torch.long),
        class_names=list(train.classes),
    )


# ---------------------------------------------------------------------- PIL image files
def read_images(paths: Sequence[Path], size: Size, grayscale: bool, desc: str) -> Tensor:
    """Decode, convert and resize image files into one uint8 [N, C, H, W] tensor.

    Any decode failure names the file: a corrupt image in a folder of thousands is otherwise
    impossible to find. The bar shows for large sets only (and only on a TTY: ``disable=None``).
    """
    from PIL import Image
    from tqdm.auto import tqdm

    mode = "L" if grayscale else "RGB"
    h, w = size
    out = torch.empty((len(paths), 1 if grayscale else 3, h, w), dtype=torch.uint8)
    bar = tqdm(paths, desc=desc, unit="img", disable=None if len(paths) > PROGRESS_MIN_IMAGES else True)
    for i, path in enumerate(bar):
        try:
            with Image.open(path) as im:
                im = im.convert(mode)
                if im.size != (w, h):
                    im = im.resize((w, h), Image.Resampling.BILINEAR)  # PIL's resize is antialiased
                arr = np.array(im, dtype=np.uint8)  # writable copy: torch.from_numpy warns on read-only
        except FileNotFoundError as err:
            raise DDSearchError(f"image file not found: {path}") from err
        except Exception as err:  # PIL raises OSError, SyntaxError, ValueError, zlib.error, ... on bad files
            raise DDSearchError(f"cannot read image {path} (corrupt or not an image?): {_one_line(err)}") from err
        out[i] = torch.from_numpy(arr).unsqueeze(0) if grayscale else torch.from_numpy(arr).permute(2, 0, 1)
    return out


def _peek_image(path: Path) -> tuple[Size, str]:
    """(H, W) and PIL mode of one image, naming the file if it cannot be read."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            return (im.height, im.width), im.mode
    except Exception as err:
        raise DDSearchError(f"cannot read image {path} (corrupt or not an image?): {_one_line(err)}") from err


# ---------------------------------------------------------------------- MHIST
def _mhist_missing(root: Path, what: str) -> DDSearchError:
    return DDSearchError(
        f"MHIST not found: {what} (looked in {root}); expected layout: <root>/annotations.csv "
        f"(columns {', '.join(MHIST_COLUMNS)}) and <root>/images/MHIST_*.png (224x224 RGB); MHIST is available "
        f"on request from its authors ({MHIST_URL}) and cannot be downloaded automatically; "
        f"point root (or $DDSEARCH_DATA) at your copy"
    )


def _find_mhist_root(root: Path) -> Path:
    """Accept the MHIST folder itself or a data root holding ``mhist/`` or ``MHIST/``."""
    for cand in (root, root / "mhist", root / "MHIST"):
        if (cand / "annotations.csv").is_file():
            return cand
    if not root.is_dir():
        raise _mhist_missing(root, "the folder does not exist")
    raise _mhist_missing(root, "no annotations.csv")


def load_mhist(root: Path, image_size: Size | None, download: bool) -> RawSplits:
    """MHIST colorectal polyp patches (HP vs SSA) from the user's copy; split by the CSV's Partition."""
    import pandas as pd

    root = _find_mhist_root(root)
    images_dir = root / "images"
    if not images_dir.is_dir():
        raise _mhist_missing(root, "no images/ folder")
    csv = root / "annotations.csv"
    try:
        df = pd.read_csv(csv, dtype=str, keep_default_na=False)
    except Exception as err:
        raise DDSearchError(f"cannot read MHIST annotations {csv}: {_one_line(err)}") from err
    df.columns = [str(c).strip() for c in df.columns]
    missing = [c for c in MHIST_COLUMNS if c not in df.columns]
    if missing:
        raise DDSearchError(
            f"MHIST annotations {csv} lacks column(s) {', '.join(repr(c) for c in missing)}; "
            f"found {', '.join(repr(c) for c in df.columns)}"
        )
    names = df["Image Name"].str.strip()
    labels = df["Majority Vote Label"].str.strip()
    parts = df["Partition"].str.strip().str.lower()
    bad = sorted(set(labels) - set(MHIST_CLASSES))
    if bad:
        row = int(np.flatnonzero(~labels.isin(MHIST_CLASSES))[0])
        raise DDSearchError(
            f"MHIST annotations {csv}: unknown label(s) {', '.join(repr(b) for b in bad)} in 'Majority Vote Label' "
            f"(first at image {names.iloc[row]!r}); expected one of {', '.join(MHIST_CLASSES)}"
        )
    bad = sorted(set(parts) - {"train", "test"})
    if bad:
        raise DDSearchError(
            f"MHIST annotations {csv}: unknown value(s) {', '.join(repr(b) for b in bad)} in 'Partition'; "
            f"expected train or test"
        )
    size = image_size or (224, 224)
    y_all = torch.tensor(labels.map(MHIST_CLASSES.index).to_numpy(dtype=np.int64))
    split = {}
    for part in ("train", "test"):
        rows = np.flatnonzero((parts == part).to_numpy())
        if len(rows) == 0:
            raise DDSearchError(f"MHIST annotations {csv} has no rows with Partition '{part}'")
        paths = [images_dir / names.iloc[r] for r in rows]
        x = read_images(paths, size, grayscale=False, desc=f"MHIST {part}")
        split[part] = (x, y_all[rows], torch.as_tensor(rows, dtype=torch.long))
    return RawSplits(
        train_x=split["train"][0],
        train_y=split["train"][1],
        test_x=split["test"][0],
        test_y=split["test"][1],
        class_names=list(MHIST_CLASSES),
        train_source_idx=split["train"][2],  # CSV row numbers
        test_source_idx=split["test"][2],
    )


# ---------------------------------------------------------------------- image folder
def _scan_split(split_dir: Path, class_names: list[str] | None) -> tuple[list[Path], list[int], list[str]]:
    """List images per class folder with torchvision ImageFolder semantics (sorted classes, recursive)."""
    found = sorted(e.name for e in os.scandir(split_dir) if e.is_dir())
    if class_names is None:
        class_names = found
        if not class_names:
            raise DDSearchError(f"image folder {split_dir} has no class folders; expected {split_dir}/<class>/<image>")
    else:
        extra = sorted(set(found) - set(class_names))
        if extra:
            raise DDSearchError(
                f"image folder {split_dir} has class folder(s) {', '.join(extra)} that train/ lacks; "
                f"train classes: {', '.join(class_names)}"
            )
    paths: list[Path] = []
    targets: list[int] = []
    for c, name in enumerate(class_names):
        class_dir = split_dir / name
        if not class_dir.is_dir():
            continue  # a test split may leave a class out
        files = [
            Path(d) / f
            for d, _, fs in sorted(os.walk(class_dir, followlinks=True))
            for f in sorted(fs)
            if f.lower().endswith(IMG_EXTENSIONS)
        ]
        if not files and split_dir.name == "train":
            raise DDSearchError(f"class folder {class_dir} has no images ({', '.join(IMG_EXTENSIONS)})")
        paths += files
        targets += [c] * len(files)
    return paths, targets, class_names


def load_imagefolder(root: Path, image_size: Size | None, download: bool) -> RawSplits:
    """<root>/train/<class>/* and <root>/test/<class>/*; size and colour mode come from the first image."""
    for part in ("train", "test"):
        if not (root / part).is_dir():
            raise DDSearchError(
                f"image folder {root} has no {part}/ folder; expected {root}/train/<class>/<image> and "
                f"{root}/test/<class>/<image> (set root to that folder)"
            )
    train_paths, train_y, class_names = _scan_split(root / "train", None)
    test_paths, test_y, _ = _scan_split(root / "test", class_names)
    if not test_paths:
        raise DDSearchError(f"image folder {root / 'test'} has no images")
    first_size, first_mode = _peek_image(train_paths[0])
    size = image_size or first_size
    grayscale = first_mode in GRAYSCALE_MODES
    return RawSplits(
        train_x=read_images(train_paths, size, grayscale, desc="train images"),
        train_y=torch.as_tensor(train_y, dtype=torch.long),
        test_x=read_images(test_paths, size, grayscale, desc="test images"),
        test_y=torch.as_tensor(test_y, dtype=torch.long),
        class_names=class_names,
    )
