"""DataDAM's settings: the ``method`` section of a study whose ``method.name`` is ``datadam``."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from ddsearch.methods.settings import MethodBase


class DataDAMSettings(MethodBase):
    """Attention matching (Sajedi et al., ICCV 2023).

    The loss keeps the reference code's x100 scale, so ``lr_img`` is the same number as the
    reference ``--lr_img`` (1 for IPC <= 50 in the paper).
    """

    name: Literal["datadam"] = "datadam"
    arch: str = Field("ConvNetBN", description="distillation network; batch norm as the authors advise")
    batch_real: int = Field(128, gt=0, description="real images per class per iteration")
    lambda_mmd: float = Field(0.01, ge=0, description="weight of the last-layer (linear-kernel MMD) term")
    p: float = Field(4.0, gt=0, description="power of the spatial attention sum |f_c|^p")
    momentum: float = Field(0.5, ge=0, lt=1)
    loss_scale: float = Field(100.0, gt=0, description="the reference code's loss multiplier")
    channels_last: bool = Field(True, description="run the matching network in channels-last memory format (faster convolutions)")
    fuse: Literal["auto", "on", "off"] = Field(
        "auto", description="compile the real branch's per-chunk kernels with torch.compile ('auto': for large real batches)"
    )
