"""The toy distiller: match each class's synthetic mean to a fresh real batch's mean."""

from __future__ import annotations

import torch

from ddsearch.methods.base import Distiller

from toy_method.settings import ToySettings


class ToyDistiller(Distiller):
    method_name = "toy"

    def __init__(self, settings: ToySettings, data, seed: int = 0, progress: bool = True, precision: str = "auto") -> None:
        super().__init__(settings, data, seed, progress=progress, precision=precision)
        self.optimizer = torch.optim.SGD([self.images], lr=settings.lr_img * settings.pull)

    def step(self) -> torch.Tensor:
        classes, ipc = self.data.num_classes, self.settings.ipc
        real = torch.cat([self.data.sample(c, self.settings.batch_real, self.generator) for c in range(classes)])
        real_means = real.reshape(classes, -1, *real.shape[1:]).mean(1)
        syn_means = self.images.reshape(classes, ipc, *self.images.shape[1:]).mean(1)
        loss = (syn_means - real_means).pow(2).sum()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.iteration += 1
        return loss.detach()
