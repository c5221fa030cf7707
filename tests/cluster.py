"""A one-machine cluster for tests: PostgreSQL, MLflow on it, a Ray head and a Ray worker.

Everything runs on 127.0.0.1, from the bare-metal steps of ``docker/README.md`` (the block
between ``<!-- rehearsal:start -->`` and ``<!-- rehearsal:end -->``): the test runs exactly
those commands, with its own free ports and temporary folders in their variables. As root,
``initdb`` and ``pg_ctl`` run as the ``postgres`` user (PostgreSQL refuses root).

Only processes this module started are stopped, by pid (whole process trees, found through
/proc); it never runs ``ray stop``, which would stop every Ray on a shared machine.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
README = REPO_ROOT / "docker" / "README.md"
RAY = shutil.which("ray", path=os.path.dirname(sys.executable)) or "ray"  # this interpreter's Ray
START_S = 180


def postgres_missing() -> str | None:
    """Why the rehearsal cannot run here (no PostgreSQL binaries), or None."""
    missing = [name for name in ("initdb", "pg_ctl", "postgres", "psql") if _which(name) is None]
    return f"no PostgreSQL binaries ({', '.join(missing)}) on this machine" if missing else None


def _which(name: str) -> str | None:
    return shutil.which(name) or shutil.which(name, path="/usr/local/bin:/usr/lib/postgresql/15/bin:/usr/bin")


def rehearsal_steps(readme: Path = README) -> list[str]:
    """The shell lines of docker/README.md's rehearsal block (continuations joined, comments dropped)."""
    text = readme.read_text()
    block = re.search(r"<!-- rehearsal:start -->\s*```bash\n(.+?)```\s*<!-- rehearsal:end -->", text, re.S)
    assert block, f"{readme} has no rehearsal block"
    joined = block.group(1).replace("\\\n", " ")
    return [line.strip() for line in joined.splitlines() if line.strip() and not line.strip().startswith("#")]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# ---- process trees, through /proc ---------------------------------------------------------------

def proc_stat(pid: int) -> tuple[int, int]:
    """(parent pid, start time in clock ticks) of a live process."""
    with open(f"/proc/{pid}/stat") as f:
        text = f.read()
    fields = text[text.rindex(")") + 2:].split()
    return int(fields[1]), int(fields[19])


def tree(root: int) -> dict[int, int]:
    """pid -> start time of ``root`` and all its descendants (Ray's workers call setsid, so a
    process group misses them; the parent links do not)."""
    children: dict[int, list[int]] = {}
    started: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                parent, start = proc_stat(int(entry))
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(parent, []).append(int(entry))
            started[int(entry)] = start
    out, todo = {}, [root]
    while todo:
        pid = todo.pop()
        if pid in started:
            out[pid] = started[pid]
            todo += children.get(pid, [])
    return out


def kill_all(procs: dict[int, int], sig: int = signal.SIGKILL) -> None:
    """Signal the processes of ``procs`` that still are the same processes (no reused pids)."""
    for pid, start in procs.items():
        try:
            if proc_stat(pid)[1] == start:
                os.kill(pid, sig)
        except (OSError, ValueError, IndexError):
            pass


# ---- the cluster ----------------------------------------------------------------------------------

class Rehearsal:
    """The README's stack with this test's ports and folders; ``start()``, then ``stop()``."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        # Ray's socket paths must stay short, and the postgres user must reach PGDATA: /tmp.
        self.root = Path(tempfile.mkdtemp(prefix="ddreh-", dir="/tmp"))
        self.root.chmod(0o755)
        self.pg_port, self.mlflow_port, self.ray_port = free_port(), free_port(), free_port()
        self.vars = {
            "PGDATA": str(self.root / "pg" / "data"), "ARTIFACTS": str(self.root / "artifacts"),
            "RAY_TMP": str(self.root / "ray"), "PGPORT": str(self.pg_port), "MLFLOW_PORT": str(self.mlflow_port),
            "RAY_PORT": str(self.ray_port),
        }
        (self.root / "pg").mkdir()
        if os.geteuid() == 0:
            shutil.chown(self.root / "pg", "postgres")
        self.env = {k: v for k, v in os.environ.items()
                    if k not in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI", "DDSEARCH_DEBUG", "PGDATA", "PGPORT")}
        self.env |= self.vars | {"RAY_AUTH_MODE": "disabled", "PYTHONPATH": str(REPO_ROOT),
                                 "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", "PYTHONUNBUFFERED": "1"}
        self.steps = rehearsal_steps()
        self.procs: dict[str, subprocess.Popen] = {}

    @property
    def tracking_uri(self) -> str:
        return f"http://127.0.0.1:{self.mlflow_port}"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.ray_port}"

    def db_url(self, database: str) -> str:
        return f"postgresql://ddsearch@127.0.0.1:{self.pg_port}/{database}"

    # ---- the README's lines as commands
    def argv(self, line: str, extra: dict[str, str] | None = None) -> tuple[list[str], bool]:
        """(argv, runs in the background) of one README line, its $VARS filled in."""
        values = self.env | (extra or {})
        background = line.endswith("&")
        words = [re.sub(r"\$\{?(\w+)\}?", lambda m: values[m.group(1)], word)
                 for word in shlex.split(line.rstrip("&").strip())]
        program, rest = words[0], words[1:]
        if program == "mlflow":
            return [sys.executable, "-m", "mlflow", *rest], background
        if program == "ddsearch":
            return [sys.executable, "-m", "ddsearch.cli", *rest], background
        if program == "ray":
            return [RAY, *rest], background
        path = _which(program) or program
        if program in ("initdb", "pg_ctl") and os.geteuid() == 0:
            return ["runuser", "-u", "postgres", "--", path, *rest], background
        return [path, *rest], background

    def step(self, program: str, *, index: int = 0) -> str:
        found = [line for line in self.steps if line.split()[0] == program]
        assert len(found) > index, f"docker/README.md's rehearsal has no '{program}' step #{index}"
        return found[index]

    def _run(self, line: str, name: str) -> None:
        argv, background = self.argv(line)
        log = self.logs / f"{name}.log"
        if background:
            with open(log, "a") as out:
                self.procs[name] = subprocess.Popen(argv, env=self.env, stdout=out, stderr=subprocess.STDOUT,
                                                    stdin=subprocess.DEVNULL, start_new_session=True, cwd=self.root)
            return
        done = subprocess.run(argv, env=self.env, capture_output=True, text=True, timeout=120, cwd=self.root)
        log.write_text(done.stdout + done.stderr)
        assert done.returncode == 0, f"{' '.join(argv)} failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}"

    def start(self, skip: tuple[str, ...] = ()) -> None:
        """Every step but the study (and ``skip``'s programs), in the README's order; waits until
        each service answers."""
        rays = 0
        for number, line in enumerate(self.steps):
            program = line.split()[0]
            if program == "ddsearch" or program in skip:
                continue
            name = {"mlflow": "mlflow", "ray": f"ray{rays}"}.get(program, f"{number}-{program}")
            self._run(line, name)
            if program == "ray":
                self._wait_log(name, "Ray runtime started")
                rays += 1
        self.wait_mlflow()

    def _wait_log(self, name: str, text: str) -> None:
        deadline = time.monotonic() + START_S
        log = self.logs / f"{name}.log"
        while text not in log.read_text():
            assert self.procs[name].poll() is None, f"{name} exited:\n{log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"{name} did not start:\n{log.read_text()[-3000:]}"
            time.sleep(0.5)

    def wait_mlflow(self) -> None:
        deadline = time.monotonic() + START_S
        while True:
            try:
                urllib.request.urlopen(self.tracking_uri + "/health", timeout=2)
                return
            except OSError:
                proc = self.procs["mlflow"]
                log = (self.logs / "mlflow.log").read_text()[-3000:]
                assert proc.poll() is None, f"the MLflow server exited:\n{log}"
                assert time.monotonic() < deadline, f"the MLflow server did not answer:\n{log}"
                time.sleep(0.5)

    # ---- faults
    def kill_mlflow(self) -> None:
        """SIGKILL the tracking server and its workers at once, as if its machine died."""
        proc = self.procs["mlflow"]
        kill_all(tree(proc.pid))
        proc.wait(timeout=30)

    def start_mlflow(self) -> None:
        self._run(self.step("mlflow"), "mlflow")
        self.wait_mlflow()

    def pg_ctl(self, *args: str) -> None:
        line = self.step("pg_ctl")
        argv, _ = self.argv(line)
        cut = argv.index("-D") + 2  # keep `[runuser …] pg_ctl -D "$PGDATA"`, replace the rest
        done = subprocess.run([*argv[:cut], *args], env=self.env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr

    def restart_postgres(self) -> None:
        """``pg_ctl restart -m immediate``: every connection drops, the database recovers from its WAL."""
        options = self.argv(self.step("pg_ctl"))[0]
        self.pg_ctl("-l", options[options.index("-l") + 1], "-o", options[options.index("-o") + 1],
                    "-m", "immediate", "-w", "restart")

    def psql(self, database: str, sql: str) -> list[list[str]]:
        argv = [_which("psql") or "psql", "-h", "127.0.0.1", "-p", str(self.pg_port), "-U", "ddsearch", "-d", database,
                "-A", "-t", "-F", "\t", "-c", sql]
        done = subprocess.run(argv, env=self.env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        return [line.split("\t") for line in done.stdout.splitlines() if line]

    # ---- the study
    def tune(self, study: Path, *extra: str, cwd: Path, log: Path) -> subprocess.Popen:
        """The README's `ddsearch tune` line for ``study`` (plus ``extra`` arguments), in the background."""
        argv, _ = self.argv(self.step("ddsearch"), {"STUDY": str(study)})
        with open(log, "a") as out:
            return subprocess.Popen([*argv, *extra], cwd=cwd, env=self.env, stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True)

    def stop(self) -> None:
        alive = {name: proc for name, proc in self.procs.items() if proc.poll() is None}
        leftovers: dict[int, int] = {}
        for proc in alive.values():
            leftovers |= tree(proc.pid)  # before the signal: Ray's workers lose their parent links after
        for proc in alive.values():
            proc.terminate()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and any(p.poll() is None for p in alive.values()):
            time.sleep(0.2)
        kill_all(leftovers)
        for proc in alive.values():
            proc.wait(timeout=30)
        if Path(self.vars["PGDATA"]).is_dir():
            try:
                self.pg_ctl("-m", "immediate", "-w", "stop")
            except AssertionError:
                pass  # not running
        shutil.rmtree(self.root, ignore_errors=True)
