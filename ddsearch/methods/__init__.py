"""Distillation methods behind one interface; pick one by name with :func:`create_distiller`."""

from __future__ import annotations

from collections.abc import Callable

from ddsearch.config import MethodBase
from ddsearch.data import RealData
from ddsearch.errors import suggest
from ddsearch.methods.base import Distiller


def _datadam() -> type[Distiller]:
    from ddsearch.methods.datadam import DataDAM

    return DataDAM


def _pad() -> type[Distiller]:
    from ddsearch.methods.pad import PAD

    return PAD


# Lazy, so that importing one method never pays for another's imports.
METHODS: dict[str, Callable[[], type[Distiller]]] = {"datadam": _datadam, "pad": _pad}


def method_class(settings: MethodBase) -> type[Distiller]:
    name = getattr(settings, "name", "")
    if name not in METHODS:
        raise suggest(name, METHODS, "method")
    return METHODS[name]()


def create_distiller(
    settings: MethodBase, data: RealData, seed: int = 0, progress: bool = True, precision: str = "auto"
) -> Distiller:
    """Build the distiller the settings name; the caller never needs to know which it is."""
    return method_class(settings)(settings, data, seed, progress=progress, precision=precision)


def validate_method(settings: MethodBase, data: RealData) -> None:
    """Cheap up-front checks (no expert training, no distillation) that the settings fit the data."""
    method_class(settings).validate(settings, data)


__all__ = ["Distiller", "METHODS", "create_distiller", "method_class", "validate_method"]
