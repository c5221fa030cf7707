"""Small training helpers shared by the score networks and the experts."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ddsearch.augment import DSA
from ddsearch.models import get_network


def fresh_network(arch: str, channels: int, num_classes: int, image_size: tuple[int, int], seed: int) -> nn.Module:
    """A network whose initial weights depend on ``seed`` only (torch's global RNG is left alone)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return get_network(arch, channels, num_classes, image_size)


def train_epoch(
    net: nn.Module,
    optimizer: torch.optim.Optimizer,
    x: torch.Tensor,
    y: torch.Tensor,
    indices: torch.Tensor,
    batch_size: int,
    dsa: DSA,
    generator: torch.Generator,
) -> None:
    """One pass over ``x[indices]`` in a random order, with per-image DSA; all randomness from ``generator``."""
    net.train()
    order = indices[torch.randperm(len(indices), generator=generator)].to(x.device, non_blocking=True)
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        loss = F.cross_entropy(net(dsa(x[idx], generator=generator)), y[idx])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()


@torch.no_grad()
def predict(net: nn.Module, x: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
    """Logits in eval mode, batched."""
    was_training = net.training
    net.eval()
    out = torch.cat([net(x[s : s + batch_size]) for s in range(0, x.shape[0], batch_size)])
    net.train(was_training)
    return out
