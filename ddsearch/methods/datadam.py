"""DataDAM: dataset distillation by attention matching (Sajedi et al., ICCV 2023).

Each iteration draws a fresh, frozen network and matches, class by class, the mean spatial
attention maps of real and synthetic images at every block but the last, plus the mean final
embedding (a linear-kernel MMD) weighted by ``lambda_mmd``.

Differences from the reference code, all for speed or reproducibility, none for the maths:
- the networks return their block activations directly (no forward hooks, no clones);
- one forward pass over all classes for the real batch and one for the synthetic set, with one
  Siamese DSA draw per iteration shared by real and synthetic images of every class;
- the loss stays on the device and randomness comes from a seeded generator.
The loss keeps the reference's x100 scale, so ``lr_img`` (eta_S) means what ``--lr_img`` means there.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from ddsearch.config import DataDAMSettings
from ddsearch.data import RealData
from ddsearch.errors import DDSearchError
from ddsearch.methods.base import Distiller
from ddsearch.models import is_conv_family, seeded_network


def abs_pow(x: torch.Tensor, p: float) -> torch.Tensor:
    """|x|^p; the paper's p = 4 (and p = 2) by squaring, which is much cheaper than pow."""
    if p == 4:
        return x.square().square()
    if p == 2:
        return x.square()
    return x.abs().pow(p)


def spatial_attention(activation: torch.Tensor, p: float) -> torch.Tensor:
    """a = sum_c |f_c|^p, flattened and L2-normalised per sample: [N, H*W]."""
    attention = abs_pow(activation, p).sum(dim=1).flatten(1)
    return F.normalize(attention, p=2, dim=1)


def class_means(features: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Per-class mean of class-contiguous rows (equal counts per class): [classes, D]."""
    return features.reshape(num_classes, -1, features.shape[-1]).mean(dim=1)


def attention_matching_loss(
    real_blocks: list[torch.Tensor],
    real_embedding: torch.Tensor,
    syn_blocks: list[torch.Tensor],
    syn_embedding: torch.Tensor,
    num_classes: int,
    p: float,
    lambda_mmd: float,
) -> torch.Tensor:
    """Sum over blocks but the last of ||mean_att_real - mean_att_syn||^2 per class, plus
    lambda_mmd * ||mean_emb_real - mean_emb_syn||^2 per class. Rows are class-contiguous."""
    loss = syn_embedding.new_zeros(())
    for real_act, syn_act in zip(real_blocks[:-1], syn_blocks[:-1]):
        real_att = class_means(spatial_attention(real_act, p), num_classes)
        syn_att = class_means(spatial_attention(syn_act, p), num_classes)
        loss = loss + (real_att - syn_att).square().sum()
    real_emb = class_means(real_embedding, num_classes)
    syn_emb = class_means(syn_embedding, num_classes)
    return loss + lambda_mmd * (real_emb - syn_emb).square().sum()


class DataDAM(Distiller):
    """Attention-matching distiller; see the module docstring."""

    method_name = "datadam"
    settings: DataDAMSettings

    def __init__(self, settings: DataDAMSettings, data: RealData, seed: int = 0, progress: bool = True) -> None:
        super().__init__(settings, data, seed, progress)
        self.optimizer = torch.optim.SGD([self.images], lr=settings.lr_img, momentum=settings.momentum)

    @classmethod
    def validate(cls, settings: DataDAMSettings, data: RealData) -> None:  # type: ignore[override]
        if not is_conv_family(settings.arch):
            raise DDSearchError(
                f"DataDAM needs a convolutional network with blocks to take attention from; "
                f"'{settings.arch}' has none. Use a ConvNet variant such as ConvNetBN"
            )
        super().validate(settings, data)

    def _fresh_network(self) -> torch.nn.Module:
        """A newly initialised, frozen network drawn from the run's generator."""
        data = self.data
        net = seeded_network(self.settings.arch, data.channels, data.num_classes, data.image_size, self.next_seed())
        net = net.to(self.device).train()
        if self.settings.channels_last:
            net = net.to(memory_format=torch.channels_last)
        for param in net.parameters():
            param.requires_grad_(False)
        return net

    def _real_batch(self) -> torch.Tensor:
        n = self.settings.batch_real
        smallest = self.data.min_class_count()
        n = min(n, smallest)  # classes smaller than batch_real give all their images
        return self.data.sample_classes(n, self.generator)

    def loss(self) -> torch.Tensor:
        """The scaled attention-matching loss for one fresh network and one real batch."""
        s = self.settings
        net = self._fresh_network()
        seed = self.next_seed()
        real = self.dsa(self._real_batch(), seed=seed)
        syn = self.dsa(self.images, seed=seed)
        if s.channels_last:
            real = real.contiguous(memory_format=torch.channels_last)
            syn = syn.contiguous(memory_format=torch.channels_last)
        with torch.no_grad():
            real_blocks, real_embedding = net.forward_features(real)
        syn_blocks, syn_embedding = net.forward_features(syn)
        loss = attention_matching_loss(
            real_blocks, real_embedding, syn_blocks, syn_embedding, self.data.num_classes, s.p, s.lambda_mmd
        )
        return s.loss_scale * loss

    def step(self) -> torch.Tensor:
        loss = self.loss()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.iteration += 1
        return loss.detach()

    def extra_state(self) -> dict[str, Any]:
        return {"optimizer": self.optimizer.state_dict()}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
