"""Bounded YAML: every YAML ddsearch reads goes through :func:`load_yaml`.

Why: ``yaml.safe_load`` runs no code, but a few hundred bytes of nested aliases (a "billion
laughs" bomb) expand into gigabytes. So a document is refused when its text is too large, and its
node graph is composed first (aliases stay shared, so that is cheap) and measured with aliases
expanded before anything is constructed. Only the standard YAML tags are accepted.
"""

from __future__ import annotations

from typing import Any

import yaml

from ddsearch.errors import DDSearchError

MAX_BYTES = 1_000_000  # a study file is a few kB
MAX_NODES = 100_000  # scalars + collections after expanding aliases

_STANDARD_TAG = "tag:yaml.org,2002:"
_PLAIN_TAGS = {f"{_STANDARD_TAG}{t}" for t in ("str", "int", "float", "bool", "null", "seq", "map", "merge", "timestamp")}


def _expanded_size(root: yaml.Node, limit: int) -> int:
    """Nodes in the document once aliases are expanded; stops counting past ``limit``."""
    memo: dict[int, int] = {}

    def size(node: yaml.Node, depth: int) -> int:
        if depth > 200:
            raise DDSearchError("nesting deeper than 200 levels")
        key = id(node)
        if key in memo:
            return memo[key]
        memo[key] = limit + 1  # a node that contains itself (a recursive alias) is too large
        total = 1
        if isinstance(node, yaml.SequenceNode):
            for child in node.value:
                total += size(child, depth + 1)
                if total > limit:
                    break
        elif isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                total += size(k, depth + 1) + size(v, depth + 1)
                if total > limit:
                    break
        memo[key] = total
        return total

    return size(root, 0)


def _check_tags(node: yaml.Node, seen: set[int]) -> None:
    if id(node) in seen:
        return
    seen.add(id(node))
    if not node.tag.startswith(_STANDARD_TAG) or node.tag not in _PLAIN_TAGS:
        raise DDSearchError(f"the YAML tag {node.tag!r} is not allowed; write plain values (no !tags)")
    if isinstance(node, yaml.SequenceNode):
        for child in node.value:
            _check_tags(child, seen)
    elif isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            _check_tags(k, seen)
            _check_tags(v, seen)


def load_yaml(text: str | bytes, source: str, max_bytes: int = MAX_BYTES, max_nodes: int = MAX_NODES) -> Any:
    """Parse one YAML document with bounded size and alias expansion; problems are one line."""
    if len(text) > max_bytes:
        raise DDSearchError(f"{source}: {len(text)} bytes is too large for a YAML file (limit {max_bytes})")
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8-sig")
        except UnicodeDecodeError as err:
            raise DDSearchError(f"{source}: not UTF-8 text (byte {err.start}); save it as UTF-8") from None
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        if node is None:
            return None
        try:
            if _expanded_size(node, max_nodes) > max_nodes:
                raise DDSearchError(f"more than {max_nodes} values once its aliases are expanded (an alias bomb?)")
            _check_tags(node, set())
        except DDSearchError as err:
            raise DDSearchError(f"{source}: {err}") from None
        loader = yaml.SafeLoader("")
        try:
            return loader.construct_document(node)
        finally:
            loader.dispose()
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise DDSearchError(f"{source}: invalid YAML{where}: {problem}") from None
    except RecursionError:
        raise DDSearchError(f"{source}: the YAML is nested too deeply") from None


def read_yaml_file(path: Any, what: str = "YAML file", max_bytes: int = MAX_BYTES) -> Any:
    """Read and parse a YAML file, checking its size before reading it."""
    from pathlib import Path

    path = Path(path)
    size = path.stat().st_size
    if size > max_bytes:
        raise DDSearchError(f"{what} {path}: {size} bytes is too large (limit {max_bytes})")
    return load_yaml(path.read_bytes(), str(path), max_bytes=max_bytes)
