"""Sharpness-aware expert training: the flat trajectories that PAD builds on (FTD, Du et al., CVPR 2023).

FTD trains its experts so that they settle in flat regions of the loss, arguing that a student
which lands a little off an expert's epoch then meets a smoother target. It uses GSAM; this is
plain SAM (Foret et al., ICLR 2021), GSAM's base: each step takes the gradient at the worst
nearby weights ``w + rho * g / ||g||`` and applies it at ``w`` with the base optimiser.
"""

from __future__ import annotations

from collections.abc import Callable

import torch


class SharpnessAware(torch.optim.Optimizer):
    """SAM around ``base``: ``step(closure)`` evaluates the closure twice, at ``w`` and at ``w + e``.

    The closure must zero the gradients, compute the loss on one fixed batch and call ``backward``;
    the base optimiser (its lr, momentum and weight decay) makes the update.
    """

    def __init__(self, base: torch.optim.Optimizer, rho: float) -> None:
        if rho <= 0:
            raise ValueError(f"rho must be positive (the radius of the worst-case neighbourhood), got {rho}")
        super().__init__(base.param_groups, {"rho": rho})
        self.base = base
        self.param_groups = base.param_groups  # one set of groups: a scheduler on either moves both
        self.rho = rho

    @torch.no_grad()
    def step(self, closure: Callable[[], torch.Tensor] | None = None) -> torch.Tensor:  # type: ignore[override]
        if closure is None:
            raise ValueError("SharpnessAware.step needs a closure: it evaluates the loss twice per step")
        with torch.enable_grad():
            loss = closure()
        params = [p for group in self.param_groups for p in group["params"] if p.grad is not None]
        if params:
            grads = [p.grad for p in params]
            norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))
            shifts = torch._foreach_mul(grads, self.rho / (norm + 1e-12))
            torch._foreach_add_(params, shifts)
            with torch.enable_grad():
                closure()
            torch._foreach_sub_(params, shifts)
        self.base.step()
        return loss


def top_hessian_eigenvalue(loss: torch.Tensor, params: list[torch.Tensor], iters: int = 20, seed: int = 0) -> float:
    """Sharpness: the largest Hessian eigenvalue of ``loss`` in ``params``, by power iteration on
    Hessian-vector products (the start vector comes from ``seed``, so the figure is reproducible)."""
    grads = torch.autograd.grad(loss, params, create_graph=True)
    generator = torch.Generator().manual_seed(seed)
    v = [torch.randn(p.shape, generator=generator).to(p.device) for p in params]
    value = torch.tensor(0.0)
    for _ in range(iters):
        norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(v)))
        v = [a / norm for a in v]
        hv = torch.autograd.grad(grads, params, grad_outputs=v, retain_graph=True)
        value = sum((a * h).sum() for a, h in zip(v, hv))
        v = [h.detach() for h in hv]
    return float(value)
