"""MLflow servers: the study's tracking server, and the UI of ``ddsearch ui``.

Both run ``mlflow server`` under the guard (:mod:`ddsearch.tracking.guard`), so the server stops
with its owner however the owner ends, and both listen on 127.0.0.1 unless told otherwise.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import sys
import time
from pathlib import Path

from ddsearch.errors import DDSearchError
from ddsearch.tracking.guard import GUARD_MODULE, run_guarded
from ddsearch.tracking.store import sqlite_store_paths


def mlflow_server_command(store_uri: str, host: str, port: int, artifact_root: Path | None) -> list[str]:
    """``mlflow server`` for one store, one worker (fewer processes to start and to stop).

    A local store serves no artifacts: clients write them straight into ``artifact_root``.
    """
    cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", store_uri, "--host", host,
           "--port", str(port), "--workers", "1"]
    if artifact_root is not None:
        artifact_root.mkdir(parents=True, exist_ok=True)
        cmd += ["--default-artifact-root", artifact_root.as_uri(), "--no-serve-artifacts"]
    return cmd


def _free_port(host: str = "127.0.0.1") -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class TrackingServer:
    """An ``mlflow server`` subprocess in front of a local SQLite store, for one study.

    SQLite written by many processes at once locks up, so concurrent trials log over HTTP to
    this one process instead. It binds 127.0.0.1 (trials on this machine, or a cluster on
    loopback, can reach it). A small guard process stops the server when the driver dies, even
    by SIGKILL, so no server is left behind.
    """

    def __init__(self, store_uri: str, log_path: Path, host: str = "127.0.0.1", port: int | None = None) -> None:
        paths = sqlite_store_paths(store_uri)
        if paths is None:
            raise DDSearchError(f"a study tracking server needs a local sqlite:/// store, not {store_uri}")
        self.store_uri = store_uri
        self.artifact_root = paths[1]
        self.host = host
        self.port = port or _free_port(host)
        self.log_path = Path(log_path)
        self.proc = None

    @property
    def uri(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> "TrackingServer":
        import subprocess
        import sys

        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        server = mlflow_server_command(self.store_uri, self.host, self.port, self.artifact_root)
        guard = [sys.executable, "-m", GUARD_MODULE, str(os.getpid()), "--", *server]
        env = os.environ | {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(guard, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         env=env, start_new_session=True)
        return self

    def wait_ready(self, timeout_s: float = 120.0) -> None:
        import urllib.request

        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise DDSearchError(f"the MLflow tracking server for this study exited at start; see {self.log_path}:\n"
                                    + _tail(self.log_path))
            try:
                urllib.request.urlopen(self.uri + "/health", timeout=2)
                return
            except Exception:  # noqa: BLE001 - not up yet
                time.sleep(0.25)
        self.stop()
        raise DDSearchError(f"the MLflow tracking server did not answer within {timeout_s:.0f}s; see {self.log_path}")

    def stop(self) -> None:
        import signal
        import subprocess

        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)  # the guard stops the server's process group
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)

    def __enter__(self) -> "TrackingServer":
        return self.start() if self.proc is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _tail(path: Path, lines: int = 5) -> str:
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""



# ---- ddsearch ui --------------------------------------------------------------------------------

def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_port_free(host: str, port: int) -> None:
    """One line, before anything starts, when the UI's address cannot be bound."""
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as err:
        raise DDSearchError(f"--host {host!r} is not an address of this machine ({err.strerror})") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server does
        try:
            sock.bind(address)
        except OSError as err:
            if err.errno == errno.EADDRINUSE:
                raise DDSearchError(f"port {port} on {host} is already in use; pick another with --port") from None
            raise DDSearchError(f"cannot listen on {host}:{port} ({err.strerror}); pick another --host/--port") from None


def serve_ui(store_uri: str, host: str, port: int) -> int:
    """The MLflow UI on ``store_uri`` in the foreground, under the guard: it stops with this
    command however it ends (Ctrl+C, SIGTERM, kill). The server's exit code, or 130 after Ctrl+C."""
    paths = sqlite_store_paths(store_uri)
    return run_guarded(mlflow_server_command(store_uri, host, port, paths[1] if paths is not None else None))
