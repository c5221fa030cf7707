"""The toy method's settings: the study's ``method`` section when ``method.name`` is ``toy``."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from ddsearch.methods.settings import MethodBase


class ToySettings(MethodBase):
    name: Literal["toy"] = "toy"
    pull: float = Field(0.5, gt=0, le=1, description="fraction of lr_img used to pull class means together")
    batch_real: int = Field(4, gt=0, description="real images per class per step")
