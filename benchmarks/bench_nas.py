"""NAS on distilled proxy data (issue 6): does a ranking on a tiny proxy agree with full-data training?

Stage 1 makes (and caches) the proxies: a DataDAM MNIST set and, if feasible, a PAD one.
Stage 2 ranks the candidates on each proxy and on a random real subset of the same size (the
control), trains the same candidates on real data (the ground truth, cached), and writes
benchmarks/results/nas_mnist.json + .md.

    python benchmarks/bench_nas.py --stage proxies   # only distill the proxies
    python benchmarks/bench_nas.py                   # everything (proxies are reused from the cache)
"""

from __future__ import annotations

import argparse
import json
import time
import traceback
from dataclasses import replace
from pathlib import Path

import torch
from tqdm.auto import tqdm

from common import data_root, device_info, write_results
from ddsearch.data import RealData, load_dataset
from ddsearch.synset import SyntheticSet

# Eight distinct members of seed22 that 2 shared CPU cores can afford (D3, W128, AR, IN and AP are all
# the default ConvNet, so only one of them is kept; NP, W256, D4/D5 and the rest are left out for time).
CANDIDATES = [
    "ConvNetD1", "ConvNetD2", "ConvNet", "ConvNetW32", "ConvNetW64", "ConvNetAS", "ConvNetNN", "ConvNetBN",
]


def proxy_dir(cache: Path) -> Path:
    path = cache / "nas" / "bench_proxies"
    path.mkdir(parents=True, exist_ok=True)
    return path


def make_datadam_proxy(data: RealData, iterations: int, batch_real: int, cache: Path) -> tuple[Path, dict]:
    """A short CPU DataDAM distillation of MNIST at IPC 10 (reduced: the paper runs 20k iterations)."""
    from ddsearch.methods.datadam import DataDAMSettings
    from ddsearch.methods import create_distiller

    path = proxy_dir(cache) / f"mnist-datadam-ipc10-it{iterations}-b{batch_real}.safetensors"
    info_path = path.with_suffix(".json")
    if path.is_file() and info_path.is_file():
        return path, json.loads(info_path.read_text())
    settings = DataDAMSettings(ipc=10, iterations=iterations, arch="ConvNetBN", batch_real=batch_real)
    distiller = create_distiller(settings, data, seed=0)
    start = time.perf_counter()
    losses = []
    for it in tqdm(range(iterations), desc="DataDAM", unit="it"):
        losses.append(distiller.step())
        if (it + 1) % 25 == 0:
            values = torch.stack(losses).float().tolist()
            losses.clear()
            tqdm.write(f"iteration {it + 1}: loss {values[-1]:.4g}")
    seconds = time.perf_counter() - start
    distiller.synset().save(path)
    info = {"method": "datadam", "iterations": iterations, "batch_real": batch_real, "arch": settings.arch,
            "ipc": 10, "distill_seconds": seconds}
    info_path.write_text(json.dumps(info, indent=2))
    return path, info


def train_part(data: RealData, per_class: int, seed: int = 0) -> RealData:
    """The same data set with only ``per_class`` random training images of each class (val/test unchanged)."""
    import dataclasses

    generator = torch.Generator().manual_seed(seed)
    keep = torch.cat([idx[torch.randperm(len(idx), generator=generator)[:per_class]] for idx in data.class_indices])
    train_y = data.train_y[keep]
    source = data.train_source_idx[keep] if data.train_source_idx is not None else None
    return dataclasses.replace(
        data, train_x=data.train_x[keep], train_y=train_y, train_source_idx=source,
        class_indices=[torch.nonzero(train_y == c).flatten() for c in range(data.num_classes)],
    )


PAD_CPU = dict(ipc=10, arch="ConvNet", num_experts=1, expert_train_epochs=3, max_start_epoch=1, expert_epochs=2,
               syn_steps=10, batch_syn=50, score_models=1, score_epochs=0, add_end_epoch=1, rm_epoch_first=3,
               rm_epoch_second=3)


def make_pad_proxy(data: RealData, iterations: int, cache: Path, per_class: int) -> tuple[Path | None, dict]:
    """A tiny PAD run on part of MNIST's training split (1 expert of 3 epochs, scores at init).

    Any failure is recorded, not raised. The experts of a full PAD run need many passes over all
    55,000 training images, which 2 CPU cores cannot afford; batch_syn 50 keeps an iteration near 3 s
    (the whole 100-image set per unrolled step measured 11-12 s).
    """
    tag = f"s{PAD_CPU['syn_steps']}b{PAD_CPU['batch_syn']}"
    path = proxy_dir(cache) / f"mnist-pad-ipc10-it{iterations}-{tag}-train{per_class}pc.safetensors"
    info_path = path.with_suffix(".json")
    if path.is_file() and info_path.is_file():
        return path, json.loads(info_path.read_text())
    try:
        from ddsearch.methods.pad import PADSettings
        from ddsearch.methods import create_distiller

        settings = PADSettings(iterations=iterations, cache_dir=str(cache), **PAD_CPU)
        part = train_part(data, per_class)
        start = time.perf_counter()
        distiller = create_distiller(settings, part, seed=0)
        setup = time.perf_counter() - start
        start = time.perf_counter()
        for it in tqdm(range(iterations), desc="PAD", unit="it"):
            loss = distiller.step()
            if (it + 1) % 10 == 0:
                tqdm.write(f"iteration {it + 1}: loss {float(loss):.4g}")
        seconds = time.perf_counter() - start
        distiller.synset().save(path)
        info = {"method": "pad", "iterations": iterations, "setup_seconds": setup, "distill_seconds": seconds,
                "train_images": int(part.train_y.shape[0]),
                "settings": settings.model_dump(mode="json")}
        info_path.write_text(json.dumps(info, indent=2))
        return path, info
    except Exception as err:  # noqa: BLE001 - recorded as "not measured" with the reason
        traceback.print_exc()
        return None, {"method": "pad", "error": f"{type(err).__name__}: {err}"}


def cached_scores(cache: Path, label: str, synset: SyntheticSet, names: list[str], data: RealData, settings) -> list:
    """Proxy scores, cached per candidate (they do not depend on the ground truth's schedule)."""
    import hashlib

    from ddsearch.nas import CandidateScore
    from ddsearch.nas.ranking import score_set

    digest = hashlib.sha256(synset.images.numpy().tobytes() + synset.labels.numpy().tobytes()).hexdigest()[:16]
    key = {"label": label, "set": digest, "epochs": settings.epochs, "seeds": settings.seeds, "lr": settings.lr,
           "batch_size": settings.batch_size, "dsa": settings.dsa_strategy, "seed": settings.seed}
    path = cache / "nas" / "bench_scores" / (hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20] + ".json")
    stored = json.loads(path.read_text())["scores"] if path.is_file() else {}
    missing = [n for n in names if n not in stored]
    if missing:
        for score in score_set(missing, synset, data, settings, desc=label):
            if score.error is None:
                stored[score.arch] = {"acc": score.acc, "seconds": score.seconds}
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(json.dumps({"key": key, "scores": stored}, indent=1))
            else:
                stored[score.arch] = {"acc": [], "seconds": score.seconds, "error": score.error}
    return [CandidateScore(n, list(stored[n]["acc"]), stored[n]["seconds"], stored[n].get("error"),
                           cached=n not in missing) for n in names]


def plot(path: Path, candidates: list[str], truth: list[float], series: dict[str, tuple[list[float], float]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    from ddsearch.nas.report import short_name

    fig = Figure(figsize=(6.4, 5.0), dpi=110)
    ax = fig.add_subplot()
    markers = {"DataDAM": ("tab:blue", "o"), "PAD": ("tab:green", "s"), "random control": ("tab:orange", "^")}
    for label, (accs, rho) in series.items():
        color, marker = markers.get(label, ("tab:gray", "x"))
        ax.scatter([100 * t for t in truth], [100 * a for a in accs], c=color, marker=marker, alpha=0.8,
                   label=f"{label} (ρ={rho:+.2f})")
    first = next(iter(series.values()))[0]
    for arch, t, a in zip(candidates, truth, first):
        ax.annotate(short_name(arch), (100 * t, 100 * a), fontsize=6, xytext=(2, 2), textcoords="offset points")
    ax.set_xlabel("ground truth: val accuracy (%) after real-data training")
    ax.set_ylabel("val accuracy (%) after training on the 100-image set")
    ax.set_title("MNIST NAS, reduced CPU schedules")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stage", choices=["proxies", "all"], default="all")
    parser.add_argument("--cache-dir", default=str(Path.home() / ".cache" / "ddsearch"))
    parser.add_argument("--datadam-iterations", type=int, default=100)
    parser.add_argument("--batch-real", type=int, default=32)
    parser.add_argument("--pad-iterations", type=int, default=150, help="0: do not try PAD")
    parser.add_argument("--pad-train-per-class", type=int, default=500,
                        help="PAD scores and experts use this many training images per class")
    parser.add_argument("--pad-note", default="not attempted (--pad-iterations 0)",
                        help="why there is no PAD proxy, for the results")
    parser.add_argument("--candidates", default=",".join(CANDIDATES))
    parser.add_argument("--epochs", type=int, default=50, help="proxy/control training epochs")
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--truth-epochs", type=int, default=1)
    parser.add_argument("--truth-train-size", type=int, default=0, help="0: the whole training split")
    parser.add_argument("--truth-batch-size", type=int, default=64,
                        help="4x the updates of batch 256 for the same compute: a less under-trained truth")
    parser.add_argument("--full-epochs", type=int, default=20,
                        help="epochs of the full-data schedule the time ratio is extrapolated to")
    parser.add_argument("--full-proxy-epochs", type=int, default=None,
                        help="proxy schedule extrapolated to (default: as run, the schedule the correlations are for)")
    parser.add_argument("--full-proxy-seeds", type=int, default=None)
    args = parser.parse_args()
    torch.set_num_threads(2)
    cache = Path(args.cache_dir)
    device = torch.device("cpu")
    data = load_dataset("mnist", root=data_root(), val_size=5000)
    datadam_path, datadam_info = make_datadam_proxy(data, args.datadam_iterations, args.batch_real, cache)
    print(datadam_path, datadam_info)
    pad_path, pad_info = (None, {"method": "pad", "error": args.pad_note})
    if args.pad_iterations:
        pad_path, pad_info = make_pad_proxy(data, args.pad_iterations, cache, args.pad_train_per_class)
        print(pad_path, pad_info)
    if args.stage == "proxies":
        return

    from ddsearch.nas import NASSettings, agreement, control_set, ground_truth, resolve_space, split_runnable
    from ddsearch.nas.ranking import score_set

    names = resolve_space(args.candidates)
    names, skipped = split_runnable(names, data.channels, data.num_classes, data.image_size)
    settings = NASSettings(epochs=args.epochs, seeds=args.seeds, truth_epochs=args.truth_epochs,
                           truth_train_size=args.truth_train_size, truth_batch_size=args.truth_batch_size, top_k=3)
    proxies: dict[str, SyntheticSet] = {"DataDAM": SyntheticSet.load(datadam_path, expect=data)}
    if pad_path is not None:
        proxies["PAD"] = SyntheticSet.load(pad_path, expect=data)
    proxies["random control"] = control_set(data, proxies["DataDAM"], seed=settings.seed)

    start = time.perf_counter()
    truth = ground_truth(names, data, settings, cache_dir=cache)
    truth_wall = time.perf_counter() - start
    truth_acc = [s.mean for s in truth]
    truth_seconds = sum(s.seconds for s in truth)
    train_images = min(args.truth_train_size or len(data.train_y), len(data.train_y))
    full_seconds = truth_seconds * (len(data.train_y) / train_images) * (args.full_epochs / args.truth_epochs)
    args.full_proxy_epochs = args.full_proxy_epochs or settings.epochs
    args.full_proxy_seeds = args.full_proxy_seeds or settings.seeds
    proxy_scale = (args.full_proxy_epochs / settings.epochs) * (args.full_proxy_seeds / settings.seeds)

    rows, per_arch = [], {n: {"arch": n, "true_acc": a} for n, a in zip(names, truth_acc)}
    series = {}
    for label, synset in proxies.items():
        start = time.perf_counter()
        use = settings if label != "random control" else replace(settings, use_learned_lr=False)
        scores = cached_scores(cache, label, synset, names, data, use)
        wall = time.perf_counter() - start
        accs = [s.mean for s in scores]
        agree = agreement(names, accs, truth_acc, k=settings.top_k)
        seconds = sum(s.seconds for s in scores)
        series[label] = (accs, agree.spearman)
        for n, s in zip(names, scores):
            per_arch[n][label] = s.mean
            if s.error:
                per_arch[n][f"{label} error"] = s.error
        rows.append({"proxy": label, **agree.as_dict(), "proxy_seconds": seconds, "proxy_wall_seconds": wall,
                     "truth_seconds": truth_seconds, "time_ratio_measured": truth_seconds / seconds,
                     "full_search_seconds_extrapolated": full_seconds,
                     "proxy_seconds_extrapolated": seconds * proxy_scale,
                     "time_ratio_extrapolated": full_seconds / (seconds * proxy_scale),
                     "scores_cached": sum(s.cached for s in scores)})

    info = device_info(device)
    control = next(r for r in rows if r["proxy"] == "random control")
    for r in rows:
        r["target_met"] = bool(r["spearman"] >= 0.7 and r["time_ratio_measured"] >= 50 and r["proxy"] != "random control"
                               and r["spearman"] > control["spearman"])
    payload = {
        "dataset": "mnist", "val_size": 5000, "candidates": names, "skipped": [s.__dict__ for s in skipped],
        "settings": settings.__dict__, "truth_cached": sum(s.cached for s in truth), "truth_wall_seconds": truth_wall,
        "full_epochs_for_extrapolation": args.full_epochs, "proxies": {"datadam": datadam_info, "pad": pad_info},
        "results": rows, "per_candidate": list(per_arch.values()), "device": info["device_name"], "env": info,
    }
    scatter = Path(__file__).resolve().parent / "results" / "nas_mnist_scatter.png"
    scatter.parent.mkdir(parents=True, exist_ok=True)
    plot(scatter, names, truth_acc, series)

    def pct(v: float) -> str:
        return f"{100 * v:.2f}"

    dd = datadam_info
    pad_line = (f"PAD: {pad_info.get('iterations')} iterations, syn_steps {PAD_CPU['syn_steps']}, batch_syn "
                f"{PAD_CPU['batch_syn']}, 1 expert of 3 epochs, EL2N scores at init, all "
                f"on a random {pad_info.get('train_images')}-image part of the training split "
                f"({pad_info.get('setup_seconds', 0):.0f} s scores + expert, {pad_info.get('distill_seconds', 0):.0f} s "
                "distillation)."
                if "error" not in pad_info else f"PAD: **not measured**: {pad_info['error']}.")
    md = [
        f"# NAS on distilled proxy data, MNIST ({info['device_name']})",
        "",
        "**Reduced CPU schedules** (2 cores, nothing else running; nothing here is the papers' schedule):",
        "",
        f"- proxies: DataDAM IPC 10, ConvNetBN, {dd['iterations']} iterations, batch_real {dd['batch_real']} "
        f"({dd['distill_seconds']:.0f} s; the paper runs 20,000 iterations). {pad_line}",
        f"- control: a random real subset of the same size (10 per class), same protocol.",
        f"- proxy/control protocol: {settings.epochs} epochs, {settings.seeds} seed(s), SGD lr {settings.lr}, "
        f"DSA `{settings.strategy(data)}`, mean accuracy on the 5,000-image real validation split.",
        f"- ground truth: {settings.truth_epochs} epoch(s) at batch {settings.truth_batch_size} on "
        + (f"all {train_images:,} images of the real training split" if train_images == len(data.train_y)
           else f"a class-balanced {train_images:,}-image part of the real training split")
        + f", {settings.truth_seeds} seed; same validation split. A short schedule: it ranks how fast a network "
        "learns as well as how well.",
        f"- candidates ({len(names)}): {', '.join(names)}.",
        f"- torch {info['torch']}, {info['date']}.",
        "",
        "| proxy | Spearman ρ | Kendall τ | top-3 overlap | proxy's pick (true acc) | true best (acc) | regret (pts) "
        "| proxy s | truth s | ratio measured | ratio at full schedules (extrapolated) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        md.append(
            f"| {r['proxy']} | {r['spearman']:+.3f} | {r['kendall']:+.3f} | {r['top_k_overlap']:.2f} | "
            f"{r['top_pick']} ({pct(r['top_pick_true_acc'])}) | {r['true_best']} ({pct(r['true_best_acc'])}) | "
            f"{100 * r['regret']:.2f} | {r['proxy_seconds']:.0f} | {r['truth_seconds']:.0f} | "
            f"{r['time_ratio_measured']:.2f}x | {r['time_ratio_extrapolated']:.0f}x |"
        )
    md += [
        "",
        f"*ratio measured*: ground-truth training seconds / proxy training seconds, both as run here (the "
        f"{dd['distill_seconds']:.0f} s of distillation are not counted: a proxy is made once and reused). "
        f"*ratio at full schedules*: scaled linearly from these measurements, the truth to all "
        f"{len(data.train_y):,} training images x {args.full_epochs} epochs (the `ddsearch baseline` default), the "
        f"proxy to {args.full_proxy_epochs} epochs x {args.full_proxy_seeds} seed(s)"
        + (" (as run: the schedule the correlations above are for)"
           if (args.full_proxy_epochs, args.full_proxy_seeds) == (settings.epochs, settings.seeds) else "")
        + "; an estimate, not a measurement. The correlations were measured against the "
        f"{settings.truth_epochs}-epoch truth, not the {args.full_epochs}-epoch one.",
        "",
        "| candidate | true acc | " + " | ".join(proxies) + " |",
        "| --- | --- | " + " | ".join("---" for _ in proxies) + " |",
    ]
    for row in sorted(per_arch.values(), key=lambda r: -r["true_acc"]):
        md.append(f"| {row['arch']} | {pct(row['true_acc'])} | " + " | ".join(pct(row[p]) for p in proxies) + " |")
    md.append("")
    for r in rows:
        if r["proxy"] != "random control":
            verdict = "met" if r["target_met"] else "**not met**"
            md.append(f"Target for {r['proxy']} (ρ ≥ 0.7, ≥ 50x less search time as measured, ρ above the "
                      f"control's {control['spearman']:+.3f}): {verdict}.")
    md += ["", "![proxy vs true accuracy](nas_mnist_scatter.png)", ""]
    write_results("nas_mnist", payload, "\n".join(md))


if __name__ == "__main__":
    main()
