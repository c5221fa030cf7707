"""The ``ddsearch`` command: a dispatcher over :mod:`ddsearch.commands`.

Each command's module owns its arguments (``add_parser``) and its handler. Every user-facing
problem is a :class:`DDSearchError`, printed as one line with a non-zero exit code; ``--debug``
shows the traceback instead. Heavy imports happen inside the handlers so that ``--help`` is
instant.
"""

from __future__ import annotations

import argparse
import errno
import os
import sys
from collections.abc import Sequence

from ddsearch.commands import (
    baseline,
    datasets,
    distill,
    evaluate,
    models,
    nas,
    pad_cache,
    reevaluate,
    report,
    schema,
    tune,
    ui,
)
from ddsearch.errors import DDSearchError

EXIT_USER_ERROR = 2


# In the order `ddsearch --help` lists them.
COMMANDS = (datasets, models, evaluate, baseline, distill, tune, report, reevaluate, ui, schema, pad_cache, nas)


class _Parser(argparse.ArgumentParser):
    """Usage errors as one line (like every other error), exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USER_ERROR, f"ddsearch: error: {self.prog.removeprefix('ddsearch').strip() or 'usage'}: "
                                   f"{message}; see `{self.prog} --help`\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="ddsearch",
        description="Experiment-tracked hyperparameter search for dataset distillation (DataDAM, PAD).",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for command in COMMANDS:
        command.add_parser(subparsers)
    return parser


def _silence_stdout() -> None:
    """After a closed pipe or a full disk, point stdout at /dev/null so the exit flush cannot fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):
        pass


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split())[:2000]


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)  # a usage error exits 2 with one line (_Parser.error)
    if not getattr(args, "handler", None):
        parser.print_help()
        return EXIT_USER_ERROR
    debug = args.debug or os.environ.get("DDSEARCH_DEBUG") == "1"
    try:
        code = int(args.handler(args) or 0)
        sys.stdout.flush()
        return code
    except DDSearchError as err:
        if debug:
            raise
        print(f"ddsearch: error: {_one_line(err)}", file=sys.stderr)
        return EXIT_USER_ERROR
    except BrokenPipeError:
        # `ddsearch schema | head -1`: the reader has what it wanted; no traceback, no error.
        _silence_stdout()
        return 0
    except OSError as err:
        # The environment refused a read or write (permissions, a full disk, a read-only folder):
        # one line, like any other bad input; the specific checks catch most of these earlier.
        if debug:
            raise
        if err.errno in (errno.ENOSPC, errno.EIO) and err.filename is None:
            _silence_stdout()
        where = f" ({err.filename})" if err.filename else ""
        print(f"ddsearch: error: {err.strerror or _one_line(err)}{where}; check the path, its permissions "
              f"and free space", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("ddsearch: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
