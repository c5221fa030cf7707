"""The CPU fast path, measured in one run: bf16 on AMX/AVX512-BF16, streamed DataDAM statistics,
the evaluator and PAD, against fp32, the reference code's style and (optionally) the official code.

    python benchmarks/bench_precision.py [--official /tmp/DataDAM] [--iters 5] [--eval-epochs 1000]

``--official`` is a checkout of github.com/DataDistillation/DataDAM in a temporary folder (never
committed), run as ``official_datadam.py`` describes and timed from its own log over 20 iterations.
It runs its released settings (attention power p = 1) on MNIST, IPC 10, ConvNetBN, batch_real 256.

Writes ``benchmarks/results/precision_cpu.{json,md}``: device, torch, precision, the peak rates
of a 3x3 128->128 convolution and a 4096^2 matmul, every variant's seconds per iteration, the
ratios, achieved GFLOP/s and fraction of the bf16 convolution peak, and the top-ops tables of the
reference style (before) and ddsearch (after).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile
from torch.utils.flop_counter import FlopCounterMode

from bench_datadam import NaiveDataDAM
from common import data_root, device_info, write_results
from official_datadam import check_clone, run_official
from ddsearch.augment import default_strategy
from ddsearch.methods.datadam import DataDAMSettings
from ddsearch.data import load_dataset
from ddsearch.evaluate import TrainSettings, build_network, train_network
from ddsearch.methods.datadam import DataDAM, attention_matching_loss
from ddsearch.precision import resolve_precision


class BatchDataDAM(DataDAM):
    """ddsearch's DataDAM before the fast path: the real branch as one batch through the network."""

    def loss(self) -> torch.Tensor:
        s = self.settings
        net = self._fresh_network()
        seed = self.next_seed()
        real = self.dsa(self._real_batch(), seed=seed).contiguous(memory_format=torch.channels_last)
        syn = self.dsa(self.images, seed=seed).contiguous(memory_format=torch.channels_last)
        with torch.no_grad():
            real_blocks, real_embedding = net.forward_features(real)
        syn_blocks, syn_embedding = net.forward_features(syn)
        loss = attention_matching_loss(real_blocks, real_embedding, syn_blocks, syn_embedding,
                                       self.data.num_classes, s.p, s.lambda_mmd)
        return s.loss_scale * loss


def peak_rates(repeats: int = 5) -> dict[str, float]:
    """GFLOP/s of the two kernels that bound the work: conv 3x3 128->128 (batch 256, 16x16) and matmul."""
    rates: dict[str, float] = {}
    x = torch.randn(256, 128, 16, 16).contiguous(memory_format=torch.channels_last)
    conv = torch.nn.Conv2d(128, 128, 3, padding=1).to(memory_format=torch.channels_last)
    a, b = torch.randn(4096, 4096), torch.randn(4096, 4096)
    with torch.no_grad():
        for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
            xc, cc = x.to(dtype), conv.to(dtype)
            rates[f"conv_{name}"] = _rate(lambda: cc(xc), 256 * 16 * 16 * 128 * 128 * 9 * 2, repeats)
            ac, bc = a.to(dtype), b.to(dtype)
            rates[f"matmul_{name}"] = _rate(lambda: ac @ bc, 2 * 4096**3, max(2, repeats // 2))
    return rates


def _rate(fn, flops: float, repeats: int) -> float:
    fn()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return flops * repeats / (time.perf_counter() - start) / 1e9


def time_steps(distiller, iters: int, warmup: int = 2) -> tuple[float, float]:
    """(seconds of the warm-up steps, which include compilation; seconds per timed step)."""
    start = time.perf_counter()
    for _ in range(warmup):
        distiller.step()
    setup = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(iters):
        distiller.step()
    return setup, (time.perf_counter() - start) / iters


def step_flops(distiller) -> float:
    with FlopCounterMode(display=False) as counter:
        distiller.step()
    return float(counter.get_total_flops())


def top_ops(distiller, rows: int = 10) -> str:
    distiller.step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        distiller.step()
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events) or 1
    lines = ["| op | self CPU ms | share | calls |", "| --- | --- | --- | --- |"]
    for event in events[:rows]:
        name = event.key if len(event.key) < 60 else event.key[:57] + "..."
        lines.append(f"| `{name}` | {event.self_cpu_time_total / 1000:.1f} | "
                     f"{100 * event.self_cpu_time_total / total:.1f}% | {event.count} |")
    return "\n".join(lines)


def official_speed(clone: Path, root: str, batch_real: int) -> dict:
    """Seconds per iteration of the official DataDAM code, timed from its own log (iterations 10 to 30)."""
    with tempfile.TemporaryDirectory(prefix="datadam-official-") as work:
        run = run_official(clone, [
            "--dataset", "MNIST", "--model", "ConvNetBN", "--ipc", "10", "--batch_real", str(batch_real),
            "--Iteration", "30", "--eval_mode", "S", "--num_eval", "1", "--epoch_eval_train", "1", "--init", "real",
            "--data_path", root, "--save_path", str(Path(work) / "out"),
        ], Path(work))
    return {"seconds_per_iter": run.seconds_per_iteration(10, 30), "p": 1.0, "source": "DataDistillation/DataDAM"}


def bench_evaluator(data, epochs: int, fp32_epochs: int) -> list[dict]:
    """1000-epoch evaluator on an IPC 10 set (a random real subset): bf16 in full, fp32 on fewer epochs."""
    x, y = data.subset(10, torch.Generator().manual_seed(0))
    rows = []
    for precision, n_epochs in (("bf16", epochs), ("fp32", fp32_epochs)):
        settings = TrainSettings(epochs=n_epochs, dsa_strategy=default_strategy("mnist"), precision=precision)
        net = build_network("ConvNet", data, 0, x.device)
        train_network(net, x, y, TrainSettings(epochs=3, dsa_strategy=settings.dsa_strategy, precision=precision), 0)
        start = time.perf_counter()
        train_network(net, x, y, settings, 0)
        seconds = time.perf_counter() - start
        rows.append({"variant": f"evaluator {precision}", "epochs_timed": n_epochs,
                     "seconds_per_1000_epochs": seconds / n_epochs * 1000, "precision": precision})
    return rows


def bench_pad(data, iters: int, per_class: int = 500) -> list[dict]:
    """PAD iteration (IPC 10, syn_steps 20, the whole set each step) in bf16 and fp32, on experts
    trained on a ``per_class`` part of the training split (1 expert, 3 epochs: the speed, not the
    accuracy, is measured here)."""
    from bench_nas import PAD_CPU, train_part
    from ddsearch.methods.pad import PADSettings
    from ddsearch.methods import create_distiller

    part = train_part(data, per_class)
    rows = []
    with tempfile.TemporaryDirectory(prefix="ddsearch-pad-bench-") as cache:
        for precision in ("bf16", "fp32"):
            settings = PADSettings(**(PAD_CPU | {"syn_steps": 20, "batch_syn": None, "cache_dir": cache}))
            start = time.perf_counter()
            distiller = create_distiller(settings, part, seed=0, progress=False, precision=precision)
            experts_seconds = time.perf_counter() - start
            _, seconds = time_steps(distiller, iters, warmup=1)
            rows.append({"variant": f"PAD {precision}", "precision": distiller.precision, "seconds_per_iter": seconds,
                         "experts_and_scores_seconds": experts_seconds})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--official", type=Path, default=None, help="a checkout of DataDistillation/DataDAM")
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--batch-real", type=int, default=256)
    parser.add_argument("--eval-epochs", type=int, default=1000)
    parser.add_argument("--fp32-eval-epochs", type=int, default=200)
    parser.add_argument("--pad-iters", type=int, default=3)
    args = parser.parse_args()
    device = torch.device("cpu")
    auto = resolve_precision("auto", device)
    load_before = os.getloadavg()[0]
    data = load_dataset("mnist", root=data_root(), val_size=5000, device=device, download=False)
    peaks = peak_rates()

    rows: list[dict] = []
    variants = {
        "ddsearch auto (p=4)": (DataDAM, dict(), "auto"),
        "ddsearch auto, eager kernels (p=4)": (DataDAM, dict(fuse="off"), "auto"),
        "ddsearch fp32 (p=4)": (DataDAM, dict(), "fp32"),
        "ddsearch auto (p=1, the official code's maths)": (DataDAM, dict(p=1.0), "auto"),
        "ddsearch before this change: one real batch, fp32 (p=4)": (BatchDataDAM, dict(), "fp32"),
        "reference style, fp32 (p=4)": (NaiveDataDAM, dict(channels_last=False), "fp32"),
    }
    flops = step_flops(DataDAM(DataDAMSettings(ipc=10, arch="ConvNetBN", batch_real=args.batch_real, fuse="off"), data, 1,
                               progress=False, precision="fp32"))
    tables = {}
    for name, (cls, extra, precision) in variants.items():
        settings = DataDAMSettings(ipc=10, arch="ConvNetBN", batch_real=args.batch_real, **extra)
        distiller = cls(settings, data, seed=0, progress=False, precision=precision)
        setup, seconds = time_steps(distiller, args.iters)
        rows.append({"variant": name, "precision": distiller.precision, "seconds_per_iter": seconds,
                     "warmup_seconds": setup, "gflops_per_s": flops / seconds / 1e9})
        if name.startswith("ddsearch before"):
            tables["before (ddsearch's previous DataDAM step, fp32)"] = top_ops(distiller)
        elif name == "ddsearch auto (p=4)":
            tables[f"after (ddsearch, {distiller.precision})"] = top_ops(distiller)
    if args.official is not None:
        official = official_speed(check_clone(args.official), data_root(), args.batch_real)
        rows.append({"variant": "official DataDAM code, fp32 (p=1)", "precision": "fp32",
                     "seconds_per_iter": official["seconds_per_iter"], "warmup_seconds": float("nan"),
                     "gflops_per_s": flops / official["seconds_per_iter"] / 1e9})
    by_name = {r["variant"]: r for r in rows}
    ours = by_name["ddsearch auto (p=4)"]["seconds_per_iter"]
    for r in rows:
        r["ours_speedup"] = r["seconds_per_iter"] / ours
        r["fraction_of_bf16_conv_peak"] = r["gflops_per_s"] / peaks["conv_bf16"]
    evaluator = bench_evaluator(data, args.eval_epochs, args.fp32_eval_epochs)
    pad = bench_pad(data, args.pad_iters)
    info = device_info(device) | {"load_average_1min_before": load_before, "load_average_1min_after": os.getloadavg()[0]}
    payload = {"benchmark": "precision", "precision_auto": auto, "peaks_gflops": peaks, "gflop_per_datadam_iter": flops / 1e9,
               "datadam": rows, "evaluator": evaluator, "pad": pad, "top_ops": tables, **info}

    lines = [
        f"# The CPU fast path ({info['device_name']})",
        "",
        f"torch {info['torch']}, {info['cpu_threads']} threads, {info['date']}; `precision: auto` resolves to **{auto}** here. "
        f"1-minute load average {load_before:.1f} before and {info['load_average_1min_after']:.1f} after the run "
        f"(2 cores: above 2 means other work shared them, which slows every row alike).",
        "",
        "## Peak rates in this run",
        "",
        f"3x3 128->128 convolution (batch 256, 16x16, channels-last): {peaks['conv_fp32']:.0f} GFLOP/s fp32, "
        f"{peaks['conv_bf16']:.0f} GFLOP/s bf16 ({peaks['conv_bf16'] / peaks['conv_fp32']:.1f}x). "
        f"4096^2 matmul: {peaks['matmul_fp32']:.0f} vs {peaks['matmul_bf16']:.0f} GFLOP/s.",
        "",
        f"## DataDAM iteration (MNIST, IPC 10, ConvNetBN, batch_real {args.batch_real}/class; "
        f"{flops / 1e9:.0f} GFLOP per iteration, forward + backward)",
        "",
        "| variant | precision | s/iter | slower than ddsearch auto | GFLOP/s | of bf16 conv peak |",
        "| --- | --- | --- | --- | --- | --- |",
        *[f"| {r['variant']} | {r['precision']} | {r['seconds_per_iter']:.3f} | {r['ours_speedup']:.2f}x | "
          f"{r['gflops_per_s']:.0f} | {100 * r['fraction_of_bf16_conv_peak']:.0f}% |" for r in rows],
        "",
        "The GFLOP/s column divides the same FLOP count (p = 4, counted once) by each variant's time.",
        "",
        "## Evaluator (ConvNet, DSA, batch 256, on an IPC 10 set of 100 images)",
        "",
        "| variant | epochs timed | s per 1000 epochs |",
        "| --- | --- | --- |",
        *[f"| {r['variant']} | {r['epochs_timed']} | {r['seconds_per_1000_epochs']:.1f} |" for r in evaluator],
        "",
        "## PAD iteration (MNIST, IPC 10, ConvNet, syn_steps 20, the whole set per step)",
        "",
        "| variant | s/iter | experts + scores s (1 expert, 3 epochs, 5,000 images) |",
        "| --- | --- | --- |",
        *[f"| {r['variant']} | {r['seconds_per_iter']:.2f} | {r['experts_and_scores_seconds']:.0f} |" for r in pad],
        "",
        f"PAD bf16 is {pad[1]['seconds_per_iter'] / pad[0]['seconds_per_iter']:.2f}x fp32 (today's path) here.",
        "",
    ]
    for title, table in tables.items():
        lines += [f"## Top ops, {title}", "", table, ""]
    write_results("precision_cpu", payload, "\n".join(lines))


if __name__ == "__main__":
    main()
