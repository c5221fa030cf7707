"""``python -m ddsearch.tracking.guard OWNER_PID -- COMMAND...``: run COMMAND while OWNER_PID lives.

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

GUARD_MODULE = "ddsearch.tracking.guard"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _descendants(pid: int) -> list:
    """The command's whole process tree (a server's workers and job runners may leave its group)."""
    try:
        import psutil

        return psutil.Process(pid).children(recursive=True)
    except Exception:  # noqa: BLE001 - psutil missing or the process gone: the group kill still runs
        return []


def _stop_group(proc: subprocess.Popen, grace_s: float = 10.0) -> None:
    """SIGTERM the command's group and tree, then SIGKILL what is left after ``grace_s``."""
    tree = _descendants(proc.pid)
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    for child in tree:
        try:
            child.terminate()
        except Exception:  # noqa: BLE001 - already gone
            pass
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and (proc.poll() is None or any(_running(c) for c in tree)):
        time.sleep(0.1)
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # the server's own children too
    except (ProcessLookupError, PermissionError):
        pass
    for child in tree:
        try:
            child.kill()
        except Exception:  # noqa: BLE001
            pass
    proc.wait()


def _running(process: object) -> bool:
    try:
        return bool(process.is_running()) and process.status() != "zombie"  # type: ignore[attr-defined]
    except Exception:  # noqa: BLE001
        return False


def run_guarded(command: list[str], grace_s: float = 30.0) -> int:
    """Run ``command`` under the guard in the foreground; Ctrl+C or SIGTERM stop it and its children.

    The guard is asked to stop (SIGTERM) and waited for: killing it outright would orphan the
    server it watches. Returns the command's exit code, or 130 after an interrupt.
    """
    guard = subprocess.Popen([sys.executable, "-m", GUARD_MODULE, str(os.getpid()), "--", *command])
    previous = signal.getsignal(signal.SIGTERM)

    def on_term(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    if threading_main():
        signal.signal(signal.SIGTERM, on_term)
    try:
        return guard.wait()
    except KeyboardInterrupt:
        deadline = time.monotonic() + grace_s
        while guard.poll() is None and time.monotonic() < deadline:
            try:
                guard.send_signal(signal.SIGTERM)
                guard.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                break
            except KeyboardInterrupt:  # a second Ctrl+C: keep stopping, do not orphan the server
                continue
        if guard.poll() is None:
            _stop_group(guard, grace_s=0)
        return 130
    finally:
        if threading_main():
            signal.signal(signal.SIGTERM, previous)


def threading_main() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[1] != "--":
        print(f"usage: python -m {GUARD_MODULE} OWNER_PID -- COMMAND...", file=sys.stderr)
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
