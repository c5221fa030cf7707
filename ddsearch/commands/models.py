"""``ddsearch models``: which architectures exist."""

from __future__ import annotations

import argparse
from typing import Any

from ddsearch.commands._args import add_command


def add_parser(subparsers: Any) -> None:
    add_command(subparsers, "models", run, "list the architectures get_network knows")


def run(args: argparse.Namespace) -> int:
    from ddsearch.models import list_models

    print("\n".join(list_models()))
    print("generic: ConvNet-d{depth}-w{width}-{act}-{norm}-{pool}, e.g. ConvNet-d4-w64-leakyrelu-batchnorm-maxpool")
    return 0
