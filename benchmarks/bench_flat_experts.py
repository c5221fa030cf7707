"""Do flat (sharpness-aware) experts help PAD? Plain SGD experts against SAM experts, paired by seed.

FTD (Du et al., CVPR 2023), which PAD builds on, trains its experts with a sharpness-aware
optimiser. ``method.expert_sam_rho`` does the same here; this benchmark measures, in one run and per
seed, the experts' sharpness (top Hessian eigenvalue of the training loss at their last epoch),
their cost, and the accuracy of the set PAD distils from them, with its starting set as the control:

    python benchmarks/bench_flat_experts.py                       # digits, CPU, about 10 minutes
    python benchmarks/bench_flat_experts.py --dataset mnist --arch ConvNet --data-root DIR ...

Writes ``benchmarks/results/flat_experts_<dataset>.json`` and ``.md`` (with the device). Accuracies
are test means over the evaluator repeats; the verdict is the paired SAM - SGD difference over seeds.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from common import device_info, write_results
from ddsearch.augment import default_strategy
from ddsearch.data import RealData, load_dataset
from ddsearch.evaluate import TrainSettings, evaluate_synset
from ddsearch.methods.pad import PAD, PADSettings, get_experts, get_scores
from ddsearch.methods.pad.flat import ParamLayout, forward_flat
from ddsearch.methods.pad.sharpness import top_hessian_eigenvalue
from ddsearch.models import seeded_network


def pad_settings(args: argparse.Namespace, cache: str, rho: float) -> PADSettings:
    return PADSettings(
        ipc=args.ipc, iterations=args.iterations, arch=args.arch, num_experts=args.experts,
        expert_train_epochs=args.expert_train_epochs, expert_batch=args.expert_batch,
        max_start_epoch=args.max_start_epoch, expert_epochs=2, syn_steps=args.syn_steps, lr_img=args.lr_img,
        score_models=1, score_epochs=2, add_end_epoch=args.max_start_epoch,
        rm_epoch_first=args.expert_train_epochs, rm_epoch_second=args.expert_train_epochs,
        expert_sam_rho=rho, cache_dir=cache,
    )


def expert_sharpness(arch: str, data: RealData, flat: torch.Tensor) -> float:
    """Top Hessian eigenvalue of the training loss (2,048 fixed images) at an expert's flat weights."""
    net = seeded_network(arch, data.channels, data.num_classes, data.image_size, 0).to(flat.device).train()
    layout, buffers = ParamLayout.of(net), dict(net.named_buffers())
    rows = torch.randperm(len(data.train_y), generator=torch.Generator().manual_seed(0))[:2048]
    w = flat.detach().clone().requires_grad_(True)
    loss = F.cross_entropy(forward_flat(net, layout, w, data.train_x[rows], buffers), data.train_y[rows])
    return top_hessian_eigenvalue(loss, [w], seed=1)  # the start vector of the committed figures


def one_arm(args: argparse.Namespace, data: RealData, seed: int, rho: float, cache: str) -> dict[str, Any]:
    """Experts at ``rho`` (0: SGD), then PAD from them; the starting set is the arm's control."""
    settings = pad_settings(args, cache, rho)
    get_scores(data, settings, seed=seed)  # shared by both arms: keep it out of the experts' time
    start = time.perf_counter()
    buffer = get_experts(data, settings, seed=seed)
    expert_seconds = time.perf_counter() - start
    sharpness = [expert_sharpness(args.arch, data, traj[-1]) for traj in buffer.trajectories]
    protocol = TrainSettings(epochs=args.eval_epochs, dsa_strategy=default_strategy(data.name))

    def accuracy(pad: PAD) -> tuple[float, float]:
        result = evaluate_synset(pad.synset(), data, args.eval_arch, protocol, repeats=args.repeats, seed=seed,
                                 use_learned_lr=False)
        return result.test_mean, result.val_mean

    pad = PAD(settings, data, seed=seed, progress=False)
    start_test, _ = accuracy(pad)
    start = time.perf_counter()
    for _ in range(settings.iterations):
        pad.step()
    distill_seconds = time.perf_counter() - start
    test, val = accuracy(pad)
    return {"seed": seed, "rho": rho, "expert_seconds": expert_seconds, "expert_val_acc": float(np.mean(buffer.val_acc)),
            "sharpness": float(np.mean(sharpness)), "start_test_acc": start_test, "test_acc": test, "val_acc": val,
            "distill_seconds": distill_seconds}


def paired(records: list[dict[str, Any]], field: str, rho: float) -> tuple[float, float]:
    """Mean and std over seeds of (SAM - SGD) for ``field``."""
    by_seed = {(r["seed"], r["rho"]): r[field] for r in records}
    diffs = [by_seed[(s, rho)] - by_seed[(s, 0.0)] for s in sorted({r["seed"] for r in records})]
    return float(np.mean(diffs)), float(np.std(diffs))


def markdown(records: list[dict[str, Any]], args: argparse.Namespace, info: dict[str, Any]) -> str:
    lines = [f"# Flat (SAM) experts against SGD experts for PAD, {args.dataset}", "",
             f"Device: **{info['device_name']}**, torch {info['torch']}, {info['date']}.", "",
             f"PAD IPC {args.ipc}, {args.iterations} iterations, {args.experts} experts x {args.expert_train_epochs} "
             f"epochs of `{args.arch}`, start epoch < {args.max_start_epoch}, syn_steps {args.syn_steps}, lr_img "
             f"{args.lr_img}; evaluator `{args.eval_arch}`, {args.repeats} x {args.eval_epochs} epochs (DC protocol). "
             f"Seeds {', '.join(map(str, args.seeds))}; SAM rho {', '.join(map(str, args.rhos))}.", "",
             "| seed | experts | expert s | expert val % | top Hessian eigenvalue | starting set test % | "
             "PAD test % | PAD val % |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in records:
        kind = f"SAM {r['rho']}" if r["rho"] else "SGD"
        lines.append(f"| {r['seed']} | {kind} | {r['expert_seconds']:.1f} | {100 * r['expert_val_acc']:.2f} | "
                     f"{r['sharpness']:.2f} | {100 * r['start_test_acc']:.2f} | {100 * r['test_acc']:.2f} | "
                     f"{100 * r['val_acc']:.2f} |")
    lines += ["", "SAM - SGD, paired by seed (mean ± std over seeds; *matching* is PAD minus its starting set):", ""]
    for summary in summaries(records, args.rhos):
        lines.append(f"- **rho {summary['rho']}:** PAD test {summary['test_gain']:+.2f} ± {summary['test_gain_std']:.2f}"
                     f" points; starting set {summary['start_gain']:+.2f} ± {summary['start_gain_std']:.2f}; "
                     f"matching {summary['matching_gain']:+.2f}; sharpness ×{summary['sharpness_ratio']:.2f}; "
                     f"expert time ×{summary['expert_time_ratio']:.2f}")
    return "\n".join(lines)


def summaries(records: list[dict[str, Any]], rhos: list[float]) -> list[dict[str, float]]:
    """Per SAM radius: paired accuracy differences (points) and sharpness and cost ratios against SGD."""
    sgd = [r for r in records if not r["rho"]]
    out = []
    for rho in rhos:
        sam = [r for r in records if r["rho"] == rho]
        test, test_std = paired(records, "test_acc", rho)
        start, start_std = paired(records, "start_test_acc", rho)
        out.append({
            "rho": rho, "test_gain": 100 * test, "test_gain_std": 100 * test_std, "start_gain": 100 * start,
            "start_gain_std": 100 * start_std, "matching_gain": 100 * (test - start),
            "sharpness_ratio": float(np.mean([r["sharpness"] for r in sam]) / np.mean([r["sharpness"] for r in sgd])),
            "expert_time_ratio": float(np.mean([r["expert_seconds"] for r in sam])
                                       / np.mean([r["expert_seconds"] for r in sgd])),
        })
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--arch", default="ConvNet-d2-w32-relu-instancenorm-avgpool")
    parser.add_argument("--eval-arch", default=None, help="default: --arch")
    parser.add_argument("--ipc", type=int, default=10)
    parser.add_argument("--iterations", type=int, default=200)
    parser.add_argument("--experts", type=int, default=4)
    parser.add_argument("--expert-train-epochs", type=int, default=12)
    parser.add_argument("--expert-batch", type=int, default=64)
    parser.add_argument("--max-start-epoch", type=int, default=8)
    parser.add_argument("--syn-steps", type=int, default=20)
    parser.add_argument("--lr-img", type=float, default=100.0)
    parser.add_argument("--rhos", type=float, nargs="+", default=[0.01, 0.05], help="SAM radii of the flat arms")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--eval-epochs", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    args.eval_arch = args.eval_arch or args.arch
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    data = load_dataset(args.dataset, root=args.data_root, device=device, download=False)
    records = []
    with tempfile.TemporaryDirectory(prefix="ddsearch-flat-experts-") as cache:
        for seed in args.seeds:
            for rho in (0.0, *args.rhos):
                records.append(one_arm(args, data, seed, rho, cache))
                r = records[-1]
                print(f"seed {seed} rho {rho}: sharpness {r['sharpness']:.2f}, start {r['start_test_acc']:.4f}, "
                      f"PAD {r['test_acc']:.4f} ({r['expert_seconds']:.1f}s experts)", flush=True)
    info = device_info(device)
    payload = {"device": info, "settings": vars(args), "records": records,
               "summaries": summaries(records, args.rhos)}
    write_results(f"flat_experts_{args.dataset}", payload, markdown(records, args, info))


if __name__ == "__main__":
    main()
