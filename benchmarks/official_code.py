"""Running an author's released script from a user's clone, as a subprocess, and reading its log.

None of the authors' code is copied into ddsearch: a launcher (a few lines handed to ``python -c``)
makes the changes a machine without a GPU needs from outside the script, then runs it unchanged.
Both reference scripts log ``[YYYY-mm-dd HH:MM:SS] iter = N, loss = L`` every 10th iteration.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

# The first lines of every launcher: without a GPU, the scripts' unconditional .cuda() calls become no-ops.
NO_GPU_PRELUDE = """
import torch
if not torch.cuda.is_available():
    torch.Tensor.cuda = lambda self, *args, **kwargs: self
    torch.nn.Module.cuda = lambda self, device=None: self
"""
_ITER_LINE = re.compile(r"\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)\] iter = (\d+), loss = ([\d.]+)")


@dataclass
class OfficialRun:
    """What one run of the script left: its log lines and wall time."""

    lines: list[str]
    wall_seconds: float

    def iterations(self) -> dict[int, tuple[datetime, float]]:
        """Logged iteration -> (time stamp, loss); the scripts log every 10th iteration."""
        found = (_ITER_LINE.search(line) for line in self.lines)
        return {int(m[2]): (datetime.fromisoformat(m[1]), float(m[3])) for m in found if m}

    def seconds_per_iteration(self, first: int, last: int) -> float:
        """From the script's own time stamps (1 s resolution), so time it over many iterations."""
        logged = self.iterations()
        return (logged[last][0] - logged[first][0]).total_seconds() / (last - first)

    def distill_seconds_per_iteration(self, iterations: int) -> float:
        """From iteration 10 to the last one logged before ``iterations``: the final logged line also
        waits for the script's own evaluation, so it is left out."""
        return self.seconds_per_iteration(10, max(i for i in self.iterations() if i < iterations))

    def final_loss(self) -> float:
        logged = self.iterations()
        return logged[max(logged)][1]


def check_clone(folder: Path, files: tuple[str, ...], url: str) -> Path:
    """The clone's absolute path; one clear line and exit where ``folder`` lacks the script's ``files``."""
    if not all((folder / name).is_file() for name in files):
        sys.exit(f"error: {folder} has no {' and '.join(files)}; pass a clone of {url} "
                 "(git clone it into a temporary folder)")
    return folder.resolve()


def run_launcher(launcher: str, arguments: list[str], workdir: Path, name: str, hint: str,
                 echo_every: int = 0, env: dict[str, str] | None = None) -> OfficialRun:
    """Run ``python -c launcher *arguments`` in ``workdir``; one clear line (after its output) if it fails."""
    command = [sys.executable, "-c", launcher, *arguments]
    lines: list[str] = []
    start = time.perf_counter()
    with subprocess.Popen(command, cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          env=os.environ | (env or {})) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line.rstrip())
            match = _ITER_LINE.search(line)
            if echo_every and match and int(match[2]) % echo_every == 0:
                print(f"{name}: {line.strip()}", flush=True)
    if proc.returncode != 0:
        tail = "\n".join(lines[-40:])
        sys.exit(f"{tail}\nerror: the {name} script failed (exit {proc.returncode}), output above; {hint}")
    return OfficialRun(lines, time.perf_counter() - start)
