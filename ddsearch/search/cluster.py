"""Ray: where the study runs (an existing cluster by address, or a local Ray) and what it has."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from ddsearch.config import Study
from ddsearch.errors import DDSearchError

LOCAL_ADDRESSES = (None, "", "local")


def resolve_address(address: str | None) -> str | None:
    """``--address``, else ``$RAY_ADDRESS``, else None (start Ray locally)."""
    address = address or os.environ.get("RAY_ADDRESS") or None
    return None if address in LOCAL_ADDRESSES else address


def machine_resources() -> dict[str, float]:
    """What a local Ray would get: this machine's CPUs (those we may use) and CUDA GPUs."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    try:
        import torch

        gpus = torch.cuda.device_count()
    except Exception:  # noqa: BLE001
        gpus = 0
    return {"CPU": float(cpus), "GPU": float(gpus)}


def _host_port(address: str) -> tuple[str, int] | None:
    target = address.removeprefix("ray://")
    if target == "auto":
        return None
    host, sep, port = target.rpartition(":")
    if not sep or not port.isdigit():
        raise DDSearchError(f"Ray address {address!r} is not host:port (e.g. 127.0.0.1:6379 or ray://head:10001)")
    return host.strip("[]") or "127.0.0.1", int(port)


def check_address(address: str | None, timeout_s: float = 5.0) -> None:
    """Fail fast, with one line, when a Ray address does not answer (before anything starts)."""
    if address is None:
        return
    target = _host_port(address)
    if target is None:
        return
    try:
        with socket.create_connection(target, timeout=timeout_s):
            pass
    except OSError as err:
        raise DDSearchError(
            f"Ray cluster at {address} is unreachable ({err.strerror or err}); start it with "
            f"`ray start --head` or fix --address / RAY_ADDRESS"
        ) from None


_LOOPBACK_SWITCH = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


@contextmanager
def loopback_only() -> Iterator[None]:
    """Around ``ray.init``: the Ray it starts listens on 127.0.0.1 only (gcs, raylet, agents, workers).

    Ray binds all interfaces unless its node address is the loopback one, and it rewrites an
    explicit ``127.0.0.1`` to the machine's address. Its own single-machine switch (what it uses
    on macOS and Windows) keeps every server on loopback. The processes Ray starts inherit the
    switch from the environment; this process reads it once, at import, so the constant is set
    too. Both are restored afterwards, so that a later ``ray start`` or a connection to a cluster
    from this process is not affected. Only for a local Ray: ``--address`` is left alone.
    """
    try:
        from ray._private import ray_constants
    except ImportError:  # another Ray layout: the environment variable alone must do
        ray_constants = None
    before_env = os.environ.get(_LOOPBACK_SWITCH)
    before_const = getattr(ray_constants, "ENABLE_RAY_CLUSTER", None)
    os.environ[_LOOPBACK_SWITCH] = "0"
    if ray_constants is not None:
        ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        if before_env is None:
            os.environ.pop(_LOOPBACK_SWITCH, None)
        else:
            os.environ[_LOOPBACK_SWITCH] = before_env
        if ray_constants is not None and before_const is not None:
            ray_constants.ENABLE_RAY_CLUSTER = before_const


def connect(address: str | None) -> bool:
    """Connect to ``address`` or start a local Ray sized to this machine; True if started locally."""
    import ray

    if ray.is_initialized():
        return False
    quiet = {"logging_level": "WARNING", "log_to_driver": True}
    try:
        if address is None:
            res = machine_resources()
            with loopback_only():
                ray.init(address="local", num_cpus=int(res["CPU"]), include_dashboard=False, **quiet)
            return True
        ray.init(address=address, **quiet)
        return False
    except (ConnectionError, RuntimeError, ValueError) as err:
        where = address or "a local Ray"
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise DDSearchError(f"could not connect to {where}: {first}") from None


def disconnect() -> None:
    import ray

    if ray.is_initialized():
        ray.shutdown()


def nodes() -> list[dict[str, Any]]:
    import ray

    return [n for n in ray.nodes() if n.get("Alive")]


def cluster_summary() -> dict[str, Any]:
    import ray

    alive = nodes()
    total = ray.cluster_resources()
    return {
        "nodes": len(alive),
        "CPU": total.get("CPU", 0.0),
        "GPU": total.get("GPU", 0.0),
        "node_ips": sorted({n.get("NodeManagerAddress", "?") for n in alive}),
    }


def check_fits(study: Study, node_resources: list[dict[str, float]]) -> None:
    """A trial must fit on one node; otherwise it would wait forever."""
    need_cpu, need_gpu = study.resources.cpu, study.resources.gpu
    if any(r.get("CPU", 0) >= need_cpu and r.get("GPU", 0) >= need_gpu for r in node_resources):
        return
    most_cpu = max((r.get("CPU", 0) for r in node_resources), default=0)
    most_gpu = max((r.get("GPU", 0) for r in node_resources), default=0)
    raise DDSearchError(
        f"resources: a trial asks for {need_cpu:g} CPU and {need_gpu:g} GPU, but no node has that "
        f"(largest: {most_cpu:g} CPU, {most_gpu:g} GPU); lower resources.cpu / resources.gpu "
        f"(e.g. --set resources.gpu=0) or connect to a cluster that has them"
    )


def node_resources() -> list[dict[str, float]]:
    return [dict(n.get("Resources", {})) for n in nodes()]


def remote_nodes() -> list[str]:
    """IPs of cluster nodes that are not this machine (they cannot reach a 127.0.0.1 server)."""
    local = {"127.0.0.1", "localhost"}
    try:
        import ray

        local.add(ray.util.get_node_ip_address())
    except Exception:  # noqa: BLE001
        pass
    try:
        local.update(socket.gethostbyname_ex(socket.gethostname())[2])
    except OSError:
        pass
    return sorted({n.get("NodeManagerAddress", "") for n in nodes()} - local)
