"""Distillation methods behind one interface; pick one by name with :func:`create_distiller`.

- :mod:`.base`      the :class:`Distiller` interface: init -> step() -> synset(); state_dict()
- :mod:`.settings`  :class:`MethodBase`, the settings every method shares
- :mod:`.registry`  name -> (settings class, distiller): one line per method
- :mod:`.datadam`, :mod:`.pad`  one package per method: its settings and its distiller

Importing this package loads no torch (the study schema imports the registry); the distillers
load when first used.
"""

from __future__ import annotations

from typing import Any

from ddsearch.methods.registry import METHODS, create_distiller, method_class, validate_method


def __getattr__(name: str) -> Any:
    if name == "Distiller":  # the interface imports torch: only when asked for
        from ddsearch.methods.base import Distiller

        return Distiller
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["Distiller", "METHODS", "create_distiller", "method_class", "validate_method"]
