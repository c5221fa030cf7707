"""Checkpoints without pickle: nested state is split into safetensors tensors + a JSON skeleton.

Distiller and optimiser states are dicts of tensors, numbers and strings. Storing them this
way means a checkpoint from an untrusted place can be loaded without executing anything.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ddsearch.atomic_files import replacing
from ddsearch.errors import DDSearchError

_TENSOR = "__tensor__"
_TUPLE = "__tuple__"
_INTKEYS = "__intkeys__"


def _split(node: Any, path: str, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(node, torch.Tensor):
        tensors[path] = node.detach().cpu().contiguous()
        return {_TENSOR: path}
    if isinstance(node, dict):
        int_keys = all(isinstance(k, int) for k in node) and bool(node)
        out = {str(k): _split(v, f"{path}/{k}", tensors) for k, v in node.items()}
        return {_INTKEYS: out} if int_keys else out
    if isinstance(node, tuple):
        return {_TUPLE: [_split(v, f"{path}/{i}", tensors) for i, v in enumerate(node)]}
    if isinstance(node, list):
        return [_split(v, f"{path}/{i}", tensors) for i, v in enumerate(node)]
    if node is None or isinstance(node, (bool, int, float, str)):
        return node
    raise TypeError(f"cannot checkpoint a {type(node).__name__} at {path or '/'}")


def _join(node: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(node, dict):
        if _TENSOR in node:
            return tensors[node[_TENSOR]]
        if _TUPLE in node:
            return tuple(_join(v, tensors) for v in node[_TUPLE])
        if _INTKEYS in node:
            return {int(k): _join(v, tensors) for k, v in node[_INTKEYS].items()}
        return {k: _join(v, tensors) for k, v in node.items()}
    if isinstance(node, list):
        return [_join(v, tensors) for v in node]
    return node


def save_state(state: dict[str, Any], path: str | Path) -> Path:
    """Write atomically, so a crash mid-write leaves the previous checkpoint intact."""
    tensors: dict[str, torch.Tensor] = {}
    skeleton = _split(state, "", tensors)
    with replacing(path) as partial:
        save_file(tensors, str(partial), metadata={"ddsearch-state": json.dumps(skeleton)})
    return Path(path)


def read_safetensors(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and metadata of a safetensors file; raises OSError/ValueError/SafetensorError if unreadable."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        meta = handle.metadata() or {}
    return load_file(str(path)), meta


def load_state(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        tensors, meta = read_safetensors(path)
    except (SafetensorError, OSError, ValueError) as err:
        raise DDSearchError(f"checkpoint {path} is unreadable ({err}); delete it to start that run afresh") from None
    if "ddsearch-state" not in meta:
        raise DDSearchError(f"{path} is not a ddsearch checkpoint")
    return _join(json.loads(meta["ddsearch-state"]), tensors)
