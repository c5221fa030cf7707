"""Sharpness-aware (SAM) expert training: the update rule, flatter minima, and the expert cache key."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ddsearch.augment import DSA
from ddsearch.evaluate import train_epoch
from ddsearch.methods.pad import PADSettings, get_experts
from ddsearch.methods.pad import _cache
from ddsearch.methods.pad.experts import expert_description
from ddsearch.methods.pad.sharpness import SharpnessAware, top_hessian_eigenvalue
from ddsearch.models import seeded_network

ARCH = "ConvNet-d2-w16-relu-instancenorm-avgpool"

pytestmark = pytest.mark.usefixtures("one_thread")


def test_step_applies_the_gradient_taken_at_the_worst_nearby_weights() -> None:
    torch.manual_seed(0)
    x, y = torch.randn(32, 5), torch.randint(0, 3, (32,))
    net = torch.nn.Linear(5, 3)
    w0, b0 = net.weight.detach().clone(), net.bias.detach().clone()
    lr, rho, momentum = 0.1, 0.2, 0.9
    sam = SharpnessAware(torch.optim.SGD(net.parameters(), lr=lr, momentum=momentum), rho)

    def closure() -> torch.Tensor:
        sam.zero_grad()
        loss = F.cross_entropy(net(x), y)
        loss.backward()
        return loss

    loss = sam.step(closure)

    def loss_at(w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(x @ w.T + b, y)

    w, b = w0.clone().requires_grad_(), b0.clone().requires_grad_()
    gw, gb = torch.autograd.grad(loss_at(w, b), [w, b])
    scale = rho / torch.sqrt(gw.square().sum() + gb.square().sum())
    w2, b2 = (w0 + scale * gw).requires_grad_(), (b0 + scale * gb).requires_grad_()
    hw, hb = torch.autograd.grad(loss_at(w2, b2), [w2, b2])
    assert torch.allclose(loss, loss_at(w0, b0))  # the loss at w, not at the perturbed weights
    assert torch.allclose(net.weight, w0 - lr * hw, atol=1e-6)  # first SGD step: buf = g
    assert torch.allclose(net.bias, b0 - lr * hb, atol=1e-6)
    assert not torch.allclose(hw, gw)  # the perturbation mattered
    assert torch.allclose(sam.base.state[net.weight]["momentum_buffer"], hw, atol=1e-6)  # the base keeps its state


def test_bad_use_is_refused() -> None:
    net = torch.nn.Linear(2, 2)
    with pytest.raises(ValueError, match="rho must be positive"):
        SharpnessAware(torch.optim.SGD(net.parameters(), lr=0.1), 0.0)
    with pytest.raises(ValueError, match="needs a closure"):
        SharpnessAware(torch.optim.SGD(net.parameters(), lr=0.1), 0.05).step()


def test_sam_reaches_a_flatter_point_than_sgd_at_no_higher_loss(digits) -> None:
    """SGD sharpens as its loss falls; SAM's weights are flatter than SGD's first weights at SAM's loss."""
    rows = torch.arange(len(digits.train_y))

    def trained(optimizer_for, epochs: int):
        net = seeded_network(ARCH, digits.channels, digits.num_classes, digits.image_size, 0)
        optimizer = optimizer_for(net)
        generator = torch.Generator().manual_seed(0)
        for _ in range(epochs):
            train_epoch(net, optimizer, digits.train_x, digits.train_y, rows, 64, DSA("none"), generator)
            yield net

    def loss_of(net: torch.nn.Module) -> float:
        with torch.no_grad():
            return float(F.cross_entropy(net(digits.train_x), digits.train_y))

    *_, sam_net = trained(lambda net: SharpnessAware(torch.optim.SGD(net.parameters(), lr=0.01), 0.05), 10)
    sam_loss = loss_of(sam_net)
    sgd_net = next(net for net in trained(lambda net: torch.optim.SGD(net.parameters(), lr=0.01), 30)
                   if loss_of(net) <= sam_loss)

    def sharpness(net: torch.nn.Module) -> float:
        return top_hessian_eigenvalue(F.cross_entropy(net(digits.train_x), digits.train_y), list(net.parameters()), 30)

    sam_sharpness, sgd_sharpness = sharpness(sam_net), sharpness(sgd_net)
    print(f"loss SAM {sam_loss:.4f} vs SGD {loss_of(sgd_net):.4f}; top eigenvalue SAM {sam_sharpness:.2f}, "
          f"SGD {sgd_sharpness:.2f}")
    assert sam_sharpness < 0.75 * sgd_sharpness


def test_sam_rho_shapes_the_expert_key_and_zero_keeps_the_old_one(digits, tmp_path) -> None:
    def settings(**overrides) -> PADSettings:
        base = dict(ipc=2, iterations=1, arch=ARCH, num_experts=1, expert_train_epochs=2, expert_batch=128,
                    max_start_epoch=1, expert_epochs=1, score_models=1, score_epochs=0, add_end_epoch=1,
                    rm_epoch_first=2, rm_epoch_second=2, cache_dir=str(tmp_path))
        return PADSettings(**(base | overrides))

    plain = expert_description(digits, settings(), seed=0)
    assert "sam_rho" not in plain["expert"]  # caches built before the option keep their keys
    flat = expert_description(digits, settings(expert_sam_rho=0.05), seed=0)
    assert _cache.make_key(flat) != _cache.make_key(plain)
    sgd = get_experts(digits, settings(), seed=0)
    sam = get_experts(digits, settings(expert_sam_rho=0.05), seed=0)
    assert sgd.built == 1 and sam.built == 1 and sam.paths[0].parent != sgd.paths[0].parent
    assert torch.equal(sam.trajectories[0][0], sgd.trajectories[0][0])  # same initial network
    assert not torch.allclose(sam.trajectories[0][-1], sgd.trajectories[0][-1])
    assert bool(torch.isfinite(sam.trajectories[0]).all())
