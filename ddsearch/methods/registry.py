"""Every distillation method by name: its settings class and its distiller, one line each.

Adding a method is a package (``methods/<name>/`` with ``settings.py`` and its distiller) plus one
line in :data:`METHODS`; the study schema (:mod:`ddsearch.config`), the study-key docs and the
run engine all read this table. Distillers are named as ``"module:Class"`` and imported on first
use, so naming a method (validating a study, ``ddsearch report``) never loads torch.
"""

from __future__ import annotations

import importlib
import sys
from typing import TYPE_CHECKING

from ddsearch.errors import suggest
from ddsearch.methods.datadam.settings import DataDAMSettings
from ddsearch.methods.pad.settings import PADSettings
from ddsearch.methods.settings import MethodBase

if TYPE_CHECKING:
    from ddsearch.data import RealData
    from ddsearch.methods.base import Distiller

# name -> (settings class, "module:Distiller")
METHODS: dict[str, tuple[type[MethodBase], str]] = {
    "datadam": (DataDAMSettings, "ddsearch.methods.datadam.distiller:DataDAM"),
    "pad": (PADSettings, "ddsearch.methods.pad.matching:PAD"),
}


def register(name: str, settings: type[MethodBase], distiller: str) -> None:
    """Add a method at run time (a plugin, a test): the registry line, written from outside.

    The study schema is rebuilt, so studies name the method from here on.
    """
    declared = settings.model_fields["name"].default if "name" in settings.model_fields else None
    if declared != name:
        raise ValueError(f"{settings.__name__}.name must default to {name!r} (the study's method.name), got {declared!r}")
    METHODS[name] = (settings, distiller)
    config = sys.modules.get("ddsearch.config")
    if config is not None:
        config.rebuild_method_union()


def settings_classes() -> dict[str, type[MethodBase]]:
    """Method name -> its settings class, in registry order."""
    return {name: entry[0] for name, entry in METHODS.items()}


def method_class(settings: MethodBase) -> type[Distiller]:
    """The distiller class that ``settings`` name (imported now)."""
    name = getattr(settings, "name", "")
    if name not in METHODS:
        raise suggest(name, METHODS, "method")
    module, _, cls = METHODS[name][1].partition(":")
    return getattr(importlib.import_module(module), cls)


def create_distiller(
    settings: MethodBase, data: RealData, seed: int = 0, progress: bool = True, precision: str = "auto"
) -> Distiller:
    """Build the distiller the settings name; the caller never needs to know which it is."""
    return method_class(settings)(settings, data, seed, progress=progress, precision=precision)


def validate_method(settings: MethodBase, data: RealData) -> None:
    """Cheap up-front checks (no expert training, no distillation) that the settings fit the data."""
    method_class(settings).validate(settings, data)
