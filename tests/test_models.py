"""Tests for ddsearch.models: every network at every size, ConvNet features, names and errors."""

from __future__ import annotations

import copy

import pytest
import torch
from torch.func import functional_call, stack_module_state, vmap

from ddsearch.errors import DDSearchError
from ddsearch.models import ConvNet, convnet_name, get_network, is_conv_family, list_models
from ddsearch.models.convnet import CONVNET_ALIASES, CONVNET_DEFAULTS

pytestmark = pytest.mark.usefixtures("one_thread")

SIZES = (8, 28, 32, 64, 128, 224)
NUM_CLASSES = 10
# Written out by hand (not from max_depth) so a wrong depth rule fails the test.
TOO_DEEP = {
    8: {"ConvNetD4", "ConvNetD5", "ConvNetD6", "ConvNetD7"},
    28: {"ConvNetD6", "ConvNetD7"},
    32: {"ConvNetD6", "ConvNetD7"},
    64: {"ConvNetD7"},
    128: set(),
    224: set(),
}
EXPENSIVE = {"AlexNet", "AlexNetBN", "VGG11", "VGG11BN", "ResNet18", "ResNet18BN", "ResNet18BN_AP"}
REAL_ABOVE_64 = {"MLP", "LeNet", "ConvNet", "ConvNetD7", "ConvNetW32", "ConvNetLN", "ConvNetMP"}


def _device_for(name: str, size: int) -> str:
    """'cpu' to run for real, else 'meta': it checks every shape (conv kernels, norm shapes,
    classifier inputs) without the FLOPs, which keeps the suite fast on 2 cores."""
    if size <= 32:
        return "cpu"
    if size <= 64:
        return "meta" if name in EXPENSIVE else "cpu"
    return "cpu" if name in REAL_ABOVE_64 else "meta"


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def test_list_models_has_dc_names() -> None:
    names = list_models()
    assert len(names) == len(set(names))
    for name in ("ConvNet", "ConvNetD1", "ConvNetD7", "ConvNetW256", "ConvNetASwishBN", "ConvNetGN", "ConvNetNP",
                 "MLP", "LeNet", "AlexNet", "AlexNetBN", "VGG11", "VGG11BN", "ResNet18", "ResNet18BN", "ResNet18BN_AP"):
        assert name in names


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("channels", (1, 3))
def test_every_model_every_size(size: int, channels: int) -> None:
    for name in list_models():
        if name in TOO_DEEP[size]:
            with pytest.raises(DDSearchError):
                get_network(name, channels, NUM_CLASSES, size)
            continue
        with torch.device(_device_for(name, size)):
            model = get_network(name, channels, NUM_CLASSES, size)
            x = torch.randn(2, channels, size, size)
        with torch.no_grad():
            out = model(x)
        assert out.shape == (2, NUM_CLASSES), (name, size, channels)
        assert out.device.type == "meta" or torch.isfinite(out).all(), (name, size, channels)


def test_non_square_image_size() -> None:
    for name in ("ConvNet", "MLP", "LeNet", "VGG11", "ResNet18"):
        model = get_network(name, 3, NUM_CLASSES, (28, 40))
        assert model(torch.randn(2, 3, 28, 40)).shape == (2, NUM_CLASSES)


@pytest.mark.parametrize("name", sorted(set(list_models()) - TOO_DEEP[8]))
def test_small_images_are_not_collapsed(name: str) -> None:
    """At 8 px the logits must still depend on the input (instance norm of a 1x1 map would not)."""
    model = get_network(name, 1, NUM_CLASSES, 8)  # train mode, as when distilling/evaluating
    with torch.no_grad():
        a, b = model(torch.randn(2, 1, 8, 8)), model(torch.randn(2, 1, 8, 8))
    assert (a - b).abs().max() > 1e-3


def test_too_deep_message_names_model_size_and_max_depth() -> None:
    with pytest.raises(DDSearchError, match=r"ConvNetD7.*28x28.*at most depth 5"):
        get_network("ConvNetD7", 1, NUM_CLASSES, 28)
    with pytest.raises(DDSearchError, match=r"ConvNetD4.*8x8.*at most depth 3"):
        get_network("ConvNetD4", 3, NUM_CLASSES, 8)
    with pytest.raises(DDSearchError, match=r"ConvNet-d6-w32-relu-none-maxpool.*32x32.*at most depth 5"):
        get_network("ConvNet-d6-w32-relu-none-maxpool", 3, NUM_CLASSES, 32)
    # Without pooling any depth fits.
    assert get_network("ConvNet-d6-w8-relu-none-none", 1, NUM_CLASSES, 8)(torch.randn(2, 1, 8, 8)).shape == (2, 10)


def _block_sides(size: int, depth: int, pool: str) -> list[int]:
    side = 32 if size == 28 else size  # DC pads 28 px up to 32
    return [side // 2**i if pool != "none" else side for i in range(depth)]


@pytest.mark.parametrize(
    ("name", "channels", "size"),
    [
        ("ConvNet", 3, 32),
        ("ConvNetD4", 1, 28),
        ("ConvNetNP", 1, 8),
        ("ConvNetBN", 3, 8),
        ("ConvNet-d2-w16-leakyrelu-layernorm-maxpool", 3, 64),
        ("ConvNet-d1-w12-swish-groupnorm-avgpool", 1, 28),
    ],
)
def test_forward_features(name: str, channels: int, size: int) -> None:
    model = get_network(name, channels, NUM_CLASSES, size)
    assert isinstance(model, ConvNet) and is_conv_family(name)
    x = torch.randn(2, channels, size, size)
    acts, emb = model.forward_features(x)
    pool = "none" if name == "ConvNetNP" else ("maxpool" if "maxpool" in name else "avgpool")
    sides = _block_sides(size, model.num_blocks, pool)
    assert len(acts) == model.num_blocks == len(sides)
    for act, side in zip(acts, sides):
        assert act.shape == (2, model.width, side, side)
    last = sides[-1] // 2 if pool != "none" else sides[-1]
    assert emb.shape == (2, model.width * last * last) == (2, model.embed_dim)
    torch.testing.assert_close(emb, model.embed(x))
    torch.testing.assert_close(model.classifier(emb), model(x))


def test_block_activations_are_before_pooling() -> None:
    model = get_network("ConvNetMP", 3, NUM_CLASSES, 32)
    acts, _ = model.forward_features(torch.randn(2, 3, 32, 32))
    torch.testing.assert_close(model.blocks[1](model.pool(acts[0])), acts[1])


@pytest.mark.parametrize(
    ("name", "expected"),
    [("ConvNetD", r"ConvNetD\d"), ("resnet18", "'ResNet18'"), ("VGG11bn", "'VGG11BN'"), ("ConvNetBM", "'ConvNetBN'")],
)
def test_unknown_name_suggests(name: str, expected: str) -> None:
    with pytest.raises(DDSearchError, match=rf"unknown architecture '{name}'; did you mean .*{expected}"):
        get_network(name, 3, NUM_CLASSES, 32)
    with pytest.raises(DDSearchError, match="unknown architecture"):
        is_conv_family(name)


@pytest.mark.parametrize(
    ("name", "match"),
    [
        ("ConvNet-d3-w128-tanh-instancenorm-avgpool", r"unknown activation 'tanh'"),
        ("ConvNet-d3-w128-relu-batchnrom-avgpool", r"unknown norm 'batchnrom'; did you mean 'batchnorm'"),
        ("ConvNet-d3-w128-relu-none-meanpool", r"unknown pool 'meanpool'"),
        ("ConvNet-d3-w128-relu", r"expected ConvNet-d\{depth\}-w\{width\}"),
        ("ConvNet-d0-w128-relu-none-none", r"at least 1"),
        ("ConvNet-d2-w30-relu-groupnorm-none", r"multiple of 4"),
    ],
)
def test_bad_generic_name(name: str, match: str) -> None:
    with pytest.raises(DDSearchError, match=match):
        get_network(name, 3, NUM_CLASSES, 32)


def test_is_conv_family() -> None:
    assert is_conv_family("ConvNet") and is_conv_family("ConvNetD5") and is_conv_family("ConvNetLN")
    assert is_conv_family("ConvNet-d4-w64-leakyrelu-batchnorm-maxpool")
    for name in ("MLP", "LeNet", "AlexNet", "VGG11", "ResNet18", "ResNet18BN_AP"):
        assert not is_conv_family(name)
        assert not hasattr(get_network(name, 1, NUM_CLASSES, 8), "forward_features")


def test_convnet_name_round_trip() -> None:
    assert convnet_name(4, 64, "leakyrelu", "batchnorm", "maxpool") == "ConvNet-d4-w64-leakyrelu-batchnorm-maxpool"
    grid = [
        convnet_name(d, w, a, n, p)
        for d in (1, 2, 3)
        for w in (32, 64, 128, 256)
        for a in ("sigmoid", "relu", "leakyrelu", "swish")
        for n in ("none", "batchnorm", "layernorm", "instancenorm", "groupnorm")
        for p in ("none", "maxpool", "avgpool")
    ]
    assert len(set(grid)) == 720 and all(is_conv_family(g) for g in grid)


@pytest.mark.parametrize("alias", list(CONVNET_ALIASES))
def test_generic_spelling_matches_alias(alias: str) -> None:
    cfg = {**CONVNET_DEFAULTS, **CONVNET_ALIASES[alias]}
    generic = convnet_name(cfg["depth"], cfg["width"], cfg["act"], cfg["norm"], cfg["pool"])
    a, b = get_network(alias, 3, NUM_CLASSES, 128).eval(), get_network(generic, 3, NUM_CLASSES, 128).eval()
    assert {k: v.shape for k, v in a.state_dict().items()} == {k: v.shape for k, v in b.state_dict().items()}
    b.load_state_dict(a.state_dict())
    x = torch.randn(2, 3, 128, 128)
    torch.testing.assert_close(a(x), b(x))


def test_generic_default_has_convnet_parameter_count() -> None:
    def count(m: torch.nn.Module) -> int:
        return sum(p.numel() for p in m.parameters())

    assert count(get_network("ConvNet-d3-w128-relu-instancenorm-avgpool", 3, 10, 32)) == count(get_network("ConvNet", 3, 10, 32))
    # DC's ConvNet on CIFAR-10 has 320,010 parameters (conv 3-128-128-128, GroupNorm, Linear 2048->10).
    assert count(get_network("ConvNet", 3, 10, 32)) == 320_010


@pytest.mark.parametrize("name", ["ConvNet", "ConvNetAS", "ConvNetLN", "ConvNet-d2-w16-swish-groupnorm-none"])
def test_gradient_reaches_input(name: str) -> None:
    model = get_network(name, 3, NUM_CLASSES, 32)
    x = torch.randn(2, 3, 32, 32, requires_grad=True)
    model(x).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


@pytest.mark.parametrize("name", ["ConvNet", "ConvNetLN", "ConvNetBN", "LeNet", "VGG11", "ResNet18BN_AP"])
def test_functional_call_and_vmap_over_stacked_models(name: str) -> None:
    models = [get_network(name, 1, NUM_CLASSES, 8).eval() for _ in range(3)]
    params, buffers = stack_module_state(models)
    skeleton = copy.deepcopy(models[0]).to("meta")
    x = torch.randn(2, 1, 8, 8)
    out = vmap(lambda p, b: functional_call(skeleton, (p, b), (x,)))(params, buffers)
    torch.testing.assert_close(out, torch.stack([m(x) for m in models]))
