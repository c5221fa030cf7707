"""DataDAM (Sajedi et al., ICCV 2023): attention matching.

- :mod:`.settings`: :class:`DataDAMSettings`, the study's ``method`` section;
- :mod:`.distiller`: the :class:`DataDAM` distiller and its kernels (loaded on first use: torch).
"""

from __future__ import annotations

import importlib
from typing import Any

from ddsearch.methods.datadam.settings import DataDAMSettings


def __getattr__(name: str) -> Any:
    distiller = importlib.import_module(f"{__name__}.distiller")
    try:
        return getattr(distiller, name)
    except AttributeError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None


__all__ = ["DataDAMSettings", "DataDAM"]
