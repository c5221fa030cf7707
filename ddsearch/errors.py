"""User-facing errors: the CLI prints these as one line, without a traceback."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class DDSearchError(Exception):
    """An error caused by the user's input or environment, with a message that says what to do."""


def suggest(name: str, choices: Iterable[str], what: str) -> DDSearchError:
    """Build an 'unknown X' error that names the closest valid choices."""
    choices = sorted(choices)
    close = difflib.get_close_matches(name, choices, n=3, cutoff=0.5)
    lowered = {c.lower(): c for c in choices}
    if name.lower() in lowered and lowered[name.lower()] not in close:
        close.insert(0, lowered[name.lower()])
    hint = f"did you mean {', '.join(repr(c) for c in close)}?" if close else f"choose from: {', '.join(choices)}"
    return DDSearchError(f"unknown {what} {name!r}; {hint}")
