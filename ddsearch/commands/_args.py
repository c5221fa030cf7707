"""What several commands share: argument types, the study and data arguments, table printing."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from typing import Any


def int_at_least(minimum: int) -> Callable[[str], int]:
    """argparse type: a whole number >= ``minimum`` (epochs, repeats, batch sizes, counts)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    return parse


positive_int = int_at_least(1)
non_negative_int = int_at_least(0)


def positive_float(text: str) -> float:
    """argparse type: a finite number > 0 (learning rates, split sizes); NaN and inf are refused."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value


def port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"a port is 1-65535, got {value}")
    return value


def add_command(subparsers: Any, name: str, handler: Callable[[argparse.Namespace], int],
                help_text: str) -> argparse.ArgumentParser:
    """A subcommand whose ``handler(args)`` the dispatcher calls."""
    parser = subparsers.add_parser(name, help=help_text, description=help_text)
    parser.set_defaults(handler=handler)
    return parser


def add_study_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("study", help="study YAML file (see studies/)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a study key, e.g. --set method.ipc=10 (repeatable)")
    add_precision_arg(parser, default=None, what="the study's precision key")


def add_precision_arg(parser: Any, default: str | None, what: str) -> None:
    parser.add_argument("--precision", default=default, choices=["auto", "fp32", "bf16"],
                        help=f"network compute precision (default: {what}); auto: bf16 where the hardware runs it fast")


def study_overrides(args: argparse.Namespace) -> list[str]:
    """``--set`` overrides plus ``--precision``, which is the study key ``precision``."""
    precision = getattr(args, "precision", None)
    return [*args.overrides, *([f"precision={precision}"] if precision else [])]


def add_data_args(parser: argparse.ArgumentParser) -> None:
    """Where the real data come from and how the networks train (evaluate, baseline)."""
    parser.add_argument("--data-root", default=None, help="data folder (default: $DDSEARCH_DATA or ~/.cache/ddsearch/data)")
    parser.add_argument("--image-size", type=positive_int, default=None, help="resize images to this size")
    parser.add_argument("--val-size", type=positive_float, default=0.1, help="validation split: fraction (<1) or count")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=positive_int, default=1, help="independent trainings; mean ± std is reported")
    add_precision_arg(parser, default="auto", what="auto")


def load_data(name: str, root: str | None, image_size: int | None, val_size: float, device: str):
    from ddsearch.data import load_dataset
    from ddsearch.study_data import resolve_device

    return load_dataset(name, root=root, image_size=image_size, val_size=val_size, device=resolve_device(device))


def print_table(rows: list[dict], columns: list[str] | None = None) -> None:
    import pandas as pd

    frame = pd.DataFrame(rows)
    if columns:
        frame = frame[[c for c in columns if c in frame.columns]]
    with pd.option_context("display.max_rows", 500, "display.max_columns", 50, "display.width", 200):
        print(frame.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
