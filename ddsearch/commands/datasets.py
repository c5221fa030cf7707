"""``ddsearch datasets``: what can be loaded."""

from __future__ import annotations

import argparse
from typing import Any

from ddsearch.commands._args import add_command, print_table


def add_parser(subparsers: Any) -> None:
    add_command(subparsers, "datasets", run, "list the data sets ddsearch can load")


def run(args: argparse.Namespace) -> int:
    from ddsearch.data import describe_datasets

    print_table(describe_datasets())
    return 0
