"""The one interface every distillation method sits behind.

The trial runner and ``ddsearch distill`` only ever see a :class:`Distiller`; which method
runs is decided by the study's ``method.name`` through :func:`ddsearch.methods.create_distiller`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import torch

from ddsearch.augment import DSA, resolve_strategy
from ddsearch.methods.settings import MethodBase
from ddsearch.data import RealData
from ddsearch.errors import DDSearchError
from ddsearch.precision import compute_dtype, resolve_precision
from ddsearch.synset import SyntheticSet


class Distiller(ABC):
    """Owns a synthetic set and improves it one ``step()`` at a time.

    Randomness comes only from ``self.generator`` (seeded), so a run is reproducible and a
    run resumed from ``state_dict()`` ends bit-identical to an uninterrupted one.
    """

    method_name: str = ""

    def __init__(
        self, settings: MethodBase, data: RealData, seed: int = 0, progress: bool = True, precision: str = "auto"
    ) -> None:
        self.validate(settings, data)
        self.settings = settings
        self.data = data
        self.device = data.train_x.device
        # Networks compute in this dtype; images, optimiser state and losses stay fp32.
        self.precision = resolve_precision(precision, self.device)
        self.compute_dtype = compute_dtype(self.precision)
        self.seed = seed
        self.iteration = 0
        self.generator = torch.Generator().manual_seed(seed)
        self.dsa = DSA(resolve_strategy(settings.dsa_strategy, data.name))
        self.images = self._initial_images().requires_grad_(True)
        self.labels = torch.arange(data.num_classes, device=self.device).repeat_interleave(settings.ipc)

    @classmethod
    def validate(cls, settings: MethodBase, data: RealData) -> None:
        """Cheap checks that the settings fit the data, run before anything is logged or trained."""
        from ddsearch.models import get_network

        data.check_ipc(settings.ipc)
        get_network(settings.arch, data.channels, data.num_classes, data.image_size)

    # ---- what each method provides ------------------------------------------------------
    @abstractmethod
    def step(self) -> torch.Tensor:
        """One distillation iteration; returns the loss as a device tensor (no host sync)."""

    def extra_state(self) -> dict[str, Any]:
        """Method-specific state (optimisers, learned lr, labels) for checkpoints."""
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`extra_state` returned."""

    def learned_lr(self) -> float | None:
        return None

    def current_labels(self) -> torch.Tensor:
        return self.labels

    # ---- shared behaviour ---------------------------------------------------------------
    def _initial_images(self) -> torch.Tensor:
        data, ipc = self.data, self.settings.ipc
        shape = (data.num_classes * ipc, data.channels, *data.image_size)
        if self.settings.init == "noise":
            return torch.randn(shape, generator=self.generator).to(self.device)
        if self.settings.init == "herding":
            return data.train_x[self._herding_rows()].detach().clone()
        picks = [data.sample(c, ipc, self.generator) for c in range(data.num_classes)]
        return torch.cat(picks).detach().clone()

    def _herding_rows(self) -> torch.Tensor:
        """Training rows the herding control picks (class by class), in an embedding of ``arch`` seeded by the run."""
        from ddsearch.coreset import herding_rows

        s = self.settings
        return herding_rows(self.data, s.ipc, s.arch, s.init_embed_epochs, self.seed)

    def next_seed(self) -> int:
        """A fresh integer seed from the run's generator (for Siamese DSA)."""
        return int(torch.randint(0, 2**31 - 1, (1,), generator=self.generator))

    def synset(self) -> SyntheticSet:
        """The current synthetic set, detached, with the metadata needed to reload it safely."""
        lr = self.learned_lr()
        return SyntheticSet(
            images=self.images.detach().clone(),
            labels=self.current_labels().detach().clone(),
            num_classes=self.data.num_classes,
            lr=lr,
            dataset=self.data.name,
            mean=tuple(self.data.mean),
            std=tuple(self.data.std),
            method=self.method_name,
            class_names=list(self.data.class_names),
            config=self.settings.model_dump() | {"precision": self.precision},
        )

    def state_dict(self) -> dict[str, Any]:
        return {
            "iteration": self.iteration,
            "images": self.images.detach().clone(),
            "generator": self.generator.get_state(),
            "extra": self.extra_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if tuple(state["images"].shape) != tuple(self.images.shape):
            raise DDSearchError(
                f"checkpoint has synthetic images of shape {tuple(state['images'].shape)}, "
                f"this run needs {tuple(self.images.shape)}; it belongs to another configuration"
            )
        with torch.no_grad():
            self.images.copy_(state["images"].to(self.device))
        self.iteration = int(state["iteration"])
        self.generator.set_state(state["generator"])
        self.load_extra_state(state["extra"])
