"""Running the authors' DataDAM code (github.com/DataDistillation/DataDAM) from a user's clone.

None of its code is copied here. It runs as released, with two changes made from outside it: on a
machine without a GPU its unconditional ``net.cuda()`` becomes a no-op, and torch and numpy are
seeded. It needs ``kornia`` and ``einops`` beside ddsearch's own dependencies.
"""

from __future__ import annotations

from pathlib import Path

from official_code import OfficialRun, check_clone as _check_clone, run_launcher

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


def check_clone(folder: Path) -> Path:
    """The clone's absolute path; one clear line and exit where it is not a DataDAM clone."""
    return _check_clone(folder, ("main_DataDAM.py",), "https://github.com/DataDistillation/DataDAM")


def run_official(clone: Path, arguments: list[str], workdir: Path, seed: int = 0, echo_every: int = 0) -> OfficialRun:
    """Run ``main_DataDAM.py`` with ``arguments`` in ``workdir``; echo every ``echo_every``-th logged iteration."""
    return run_launcher(_LAUNCHER, [str(clone), str(seed), *arguments], workdir, "official DataDAM",
                        "it needs kornia and einops (pip install kornia einops)", echo_every)
