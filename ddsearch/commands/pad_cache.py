"""``ddsearch scores`` and ``ddsearch experts``: fill PAD's cache ahead of a study.

The two commands share one module: both load a PAD study the same way and fill the same cache.
"""

from __future__ import annotations

import argparse
import time
from typing import TYPE_CHECKING, Any

from ddsearch.commands._args import add_command, add_study_args, study_overrides
from ddsearch.errors import DDSearchError

if TYPE_CHECKING:
    from ddsearch.config import Study
    from ddsearch.data import RealData
    from ddsearch.methods.pad.settings import PADSettings


def add_parser(subparsers: Any) -> None:
    add_study_args(add_command(subparsers, "scores", run_scores,
                               "compute (and cache) PAD's per-sample difficulty scores for a study"))
    add_study_args(add_command(subparsers, "experts", run_experts,
                               "train (and cache) PAD's expert trajectories for a study ahead of time"))


def run_scores(args: argparse.Namespace) -> int:
    return scores_command(args.study, study_overrides(args))


def run_experts(args: argparse.Namespace) -> int:
    return experts_command(args.study, study_overrides(args))


def _load(study_path: str, overrides: list[str] | None) -> tuple[Study, PADSettings, RealData]:
    from ddsearch.config import load_study
    from ddsearch.methods.pad.settings import PADSettings
    from ddsearch.study_data import load_study_data

    study = load_study(study_path, overrides or [])
    if study.method.name != "pad" or not isinstance(study.method, PADSettings):
        raise DDSearchError(
            f"{study_path}: method is '{study.method.name}', but scores and experts are PAD's; "
            "use a study with method.name: pad (e.g. studies/mnist_pad.yaml)"
        )
    if study.search:
        from ddsearch.methods.pad.experts import CACHE_FIELDS

        touched = sorted(set(study.search) & CACHE_FIELDS)
        if touched:
            print(f"note: the search varies {', '.join(touched)}; this builds the cache for the study's fixed values only")
    from ddsearch.methods.pad.matching import PAD

    data = load_study_data(study)
    PAD.validate(study.method, data)  # an unwritable cache folder fails here, before any training
    return study, study.method, data


def scores_command(study_path: str, overrides: list[str] | None = None) -> int:
    from ddsearch.methods.pad.scores import get_scores

    study, settings, data = _load(study_path, overrides)
    start = time.perf_counter()
    scores, path, cached = get_scores(data, settings, study.seed, progress=True, precision=study.precision)
    seconds = time.perf_counter() - start
    print(f"{settings.score} scores of {len(scores)} {data.name} training images "
          f"({'cache hit' if cached else f'computed in {seconds:.1f}s'}): {path}")
    for c, idx in enumerate(data.class_indices):
        s = scores[idx.cpu()]
        print(f"  class {data.class_names[c]:>10}: n={len(s):6d}  min {s.min():.4f}  "
              f"median {s.median():.4f}  max {s.max():.4f}")
    return 0


def experts_command(study_path: str, overrides: list[str] | None = None) -> int:
    from ddsearch.methods.pad.experts import get_experts

    study, settings, data = _load(study_path, overrides)
    start = time.perf_counter()
    buffer = get_experts(data, settings, study.seed, progress=True, precision=study.precision)
    seconds = time.perf_counter() - start
    hits = len(buffer) - buffer.built
    print(f"{len(buffer)} experts of {settings.arch} ({buffer.layout.total} parameters, {buffer.epochs} epochs): "
          f"{hits} cached, {buffer.built} trained in {seconds:.1f}s")
    print(f"cache: {buffer.paths[0].parent}")
    for k, acc in enumerate(buffer.val_acc):
        print(f"  expert {k:3d}: final val_acc {acc:.4f}")
    return 0
