"""Settings every distillation method shares, and the DSA strategy check they run.

Each method's own settings class (``methods/<name>/settings.py``) extends :class:`MethodBase`;
``methods/registry.py`` names them, and the study schema accepts every one it names.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from ddsearch.errors import suggest
from ddsearch.strict import Strict

# DSA transform families (ddsearch.augment implements them; a test keeps the two in step).
DSA_FAMILIES = ("color", "crop", "cutout", "flip", "scale", "rotate")


class MethodBase(Strict):
    """Settings every distiller shares."""

    ipc: int = Field(10, gt=0, description="images per class")
    iterations: int = Field(1000, gt=0, description="distillation iterations")
    init: Literal["real", "noise", "herding"] = Field(
        "real", description="starting images: random real ones, noise, or the herding control's picks"
    )
    init_embed_epochs: int = Field(
        2, ge=0, description="init herding: epochs the embedding network (arch) trains on the real data first"
    )
    lr_img: float = Field(1.0, gt=0, description="eta_S: learning rate of the synthetic images")
    arch: str = Field("ConvNet", description="network used for distillation")
    dsa_strategy: str = Field("auto", description="DSA strategy; 'auto' leaves out flip for digit datasets")

    @field_validator("dsa_strategy")
    @classmethod
    def _known_strategy(cls, value: str) -> str:
        check_dsa_strategy(value)
        return value


def check_dsa_strategy(value: str) -> None:
    """'auto', 'none' or families joined by '_' (color_crop_...); raises ValueError with a suggestion."""
    text = value.strip().lower()
    if text in ("", "auto", "none"):
        return
    families = text.split("_")
    for family in families:
        if family not in DSA_FAMILIES:
            raise ValueError(f"DSA strategy {value!r}: {suggest(family, DSA_FAMILIES, 'augmentation family')} "
                             f"(or 'auto' / 'none')")
    if len(set(families)) != len(families):
        raise ValueError(f"DSA strategy {value!r} names a family twice")
