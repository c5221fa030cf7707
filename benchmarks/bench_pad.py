"""PAD speed and memory: expert generation (epochs/s), distillation (iterations/s), and peak memory
of one matching iteration as a function of ``syn_steps`` and ``batch_syn``.

    python benchmarks/bench_pad.py                      # CPU: digits, a small ConvNet (< 3 min)
    python benchmarks/bench_pad.py --device cuda --dataset mnist --arch ConvNet --data-root DIR

Writes ``benchmarks/results/pad_bench.json`` and ``.md`` (with the device and versions).

Peak memory: on CUDA ``torch.cuda.max_memory_allocated`` around one iteration; on the CPU each
configuration runs in a fresh subprocess and reports its peak RSS growth over one iteration
(``resource.getrusage``), next to the bytes the unrolled graph saves for backward (counted with
``torch.autograd.graph.saved_tensors_hooks``; device-independent and exact for the graph itself).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from ddsearch.precision import cpu_name

RESULTS = Path(__file__).resolve().parent / "results"


def _settings(args: argparse.Namespace, cache: str, **overrides):
    from ddsearch.methods.pad import PADSettings

    base = dict(
        ipc=args.ipc, iterations=1000, arch=args.arch, num_experts=args.experts,
        expert_train_epochs=args.expert_epochs, expert_batch=256, max_start_epoch=2,
        max_start_epoch_final=None, expert_epochs=2, syn_steps=20, batch_syn=None,
        score_models=1, score_epochs=1, add_end_epoch=2, rm_epoch_first=4, rm_epoch_second=5,
        cache_dir=cache, skip_threshold=None,
    )
    return PADSettings(**(base | overrides))


def _data(args: argparse.Namespace):
    from ddsearch.data import load_dataset

    return load_dataset(args.dataset, root=args.data_root, device=args.device, download=False)


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def saved_bytes(pad) -> int:
    """Bytes the autograd graph of one matching loss keeps for backward (unique storages)."""
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        seen[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = pad.matching_loss(expert=0, start_epoch=0)
    del loss
    return sum(seen.values())


def bench_experts(args: argparse.Namespace, cache: str) -> dict:
    from ddsearch.methods.pad import get_experts, get_scores

    data = _data(args)
    settings = _settings(args, cache)
    start = time.perf_counter()
    get_scores(data, settings, seed=0)
    _sync(args.device)
    score_s = time.perf_counter() - start
    start = time.perf_counter()
    buffer = get_experts(data, settings, seed=0)
    _sync(args.device)
    seconds = time.perf_counter() - start
    epochs = settings.num_experts * settings.expert_train_epochs
    start = time.perf_counter()
    get_experts(data, settings, seed=0)  # a cache hit: verify + memory-map
    hit_s = time.perf_counter() - start
    return {
        "experts": settings.num_experts,
        "epochs_per_expert": settings.expert_train_epochs,
        "train_images": int(data.train_x.shape[0]),
        "params": buffer.layout.total,
        "score_seconds": round(score_s, 3),
        "expert_seconds": round(seconds, 3),
        "expert_epochs_per_s": round(epochs / seconds, 3),
        "expert_images_per_s": round(epochs * data.train_x.shape[0] / seconds, 1),
        "cache_hit_seconds": round(hit_s, 4),
    }


def bench_distill(args: argparse.Namespace, cache: str, syn_steps: int, batch_syn: int | None) -> dict:
    from ddsearch.methods.pad import PAD

    data = _data(args)
    pad = PAD(_settings(args, cache, syn_steps=syn_steps, batch_syn=batch_syn), data, seed=0, progress=False)
    for _ in range(args.warmup):
        pad.step()
    _sync(args.device)
    start = time.perf_counter()
    for _ in range(args.iterations):
        pad.step()
    _sync(args.device)
    seconds = time.perf_counter() - start
    return {"syn_steps": syn_steps, "batch_syn": batch_syn or pad.images.shape[0],
            "iterations_per_s": round(args.iterations / seconds, 3), "saved_graph_mb": round(saved_bytes(pad) / 2**20, 2)}


def memory_probe(args: argparse.Namespace, cache: str, syn_steps: int, batch_syn: int | None) -> dict:
    """Peak memory of one iteration (this process; call in a fresh process on the CPU)."""
    from ddsearch.methods.pad import PAD

    data = _data(args)
    pad = PAD(_settings(args, cache, syn_steps=syn_steps, batch_syn=batch_syn), data, seed=0, progress=False)
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        pad.step()
        torch.cuda.synchronize()
        return {"peak_mb": round((torch.cuda.max_memory_allocated() - base) / 2**20, 1), "how": "cuda max_memory_allocated"}
    with torch.no_grad():  # load kernels with a tiny forward; a full warm-up step would leave its
        pad.net(pad.images[:2])  # freed memory in the allocator and hide the next step's peak
    if _reset_peak_rss():
        before = _status_kib("VmRSS")
        pad.step()
        peak = _status_kib("VmHWM")
        return {"peak_mb": round((peak - before) / 1024, 1), "how": "peak RSS over one iteration (VmHWM reset)"}
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    pad.step()
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"peak_mb": round((after - before) / 1024, 1), "how": "growth of the process's peak RSS"}


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark (Linux >= 4.0); False where that is not possible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        _status_kib("VmHWM")
        return True
    except OSError:
        return False
    except KeyError:
        return False


def _probe_in_subprocess(args: argparse.Namespace, cache: str, syn_steps: int, batch_syn: int | None) -> dict:
    cmd = [sys.executable, __file__, "--probe", "--cache", cache, "--syn-steps", str(syn_steps),
           "--batch-syn", str(batch_syn or 0)] + _passthrough(args)
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=os.environ.copy())
    return json.loads(out.stdout.strip().splitlines()[-1])


def _passthrough(args: argparse.Namespace) -> list[str]:
    out = ["--device", args.device, "--dataset", args.dataset, "--arch", args.arch, "--ipc", str(args.ipc),
           "--experts", str(args.experts), "--expert-epochs", str(args.expert_epochs), "--threads", str(args.threads)]
    if args.data_root:
        out += ["--data-root", args.data_root]
    return out


def environment(args: argparse.Namespace) -> dict:
    device = args.device
    name = torch.cuda.get_device_name() if device.startswith("cuda") else cpu_name()
    return {
        "device": device,
        "device_name": name,
        "processor": platform.processor(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def to_markdown(result: dict) -> str:
    env, cfg, ex = result["environment"], result["config"], result["experts"]
    lines = [
        "# PAD benchmark",
        "",
        f"Device: **{env['device_name']}** ({env['device']}), {env['torch_threads']} torch thread(s) of "
        f"{env['cpu_count']} CPUs; torch {env['torch']}, Python {env['python']}; load average at start "
        f"{env['load_average_at_start']} (a shared machine: absolute times are noisy).",
        "",
        f"Data `{cfg['dataset']}`, distillation network `{cfg['arch']}` ({ex['params']} parameters), "
        f"IPC {cfg['ipc']}.",
        "",
        "## Expert generation",
        "",
        "| experts | epochs each | train images | score time (s) | expert time (s) | epochs/s | images/s | cache hit (s) |",
        "|---|---|---|---|---|---|---|---|",
        f"| {ex['experts']} | {ex['epochs_per_expert']} | {ex['train_images']} | {ex['score_seconds']} | "
        f"{ex['expert_seconds']} | {ex['expert_epochs_per_s']} | {ex['expert_images_per_s']} | {ex['cache_hit_seconds']} |",
        "",
        "## Distillation speed and memory per iteration",
        "",
        "| syn_steps | batch_syn | iterations/s | saved graph (MB) | peak memory (MB) |",
        "|---|---|---|---|---|",
    ]
    for row in result["distill"]:
        lines.append(f"| {row['syn_steps']} | {row['batch_syn']} | {row['iterations_per_s']} | "
                     f"{row['saved_graph_mb']} | {row.get('peak_mb', '-')} |")
    lines += ["", f"Peak memory: {result['distill'][0].get('how', '')}. The saved graph grows linearly in "
              "syn_steps x batch_syn (the unrolled steps keep their activations for the meta-gradient).", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dataset", default="digits")
    p.add_argument("--data-root", default=None)
    p.add_argument("--arch", default="ConvNet-d2-w32-relu-instancenorm-avgpool")
    p.add_argument("--ipc", type=int, default=10)
    p.add_argument("--experts", type=int, default=2)
    p.add_argument("--expert-epochs", type=int, default=6)
    p.add_argument("--iterations", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (1: stable on shared CPUs)")
    p.add_argument("--out", default=str(RESULTS / "pad_bench"))
    p.add_argument("--probe", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--cache", default=None, help=argparse.SUPPRESS)
    p.add_argument("--syn-steps", type=int, default=20, help=argparse.SUPPRESS)
    p.add_argument("--batch-syn", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    if args.probe:
        print(json.dumps(memory_probe(args, args.cache, args.syn_steps, args.batch_syn or None)))
        return 0

    n_syn = args.ipc * 10
    sweep = [(10, None), (20, None), (40, None), (20, n_syn // 2), (20, n_syn // 4)]
    with tempfile.TemporaryDirectory() as cache:
        result = {"environment": environment(args),
                  "config": {"dataset": args.dataset, "arch": args.arch, "ipc": args.ipc,
                             "iterations_timed": args.iterations, "warmup": args.warmup}}
        result["experts"] = bench_experts(args, cache)
        rows = []
        for syn_steps, batch_syn in sweep:
            row = bench_distill(args, cache, syn_steps, batch_syn)
            if args.device.startswith("cuda"):
                row |= memory_probe(args, cache, syn_steps, batch_syn)
            else:
                row |= _probe_in_subprocess(args, cache, syn_steps, batch_syn)
            rows.append(row)
            print(row, flush=True)
        result["distill"] = rows
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=2))
    out.with_suffix(".md").write_text(to_markdown(result))
    print(to_markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
