"""Shared benchmark plumbing: device/software description and JSON + markdown output."""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path
from typing import Any

import torch

from ddsearch.precision import cpu_name

RESULTS = Path(__file__).resolve().parent / "results"


def device_info(device: torch.device) -> dict[str, Any]:
    """Name the hardware and software so every figure says where it came from."""
    info: dict[str, Any] = {
        "device": str(device),
        "cpu": cpu_name(),
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


def update_readme(marker: str, body: str, readme: Path = RESULTS.parents[1] / "README.md") -> bool:
    """Replace the README's block between ``<!-- marker:begin -->`` and ``<!-- marker:end -->``.

    The README's results are generated from the JSON this way, never typed by hand. Returns False
    (and leaves the file alone) where the README has no such block.
    """
    begin, end = f"<!-- {marker}:begin -->", f"<!-- {marker}:end -->"
    text = readme.read_text()
    if begin not in text or end not in text:
        return False
    readme.write_text(text.split(begin)[0] + begin + "\n" + body.strip() + "\n" + end + text.split(end, 1)[1])
    return True
