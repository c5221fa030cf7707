"""Running the authors' DataDAM code (github.com/DataDistillation/DataDAM) from a user's clone.

None of its code is copied here. It runs as released, with two changes made from outside it: on a
machine without a GPU its unconditional ``net.cuda()`` becomes a no-op, and torch and numpy are
seeded. It needs ``kornia`` and ``einops`` beside ddsearch's own dependencies.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

# argv: [clone, seed, the script's own arguments...]
_LAUNCHER = """
import runpy, sys
import numpy, torch
if not torch.cuda.is_available():
    torch.nn.Module.cuda = lambda self, device=None: self
folder, seed = sys.argv[1], int(sys.argv[2])
torch.manual_seed(seed)
numpy.random.seed(seed)
sys.path.insert(0, folder)
sys.argv = [folder + "/main_DataDAM.py"] + sys.argv[3:]
runpy.run_path(folder + "/main_DataDAM.py", run_name="__main__")
"""
_ITER_LINE = re.compile(r"\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)\] iter = (\d+), loss = ([\d.]+)")


def check_clone(folder: Path) -> Path:
    """The clone's absolute path; one clear line and exit where it is not a DataDAM clone."""
    if not (folder / "main_DataDAM.py").is_file():
        sys.exit(f"error: {folder} has no main_DataDAM.py; pass a clone of "
                 "https://github.com/DataDistillation/DataDAM (git clone it into a temporary folder)")
    return folder.resolve()


@dataclass
class OfficialRun:
    """What one run of the script left: its log lines and wall time."""

    lines: list[str]
    wall_seconds: float

    def iterations(self) -> dict[int, tuple[datetime, float]]:
        """Logged iteration -> (time stamp, loss); the script logs every 10th iteration."""
        found = (_ITER_LINE.search(line) for line in self.lines)
        return {int(m[2]): (datetime.fromisoformat(m[1]), float(m[3])) for m in found if m}

    def seconds_per_iteration(self, first: int, last: int) -> float:
        """From the script's own time stamps (1 s resolution), so time it over many iterations."""
        logged = self.iterations()
        return (logged[last][0] - logged[first][0]).total_seconds() / (last - first)


def run_official(clone: Path, arguments: list[str], workdir: Path, seed: int = 0, echo_every: int = 0) -> OfficialRun:
    """Run ``main_DataDAM.py`` with ``arguments`` in ``workdir``; echo every ``echo_every``-th logged iteration."""
    command = [sys.executable, "-c", _LAUNCHER, str(clone), str(seed), *arguments]
    lines: list[str] = []
    start = time.perf_counter()
    with subprocess.Popen(command, cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line.rstrip())
            match = _ITER_LINE.search(line)
            if echo_every and match and int(match[2]) % echo_every == 0:
                print(f"official DataDAM: {line.strip()}", flush=True)
    if proc.returncode != 0:
        tail = "\n".join(lines[-15:])
        sys.exit(f"{tail}\nerror: the official DataDAM script failed (exit {proc.returncode}), output above; "
                 "it needs kornia and einops (pip install kornia einops)")
    return OfficialRun(lines, time.perf_counter() - start)
