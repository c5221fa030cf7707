"""Tests for ddsearch.augment: Siamese sharing, determinism, per-image randomness, gradients."""

from __future__ import annotations

import pytest
import torch

from ddsearch.augment import DSA, FAMILIES, DSAParams, default_strategy
from ddsearch.errors import DDSearchError

FULL = "color_crop_cutout_flip_scale_rotate"
# Families whose random parameters always change a generic image (flip does only half the time).
ALWAYS_VISIBLE = ("color", "crop", "cutout", "scale", "rotate")


def _images(n: int = 12, c: int = 3, size: int = 8, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, c, size, size, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("strategy", [*FAMILIES, FULL])
def test_same_seed_transforms_real_and_synthetic_batches_identically(strategy: str) -> None:
    dsa = DSA(strategy)
    real = _images(n=64)
    rows = torch.tensor([3, 0, 17, 9, 63])
    syn = real[rows].clone()
    for seed in range(6):
        assert torch.equal(dsa(real, seed=seed)[rows], dsa(syn, seed=seed))


@pytest.mark.parametrize("strategy", [*ALWAYS_VISIBLE, FULL])
def test_different_seeds_give_different_transforms(strategy: str) -> None:
    dsa = DSA(strategy)
    x = _images(n=4)
    outs = [dsa(x, seed=seed) for seed in range(6)]
    assert any(not torch.equal(outs[0], out) for out in outs[1:])


def test_flip_seeds_both_flip_and_keep() -> None:
    dsa, x = DSA("flip"), _images(n=2)
    outs = [dsa(x, seed=seed) for seed in range(16)]
    assert any(torch.equal(o, x) for o in outs)
    assert any(torch.equal(o, x.flip(-1)) for o in outs)


def _shift(x: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """x moved by whole pixels with zeros shifted in (out[i, j] = x[i + dy, j + dx])."""
    h, w = x.shape[-2:]
    padded = torch.nn.functional.pad(x, [abs(dx)] * 2 + [abs(dy)] * 2)
    return padded[..., abs(dy) + dy : abs(dy) + dy + h, abs(dx) + dx : abs(dx) + dx + w]


def test_crop_is_a_whole_pixel_shift_within_the_pad_ratio() -> None:
    x = _images(n=16, size=8) + 0.1  # ratio 0.125 on 8 px allows shifts of -1, 0 or 1 pixel
    out = DSA("crop")(x, generator=torch.Generator().manual_seed(0))
    shifts = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)]
    seen = set()
    for i in range(len(x)):
        match = [s for s in shifts if torch.equal(out[i], _shift(x[i], *s))]
        assert match, f"image {i} is not a shift of at most one pixel"
        seen.add(match[0])
    assert len(seen) > 1


def test_cutout_zeroes_one_square_in_all_channels() -> None:
    x = _images(n=16, size=8) + 0.1  # no zeros before the cutout; its side is 0.5 * 8 = 4 px
    out = DSA("cutout")(x, generator=torch.Generator().manual_seed(0))
    zero = out == 0
    assert torch.equal(zero, zero[:, :1].expand_as(zero))  # same pixels in every channel
    for mask in zero[:, 0]:
        rows, cols = mask.any(1).nonzero().flatten(), mask.any(0).nonzero().flatten()
        assert 1 <= len(rows) <= 4 and 1 <= len(cols) <= 4
        assert int(mask.sum()) == len(rows) * len(cols)  # a (clipped) rectangle
        assert len(rows) == 4 or rows[0] == 0 or rows[-1] == 7  # clipped only at the border


def test_seeded_call_leaves_global_rng_alone() -> None:
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    DSA(FULL)(_images(), seed=5)
    assert torch.equal(torch.rand(3), expected)


@pytest.mark.parametrize("family", FAMILIES)
def test_per_image_mode_gives_identical_images_different_transforms(family: str) -> None:
    dsa = DSA(family)
    x = _images(n=1).expand(16, -1, -1, -1).contiguous()
    out = dsa(x, generator=torch.Generator().manual_seed(0))
    assert any(not torch.equal(out[0], out[i]) for i in range(1, len(out)))


def test_per_image_mode_is_reproducible_from_generator_seed() -> None:
    dsa, x = DSA(FULL), _images()
    for seed in range(4):
        a = dsa(x, generator=torch.Generator().manual_seed(seed))
        b = dsa(x, generator=torch.Generator().manual_seed(seed))
        assert torch.equal(a, b)


def test_per_image_mode_without_generator_follows_torch_manual_seed() -> None:
    dsa, x = DSA(FULL), _images()
    torch.manual_seed(7)
    a = dsa(x)
    torch.manual_seed(7)
    assert torch.equal(a, dsa(x))


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("siamese", [True, False])
def test_gradient_reaches_input(family: str, siamese: bool) -> None:
    dsa = DSA(family, DSAParams(prob_flip=1.0))
    x = _images(n=4).requires_grad_(True)
    kwargs = {"seed": 3} if siamese else {"generator": torch.Generator().manual_seed(3)}
    dsa(x, **kwargs).square().sum().backward()
    assert x.grad is not None
    assert torch.isfinite(x.grad).all()
    assert x.grad.abs().sum() > 0


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("size", [8, 28])
@pytest.mark.parametrize("strategy", [*FAMILIES, FULL])
def test_output_shape_and_dtype_match_input(channels: int, size: int, strategy: str) -> None:
    x = _images(n=3, c=channels, size=size)
    for kwargs in ({"seed": 1}, {"generator": torch.Generator().manual_seed(1)}):
        out = DSA(strategy)(x, **kwargs)
        assert out.shape == x.shape
        assert out.dtype == x.dtype


def test_seed_and_generator_together_are_refused() -> None:
    with pytest.raises(ValueError):
        DSA(FULL)(_images(), seed=1, generator=torch.Generator())


@pytest.mark.parametrize("strategy", ["none", "None", ""])
def test_none_is_identity(strategy: str) -> None:
    x = _images()
    dsa = DSA(strategy)
    assert dsa.families == ()
    assert dsa(x, seed=0) is x


def test_default_strategy_leaves_flip_out_for_digits_only() -> None:
    assert "flip" not in default_strategy("mnist").split("_")
    assert "flip" not in default_strategy("digits").split("_")
    assert "flip" in default_strategy("cifar10").split("_")
    assert DSA(default_strategy("mnist")).families == ("color", "crop", "cutout", "scale", "rotate")


def test_families_and_repr() -> None:
    dsa = DSA("crop_flip")
    assert dsa.families == ("crop", "flip")
    assert "crop_flip" in repr(dsa)


def test_unknown_family_raises_with_suggestion() -> None:
    with pytest.raises(DDSearchError, match="did you mean 'rotate'"):
        DSA("color_rotat")


def test_duplicate_family_and_bad_params_are_rejected() -> None:
    with pytest.raises(DDSearchError):
        DSA("crop_crop")
    with pytest.raises(DDSearchError):
        DSAParams(ratio_scale=0.5)
