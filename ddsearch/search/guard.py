"""``python -m ddsearch.search.guard OWNER_PID -- COMMAND...``: run COMMAND while OWNER_PID lives.

The study's MLflow tracking server runs under this guard. The guard starts the command in its
own process group and stops that group when the owner (the ``ddsearch tune`` driver) exits,
however it exits (SIGKILL included), or when the guard itself gets SIGTERM/SIGINT. So a killed
study never leaves a tracking server (and its port) behind.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _stop_group(proc: subprocess.Popen, grace_s: float = 10.0) -> None:
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.1)
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # the server's own children too
    except ProcessLookupError:
        pass
    proc.wait()


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[1] != "--":
        print("usage: python -m ddsearch.search.guard OWNER_PID -- COMMAND...", file=sys.stderr)
        return 2
    owner = int(argv[0])
    proc = subprocess.Popen(argv[2:], start_new_session=True)
    stopping = {"flag": False}

    def on_signal(signum: int, frame: object) -> None:
        stopping["flag"] = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        while not stopping["flag"] and proc.poll() is None:
            if not _alive(owner) or os.getppid() == 1:
                break
            time.sleep(0.5)
    finally:
        _stop_group(proc)
    return proc.returncode or 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
