"""Networks for distillation and evaluation, built by name with `get_network`."""

from ddsearch.models.convnet import ConvNet, convnet_name, max_depth
from ddsearch.models.registry import get_network, is_conv_family, list_models, seeded_network

__all__ = ["ConvNet", "convnet_name", "get_network", "is_conv_family", "list_models", "max_depth", "seeded_network"]
