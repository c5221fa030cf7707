"""Distillation methods behind one interface; pick one by name with :func:`create_distiller`."""

from __future__ import annotations

from collections.abc import Callable

from ddsearch.config import MethodBase
from ddsearch.data import RealData
from ddsearch.errors import suggest
from ddsearch.methods.base import Distiller


def _datadam(settings: MethodBase, data: RealData, seed: int) -> Distiller:
    from ddsearch.methods.datadam import DataDAM

    return DataDAM(settings, data, seed)  # type: ignore[arg-type]


def _pad(settings: MethodBase, data: RealData, seed: int) -> Distiller:
    from ddsearch.methods.pad import PAD

    return PAD(settings, data, seed)  # type: ignore[arg-type]


METHODS: dict[str, Callable[[MethodBase, RealData, int], Distiller]] = {"datadam": _datadam, "pad": _pad}


def create_distiller(settings: MethodBase, data: RealData, seed: int = 0) -> Distiller:
    """Build the distiller the settings name; the caller never needs to know which it is."""
    name = getattr(settings, "name", "")
    if name not in METHODS:
        raise suggest(name, METHODS, "method")
    return METHODS[name](settings, data, seed)


__all__ = ["Distiller", "METHODS", "create_distiller"]
