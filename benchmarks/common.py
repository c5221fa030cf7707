"""Shared benchmark plumbing: device/software description and JSON + markdown output."""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path
from typing import Any

import torch

RESULTS = Path(__file__).resolve().parent / "results"


def device_info(device: torch.device) -> dict[str, Any]:
    """Name the hardware and software so every figure says where it came from."""
    info: dict[str, Any] = {
        "device": str(device),
        "cpu": platform.processor() or platform.machine(),
        "cpu_threads": torch.get_num_threads(),
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "date": time.strftime("%Y-%m-%d"),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    info["device_name"] = info.get("gpu") or f"CPU ({info['cpu']}, {info['cores']} cores)"
    return info


def write_results(name: str, payload: Any, markdown: str) -> tuple[Path, Path]:
    RESULTS.mkdir(parents=True, exist_ok=True)
    json_path = RESULTS / f"{name}.json"
    md_path = RESULTS / f"{name}.md"
    json_path.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    md_path.write_text(markdown.rstrip() + "\n")
    print(markdown)
    return json_path, md_path


def data_root() -> str:
    """$DDSEARCH_DATA, else the shared data folder beside the repository."""
    env = os.environ.get("DDSEARCH_DATA")
    return env or str(Path(__file__).resolve().parents[2] / "shared" / "data")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
