"""Tracking overhead on a trial's wall time: the local store against MLflow on PostgreSQL.

One trial's distillation (DataDAM on digits, what a study's trial runs, without Ray), logged
three ways in one run, interleaved and repeated:

- ``none``: no tracking at all (the floor);
- ``local``: the default local store, i.e. a study's own ``mlflow server`` on SQLite;
- ``postgres``: an ``mlflow server`` on PostgreSQL with its artifact proxy, started from
  docker/README.md's bare-metal steps (tests/cluster.py).

Both tracked variants log through the trial's outbox over HTTP, exactly as a trial does.

    python benchmarks/bench_tracking.py [--iterations 200] [--repeats 3]

Writes ``benchmarks/results/tracking_overhead_cpu.{json,md}``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from common import device_info, write_results

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from cluster import Rehearsal, postgres_missing  # noqa: E402
from ddsearch.precision import cpu_name  # noqa: E402
from ddsearch.tracking import server, store  # noqa: E402
from ddsearch.tracking.run_logger import RunLogger  # noqa: E402
from ddsearch.config import study_from_dict  # noqa: E402
from ddsearch.data import load_dataset  # noqa: E402
from ddsearch.runner import NullObserver, run_distillation  # noqa: E402
from ddsearch.tracking.outbox import Outbox, use_quick_client  # noqa: E402

ARCH = "ConvNet-d2-w16-relu-instancenorm-avgpool"


def trial_seconds(study, data, uri: str | None, experiment: str | None, spool: Path) -> float:
    """Wall time of one trial: open its run, distill with evaluations, log everything, close it."""
    start = time.perf_counter()
    observer = NullObserver()
    box = None
    if uri is not None:
        run_id = store.client(uri).create_run(experiment, run_name="bench").info.run_id
        box = Outbox(store.client(uri), run_id, spool)
        observer = RunLogger(run_id, uri)
        observer.client = box
        observer.log_params({"method.lambda_mmd": study.method.lambda_mmd})
        observer.log_json(study.model_dump(mode="json"), "config.json")
    run_distillation(study, data, observer=observer, progress=False)
    if box is not None:
        box.set_terminated(box.run_id, "FINISHED")
        box.drain()
        box.close()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=200)
    parser.add_argument("--log-every", type=int, nargs="+", default=[1, 10])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if postgres_missing():
        sys.exit(postgres_missing())
    torch.set_num_threads(1)  # one trial per CPU, as a study runs them
    use_quick_client()
    load_before = os.getloadavg()
    data = load_dataset("digits")
    work = Path(tempfile.mkdtemp(prefix="ddbench-"))
    cluster = Rehearsal(work)
    cluster.start(skip=("ray",))
    local = server.TrackingServer(store.default_store(work / "local")[0], work / "local-server.log").start()
    try:
        local.wait_ready()
        uris = {"local": local.uri, "postgres": cluster.tracking_uri}
        experiments = {name: store.experiment_id("bench", uri) for name, uri in uris.items()}
        rows = []
        for log_every in args.log_every:
            study = study_from_dict({
                "name": "bench", "device": "cpu", "dataset": {"name": "digits"},
                "method": {"name": "datadam", "ipc": 1, "iterations": args.iterations, "arch": ARCH, "batch_real": 8},
                "evaluation": {"arch": ARCH, "eval_every": args.iterations // 4, "log_every": log_every, "epochs": 2,
                               "final_epochs": 2, "final_repeats": 1},
                "evaluators": [ARCH],
            })
            times: dict[str, list[float]] = {"none": [], "local": [], "postgres": []}
            for repeat in range(args.repeats + 1):  # the first round warms up (imports, allocator)
                for name in times:
                    seconds = trial_seconds(study, data, uris.get(name), experiments.get(name), work / "spool")
                    if repeat:
                        times[name].append(seconds)
            med = {name: statistics.median(values) for name, values in times.items()}
            rows.append({"log_every": log_every, "seconds": times, "median_s": med,
                         "postgres_over_local": med["postgres"] / med["local"],
                         "local_over_none": med["local"] / med["none"], "postgres_over_none": med["postgres"] / med["none"]})
    finally:
        local.stop()
        cluster.stop()
        shutil.rmtree(work, ignore_errors=True)
    import mlflow

    info = device_info(torch.device("cpu")) | {"cpu_model": cpu_name(), "mlflow": mlflow.__version__, "load_average_before": load_before,
                                                "load_average_after": os.getloadavg()}
    payload = {"benchmark": "tracking_overhead", "iterations": args.iterations, "repeats": args.repeats, "rows": rows, **info}
    lines = [
        f"# Tracking overhead on a trial: local store vs MLflow on PostgreSQL ({info['cpu_model']}, {info['cores']} cores)",
        "",
        f"One DataDAM trial on digits (IPC 1, {args.iterations} iterations, 4 evaluations + the final table, "
        f"one CPU thread), its MLflow run written through the trial's outbox over HTTP: to the study's own "
        f"server on SQLite (`local`, the default) and to an `mlflow server` on PostgreSQL with its artifact proxy "
        f"(`postgres`, docker/README.md's steps); `none` logs nothing. Median of {args.repeats} interleaved rounds "
        f"after a warm-up; torch {info['torch']}, mlflow {info['mlflow']}, {info['date']}.",
        "",
        "| log_every | none (s) | local (s) | postgres (s) | postgres / local | local / none | postgres / none |",
        "| --- | --- | --- | --- | --- | --- | --- |",
        *[f"| {r['log_every']} | {r['median_s']['none']:.2f} | {r['median_s']['local']:.2f} | "
          f"{r['median_s']['postgres']:.2f} | **{r['postgres_over_local']:.2f}x** | {r['local_over_none']:.2f}x | "
          f"{r['postgres_over_none']:.2f}x |" for r in rows],
        "",
        f"The machine is shared with other sessions: 1/5/15-minute load average {', '.join(f'{v:.1f}' for v in load_before)} "
        f"before and {', '.join(f'{v:.1f}' for v in info['load_average_after'])} after the run. The ratios come from "
        f"one run with the variants interleaved, so load drifts affect them less than the absolute seconds.",
    ]
    write_results("tracking_overhead_cpu", payload, "\n".join(lines))


if __name__ == "__main__":
    main()
