"""The pydantic base of every study section (the schema in :mod:`ddsearch.config`, and each
method's settings in its own package)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Strict(BaseModel):
    """Unknown keys are errors: a typo must never silently fall back to a default."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)
