"""Nothing left listening, nothing exposed (issue 13): a tiny study and ``ddsearch ui``.

Each command runs as a subprocess; while it runs, every listening TCP socket of every process
it started (Ray's gcs_server, raylet, agents and workers; the study's tracking server; the UI's
server and its workers) is recorded with psutil. Each must be on loopback, and every one of
those processes must be gone once the command exits (the UI after Ctrl+C, i.e. SIGINT).
"""

from __future__ import annotations

import ipaddress
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import REPO_ROOT, tiny_study_yaml

psutil = pytest.importorskip("psutil")

STUDY = tiny_study_yaml("sockets", budget="{num_samples: 1, max_concurrent: 1, max_failures: 0}",
                       extra="scheduler: {type: none}\n")


def _is_loopback(ip: str) -> bool:
    address = ipaddress.ip_address(ip.split("%")[0])
    mapped = getattr(address, "ipv4_mapped", None)
    return (mapped or address).is_loopback


class Watcher:
    """Records the process tree of one command and every TCP socket it listens on."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self.root = psutil.Process(proc.pid)
        self.proc = proc
        self.processes: dict[int, psutil.Process] = {}
        self.listening: set[tuple[int, str, str, int]] = set()

    def poll(self) -> None:
        try:
            tree = [self.root, *self.root.children(recursive=True)]
        except psutil.Error:
            return
        for process in tree:
            try:
                self.processes.setdefault(process.pid, process)
                name = process.name()
                for conn in process.net_connections(kind="tcp"):
                    if conn.status == psutil.CONN_LISTEN:
                        self.listening.add((process.pid, name, conn.laddr.ip, conn.laddr.port))
            except psutil.Error:
                continue

    def exposed(self) -> list[tuple[int, str, str, int]]:
        return sorted(s for s in self.listening if not _is_loopback(s[2]))

    def survivors(self, grace_s: float = 15.0) -> list[str]:
        """Processes of the tree still running ``grace_s`` after the command ended."""
        deadline = time.monotonic() + grace_s
        while True:
            alive = []
            for pid, process in self.processes.items():
                try:
                    if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                        alive.append(f"{pid} {' '.join(process.cmdline()[:4])}")
                except psutil.Error:
                    continue
            if not alive or time.monotonic() > deadline:
                return alive
            time.sleep(0.5)

    def stop_survivors(self) -> None:
        """Cleanup after a failed assertion: only the processes this test started, by pid."""
        for process in self.processes.values():
            try:
                process.kill()
            except psutil.Error:
                pass


def _as_from_a_terminal() -> None:
    """Ctrl+C reaches a command typed at a terminal. A test run started in the background (``pytest &``)
    ignores SIGINT, and its children inherit that and would never see the Ctrl+C this test sends."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI", "DDSEARCH_DEBUG")}
    return env | {"PYTHONPATH": str(REPO_ROOT), "DDSEARCH_CACHE": str(tmp_path / "cache")}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.slow
def test_study_and_ui_listen_on_loopback_only_and_leave_nothing_behind(tmp_path: Path) -> None:
    """The study and the UI run side by side (the UI reads the store the study writes)."""
    (tmp_path / "sockets.yaml").write_text(STUDY)
    env = _env(tmp_path)
    port = _free_port()
    tune = subprocess.Popen([sys.executable, "-m", "ddsearch.cli", "tune", "sockets.yaml"], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    study = Watcher(tune)
    # The UI starts once the study has created the store (two processes creating one SQLite store
    # at once race in MLflow's schema migrations).
    created = tmp_path / ".ddsearch" / "sockets" / "tracking.json"
    deadline = time.monotonic() + 300
    while not created.is_file() and tune.poll() is None and time.monotonic() < deadline:
        study.poll()
        time.sleep(0.5)
    ui = subprocess.Popen([sys.executable, "-m", "ddsearch.cli", "ui", "--port", str(port)], cwd=tmp_path, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=_as_from_a_terminal)
    browser = Watcher(ui)
    state = {"serving": False}

    def serving() -> bool:
        if not state["serving"]:
            assert ui.poll() is None, ui.communicate()[1][-3000:]
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1)
                state["serving"] = True
            except OSError:
                return False
        return True

    try:
        deadline = time.monotonic() + 400
        while time.monotonic() < deadline and not (tune.poll() is not None and serving()):
            study.poll()
            browser.poll()
            time.sleep(0.5)
        for _ in range(5):  # the UI's workers open their sockets around its first answer
            browser.poll()
            time.sleep(0.2)
        out, err = tune.communicate(timeout=60)
        assert tune.returncode == 0, err[-3000:]
        assert "SystemExit" not in err and "Traceback" not in err, err[-3000:]
        names = {name for _, name, _, _ in study.listening}
        assert any("gcs_server" in n for n in names) and any("raylet" in n for n in names), study.listening
        assert any(p == port for _, _, _, p in browser.listening), browser.listening
        for watcher in (study, browser):
            assert not watcher.exposed(), f"listening beyond loopback: {watcher.exposed()}"

        ui.send_signal(signal.SIGINT)  # Ctrl+C
        _, ui_err = ui.communicate(timeout=60)
        assert ui.returncode == 0 and "Traceback" not in ui_err, ui_err[-3000:]
        assert not study.survivors(), f"left running after the study: {study.survivors(0)}"
        assert not browser.survivors(), f"left running after Ctrl+C: {browser.survivors(0)}"
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("127.0.0.1", port))  # the port is free again
    finally:
        for watcher, proc in ((study, tune), (browser, ui)):
            watcher.stop_survivors()
            if proc.poll() is None:
                proc.kill()
