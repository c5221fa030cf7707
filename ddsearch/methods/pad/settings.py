"""PAD's settings: the ``method`` section of a study whose ``method.name`` is ``pad``."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from ddsearch.methods.settings import MethodBase


class PADSettings(MethodBase):
    """Prioritize Alignment in Dataset Distillation (Li et al., 2024): trajectory matching.

    Experts train on a difficulty-scheduled real set (easy first, hard added, easiest dropped late);
    the synthetic set is trained so that ``syn_steps`` student steps from the expert's epoch ``t``
    land near its epoch ``t + expert_epochs``, measured on the deep ``1 - alpha`` of the parameters.
    """

    name: Literal["pad"] = "pad"
    lr_img: float = Field(100.0, gt=0, description="eta_S: learning rate of the synthetic images")
    lr_lr: float = Field(1e-5, ge=0, description="learning rate of the learnable student lr (0 keeps it fixed)")
    lr_y: float = Field(2.0, ge=0, description="learning rate of the soft labels (0 keeps them fixed)")
    lr_teacher: float = Field(0.01, gt=0, description="experts' SGD lr, and the student lr's start value")
    momentum: float = Field(0.5, ge=0, lt=1, description="momentum of the image and student-lr optimisers")
    momentum_y: float = Field(0.9, ge=0, lt=1, description="momentum of the soft-label optimiser")
    syn_steps: int = Field(20, description="N: unrolled student steps per iteration")
    expert_epochs: int = Field(2, gt=0, description="M: target is the expert M epochs later")
    min_start_epoch: int = Field(0, ge=0)
    max_start_epoch: int = Field(10, gt=0, description="start epochs are drawn from [min_start_epoch, this)")
    max_start_epoch_final: int | None = Field(None, description="if set, the upper bound grows linearly to this")
    expansion_iterations: int | None = Field(
        None, gt=0, description="iterations over which the upper bound grows (default: all iterations)"
    )
    alpha: float = Field(0.25, description="parameter-selection ratio: the fraction of parameters left out of the loss")
    # The paper drops the shallowest parameters; the released distill/PAD.py instead ranks the
    # entries by their own squared error each iteration and drops the smallest (its loss_ratio).
    selection: Literal["depth", "loss"] = Field(
        "depth", description="which alpha-fraction leaves the loss: the shallowest (paper) or best-matched (released code)"
    )
    soft_labels: bool = True
    batch_syn: int | None = Field(None, gt=0, description="student minibatch; None uses the whole set each step")
    skip_threshold: float | None = Field(
        1.0, gt=0, description="skip the update when the normalised matching loss exceeds this (None: never)"
    )
    num_experts: int = Field(5, gt=0)
    expert_train_epochs: int = Field(20, gt=0, description="epochs each expert trains (one snapshot per epoch)")
    expert_batch: int = Field(256, gt=0)
    expert_momentum: float = Field(0.0, ge=0, lt=1, description="experts' SGD momentum (MTT: 0)")
    expert_weight_decay: float = Field(0.0, ge=0, description="experts' SGD weight decay (MTT: 0)")
    expert_sam_rho: float = Field(
        0.0, ge=0, description="sharpness-aware (SAM) radius for flat experts as in FTD (0: plain SGD, as MTT/PAD)"
    )
    workers: int = Field(1, gt=0, description="processes that train missing experts in parallel")
    cache_dir: str | None = Field(
        None, description="cache of scores and expert buffers; default $DDSEARCH_CACHE or ~/.cache/ddsearch"
    )
    score: Literal["el2n", "grand"] = "el2n"
    score_models: int = Field(4, gt=0, description="networks averaged for the difficulty score")
    score_epochs: int = Field(2, ge=0, description="epochs those networks train before scoring (0: at init)")
    init_ratio: float = Field(0.75, gt=0, le=1)
    add_end_epoch: int = Field(10, ge=0)
    rm_epoch_first: int = Field(
        12, ge=0, description="easy-sample removal starts after this epoch; not before the last matched epoch "
                              "(max start epoch + expert_epochs), so matched trajectories saw the whole data"
    )
    rm_easy_ratio_first: float = Field(0.1, ge=0, lt=1)
    rm_epoch_second: int = Field(15, ge=0)
    rm_easy_ratio_second: float = Field(0.2, ge=0, lt=1)

    @field_validator("alpha")
    @classmethod
    def _alpha_range(cls, value: float) -> float:
        if not 0 <= value < 1:
            raise ValueError(
                f"alpha must be in [0, 1) (the fraction of shallow parameters left out of the loss), got {value}"
            )
        return value

    @field_validator("syn_steps")
    @classmethod
    def _syn_steps_positive(cls, value: int) -> int:
        if value < 1:
            raise ValueError(f"syn_steps must be at least 1 (the number of unrolled student steps N), got {value}")
        return value

    @model_validator(mode="after")
    def _epochs_fit(self) -> "PADSettings":
        top = max(self.max_start_epoch, self.max_start_epoch_final or 0)
        if top + self.expert_epochs > self.expert_train_epochs:
            raise ValueError(
                f"max_start_epoch ({top}) + expert_epochs ({self.expert_epochs}) is beyond the "
                f"{self.expert_train_epochs} epochs the experts train; raise expert_train_epochs or lower them"
            )
        if self.min_start_epoch >= self.max_start_epoch:
            raise ValueError(
                f"min_start_epoch ({self.min_start_epoch}) must be below max_start_epoch ({self.max_start_epoch})"
            )
        if self.max_start_epoch_final is not None and self.max_start_epoch_final < self.max_start_epoch:
            raise ValueError(
                f"max_start_epoch_final ({self.max_start_epoch_final}) must not be below "
                f"max_start_epoch ({self.max_start_epoch}); it is where the growing upper bound ends"
            )
        if self.rm_epoch_first < top + self.expert_epochs:
            raise ValueError(
                f"rm_epoch_first ({self.rm_epoch_first}) is inside the matched epochs: matching reaches epoch "
                f"{top + self.expert_epochs} (max start epoch {top} + expert_epochs {self.expert_epochs}), so "
                f"students would chase trajectories trained without the easy samples; set rm_epoch_first >= "
                f"{top + self.expert_epochs}"
            )
        if self.rm_epoch_second < self.rm_epoch_first:
            raise ValueError(
                f"rm_epoch_second ({self.rm_epoch_second}) must not come before rm_epoch_first ({self.rm_epoch_first})"
            )
        return self
