"""``ddsearch schema``: the study JSON Schema, for editors."""

from __future__ import annotations

import argparse
from typing import Any

from ddsearch.commands._args import add_command


def add_parser(subparsers: Any) -> None:
    add_command(subparsers, "schema", run, "print the JSON Schema of study files (for editor validation and completion)")


def run(args: argparse.Namespace) -> int:
    from ddsearch.config import study_schema

    print(study_schema())
    return 0
