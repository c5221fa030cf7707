"""NAS on distilled proxy data (issue 6): does a ranking on a tiny proxy agree with full-data training?

The ground truth (12 seed22 candidates x 10 epochs x 2 seeds on all 55,000 training images, several
CPU hours) is kept in benchmarks/results/nas_truth_mnist.json, one entry per candidate as it finishes:
later runs reuse it and only train what is missing, so it can be built over several sittings.
The proxies (a DataDAM MNIST set and, if feasible, a PAD one) are made once and cached. The last
stage ranks the candidates on each proxy and on a random real subset of the same size (the
control) and writes benchmarks/results/nas_mnist.json + .md (``--name``: another file, e.g. for a
sensitivity run at more proxy seeds, which leaves the README alone).

    python benchmarks/bench_nas.py --stage truth     # only the ground truth (resumable)
    python benchmarks/bench_nas.py --stage proxies   # only distill the proxies
    python benchmarks/bench_nas.py                   # everything (truth and proxies are reused)
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

from common import RESULTS, data_root, device_info, update_readme, write_results
from ddsearch.data import RealData, load_dataset
from ddsearch.nas import SpearmanGap, resolve_space
from ddsearch.nas.metrics import UNRANKED
from ddsearch.nas.truth import read_truth_table
from ddsearch.synset import SyntheticSet

# Twelve distinct members of seed22, covering every axis: depth, width, activation, normalisation and
# pooling. D3, W128, AR, IN and AP are all the default ConvNet, so only one of them is kept; D5 cannot
# run at 28x28; NP (no pooling: every layer at full resolution) and W256 cost 4x a candidate here.
CANDIDATES = [
    "ConvNetD1", "ConvNetD2", "ConvNet", "ConvNetD4", "ConvNetW32", "ConvNetW64",
    "ConvNetAS", "ConvNetAL", "ConvNetNN", "ConvNetBN", "ConvNetLN", "ConvNetMP",
]
DATADAM_ARCH = "ConvNet"  # the reproduction table's DataDAM setting, and DC's NAS proxy network
RHO_TARGET = 0.8  # the bar for DataDAM's Spearman rho against the truth
RATIO_TARGET = 50.0  # truth seconds / proxy-search seconds, both measured
TRUTH_FILE = Path(__file__).resolve().parent / "results" / "nas_truth_mnist.json"
DEFAULT_NAME = "nas_mnist"  # the results the README shows


def proxy_dir(cache: Path) -> Path:
    path = cache / "nas" / "bench_proxies"
    path.mkdir(parents=True, exist_ok=True)
    return path


def make_datadam_proxy(data: RealData, iterations: int, batch_real: int, cache: Path) -> tuple[Path, dict]:
    """A CPU DataDAM distillation of MNIST at IPC 10, as in the reproduction table (the paper runs 20k iterations)."""
    from ddsearch.methods.datadam import DataDAMSettings
    from ddsearch.methods import create_distiller

    path = proxy_dir(cache) / f"mnist-datadam-ipc10-{DATADAM_ARCH}-it{iterations}-b{batch_real}.safetensors"
    info_path = path.with_suffix(".json")
    if path.is_file() and info_path.is_file():
        return path, json.loads(info_path.read_text())
    settings = DataDAMSettings(ipc=10, iterations=iterations, arch=DATADAM_ARCH, batch_real=batch_real)
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


def add_gaps(payload: dict) -> None:
    """Each proxy's Spearman gap to the control, with a paired-bootstrap interval over the candidates."""
    from ddsearch.nas import spearman_gap

    per = payload["per_candidate"]
    truth, control = [r["true_acc"] for r in per], [r["random control"] for r in per]
    for row in payload["results"]:
        if row["proxy"] != "random control":
            row["vs_control"] = spearman_gap([r[row["proxy"]] for r in per], control, truth).as_dict()


def judge(rows: list[dict]) -> None:
    """Mark each proxy's row ``target_met``: rho and the measured speed-up reach the bars, and rho beats the control's."""
    control = next(r for r in rows if r["proxy"] == "random control")
    for r in rows:
        r["target_met"] = bool(r is not control and r["spearman"] >= RHO_TARGET
                               and r["time_ratio_measured"] >= RATIO_TARGET and r["spearman"] > control["spearman"])


def pct(v: float) -> str:
    return f"{100 * v:.2f}"


def _proxy_lines(payload: dict) -> list[str]:
    dd, pad = payload["proxies"]["datadam"], payload["proxies"]["pad"]
    lines = [f"- DataDAM proxy: IPC 10, {dd['arch']}, {dd['iterations']} iterations, batch_real "
             f"{dd['batch_real']}, distilled in {dd['distill_seconds']:.0f} s (the paper runs 20,000 iterations)."]
    if "error" in pad:
        lines.append(f"- PAD proxy: **not measured**: {pad['error']}.")
    else:
        cfg = pad["settings"]
        lines.append(f"- PAD proxy: IPC 10, {pad['iterations']} iterations, syn_steps {cfg['syn_steps']}, batch_syn "
                     f"{cfg['batch_syn']}, {cfg['num_experts']} expert(s) of {cfg['expert_train_epochs']} epochs on a "
                     f"random {pad['train_images']:,}-image part of the training split: {pad['setup_seconds']:.0f} s of "
                     f"scores and experts, {pad['distill_seconds']:.0f} s of distillation (a reduced CPU budget).")
    lines.append("- control: a random real subset of the same size (10 per class), trained the same way.")
    return lines


def _truth_line(payload: dict) -> str:
    cfg, per = payload["settings"], payload["per_candidate"]
    seconds = sum(r["truth_seconds"] for r in per)
    return (f"- ground truth: {len(per)} seed22 candidates x {cfg['truth_epochs']} epochs x {cfg['truth_seeds']} "
            f"seeds on all {payload['truth_train_images']:,} training images (batch {cfg['truth_batch_size']}, SGD lr "
            f"{cfg['lr']}, DSA, {cfg['precision']} precision), scored on the 5,000-image validation split: "
            f"{seconds:,.0f} s of training in all (`{payload['truth_file']}`, one entry per candidate).")


def _training_line(payload: dict) -> str:
    """How each candidate trains on a proxy: at IPC 10 and batch 256 an epoch is one SGD step."""
    cfg = payload["settings"]
    return (f"- proxy and control training: {cfg['epochs']} epochs x {cfg['seeds']} seed(s), batch "
            f"{cfg['batch_size']}, SGD lr {cfg['lr']} (a proxy's learned lr where it has one), DSA, mean accuracy on "
            "the same validation split.")


def _speed_line(payload: dict) -> str:
    """How fast the machine was in the truth's sittings and in the proxies' (a ConvNet step, batch 256)."""
    truth = [r["truth_reference_step_ms"] for r in payload["per_candidate"] if r.get("truth_reference_step_ms")]
    spread = f"{min(truth):.0f}–{max(truth):.0f} ms" if truth else "not recorded"
    return (f"- machine speed (one ConvNet training step, batch 256): {payload['reference_step_ms']:.0f} ms during the "
            f"proxy searches, {spread} during the truth's sittings; a slower truth sitting inflates the speed-up.")


def report(payload: dict) -> list[str]:
    """The markdown report, from the payload alone (``--stage report`` rewrites it from the JSON)."""
    rows = payload["results"]
    labels = [r["proxy"] for r in rows]
    control = next(r for r in rows if r["proxy"] == "random control")
    md = [f"# NAS on distilled proxy data, MNIST ({payload['device']})", "",
          _truth_line(payload), *_proxy_lines(payload),
          _training_line(payload),
          f"- candidates ({len(payload['candidates'])}): {', '.join(payload['candidates'])}.",
          _speed_line(payload),
          f"- torch {payload['env']['torch']}, {payload['env']['date']}.", "",
          "| proxy | Spearman ρ | Kendall τ | top-3 overlap | proxy's pick (true acc) | true best (acc) | regret (pts) "
          "| search s | truth s | speed-up (measured) | with distillation |",
          "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        md.append(f"| {r['proxy']} | {r['spearman']:+.3f} | {r['kendall']:+.3f} | {r['top_k_overlap']:.2f} | "
                  f"{r['top_pick']} ({pct(r['top_pick_true_acc'])}) | {r['true_best']} ({pct(r['true_best_acc'])}) | "
                  f"{100 * r['regret']:.2f} | {r['proxy_seconds']:.0f} | {r['truth_seconds']:,.0f} | "
                  f"{r['time_ratio_measured']:.0f}x | {r['time_ratio_with_distillation']:.0f}x |")
    md += ["", "*speed-up*: ground-truth training seconds / proxy-search training seconds, both measured on this "
           "machine. *with distillation*: the proxy's one-off distillation (and PAD's experts) added to its search.",
           "", "| candidate | true acc (± std) | truth s | " + " | ".join(labels) + " |",
           "| --- | --- | --- | " + " | ".join("---" for _ in labels) + " |"]
    for row in sorted(payload["per_candidate"], key=lambda r: -r["true_acc"]):
        md.append(f"| {row['arch']} | {pct(row['true_acc'])} ± {pct(row['true_std'])} | {row['truth_seconds']:.0f} | "
                  + " | ".join(pct(row[label]) for label in labels) + " |")
    md.append("")
    n = len(payload["per_candidate"])
    md += [f"- {r['proxy']}: {gap_words(r['vs_control'], n)}." for r in rows if "vs_control" in r]
    md += ["", *(target_words(r, control) for r in rows if r is not control)]
    return md + ["", f"![proxy vs true accuracy]({payload.get('name', DEFAULT_NAME)}_scatter.png)", ""]


def gap_words(gap: dict, candidates: int) -> str:
    """A proxy's Spearman gap to the control and whether this many candidates can tell them apart."""
    g = SpearmanGap.from_dict(gap)
    if not g.ranked:
        return f"no ρ gap to the control: {UNRANKED}"
    if not g.resamples:
        return f"ρ minus the control's ρ = {g.gap:+.3f}; {candidates} candidates are too few for an interval"
    return (f"ρ minus the control's ρ = {g.gap:+.3f}, {100 * g.level:.0f}% paired bootstrap over the candidates "
            f"{g.low:+.3f} to {g.high:+.3f} ({g.resamples:,} resamples): "
            f"{g.verdict(f'{candidates} candidates cannot tell the two apart')}")


def target_words(row: dict, control: dict) -> str:
    """Which of the three bars a proxy clears."""
    parts = [f"ρ {row['spearman']:+.3f} ≥ {RHO_TARGET}: {'yes' if row['spearman'] >= RHO_TARGET else 'no'}",
             f"{row['time_ratio_measured']:.0f}x ≥ {RATIO_TARGET:.0f}x less search time as measured: "
             f"{'yes' if row['time_ratio_measured'] >= RATIO_TARGET else 'no'}",
             f"ρ above the control's {control['spearman']:+.3f}: {'yes' if row['spearman'] > control['spearman'] else 'no'}"]
    return f"Target for {row['proxy']}: {'met' if row['target_met'] else '**not met**'} ({'; '.join(parts)})."


def truth_progress_lines(truth_file: Path, candidates: list[str]) -> list[str]:
    """The README's NAS block while the ground truth is still being built: what the table holds so far."""
    key, done = read_truth_table(truth_file)
    seconds = sum(e["seconds"] for e in done.values())
    lines = [f"The NAS ground truth is being built: {len([n for n in candidates if n in done])} of {len(candidates)} "
             f"seed22 candidates trained so far, {key.get('epochs', '?')} epochs x {key.get('seeds', '?')} seeds on "
             f"all {key.get('train', 0):,} training images ({seconds:,.0f} s; `benchmarks/results/{truth_file.name}`). "
             "The proxy comparison runs once it is complete (`python benchmarks/bench_nas.py`).", "",
             "| candidate | val acc (%) per seed | training s | date | reference step ms |",
             "| --- | --- | --- | --- | --- |"]
    for name in candidates:
        entry = done.get(name)
        speed = entry and entry.get("reference_step_ms")
        lines.append(f"| {name} | " + (" / ".join(pct(a) for a in entry["acc"]) + f" | {entry['seconds']:.0f} | "
                                      f"{entry['date']} | {speed or '–'} |" if entry else "not yet | – | – | – |"))
    lines += ["", "*reference step ms*: one ConvNet training step at batch 256 at the start of that sitting, "
              "measured by the benchmark: how fast the shared machine was that day."]
    return lines


def _sentence(item: str) -> str:
    """A report's list item as a README sentence (``capitalize`` would lower-case SGD and DSA)."""
    text = item.removeprefix("- ")
    return text[:1].upper() + text[1:]


def readme_lines(payload: dict) -> list[str]:
    """The README's NAS block: the summary table and where each number lives."""
    rows = payload["results"]
    md = [_sentence(_truth_line(payload)), "", _sentence(_training_line(payload)), "",
          "| proxy | Spearman ρ | Kendall τ | top-3 overlap | regret (pts) | search s | speed-up (measured) |",
          "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        md.append(f"| {r['proxy']} | {r['spearman']:+.3f} | {r['kendall']:+.3f} | {r['top_k_overlap']:.2f} | "
                  f"{100 * r['regret']:.2f} | {r['proxy_seconds']:.0f} | {r['time_ratio_measured']:.0f}x |")
    n = len(payload["per_candidate"])
    md += [""] + [f"- {r['proxy']}: {gap_words(r['vs_control'], n)}." for r in rows if "vs_control" in r]
    return md + ["", f"Proxies, schedules and per-candidate accuracies: `benchmarks/results/nas_mnist.md` "
                 f"({payload['env']['date']})."]


def reference_step_ms(data: RealData, steps: int = 10) -> float:
    """Median ms of one training step of the default ConvNet at batch 256: how fast the machine is today.

    The truth is built over several sittings and the proxies are searched in another, so each
    records this figure; the report shows how far the machine's speed moved between them.
    """
    from ddsearch.augment import DSA
    from ddsearch.evaluate import build_network, train_epoch
    from ddsearch.precision import resolve_precision

    net = build_network("ConvNet", data, 0, data.train_x.device)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    one_batch, no_dsa, generator = torch.arange(256), DSA("none"), torch.Generator().manual_seed(0)
    precision = resolve_precision("auto", data.train_x.device)
    times = []
    for i in range(steps + 3):
        start = time.perf_counter()
        train_epoch(net, optimizer, data.train_x, data.train_y, one_batch, 256, no_dsa, generator, precision)
        if i >= 3:  # the first steps warm up the allocator and the kernels
            times.append(time.perf_counter() - start)
    return 1000 * float(sorted(times)[len(times) // 2])


def shown_candidates(names: list[str]) -> list[str]:
    """The README lists the benchmark's twelve, and any other candidate a sitting was asked for."""
    return list(dict.fromkeys([*CANDIDATES, *names]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stage", choices=["truth", "proxies", "all", "report"], default="all",
                        help="report: rewrite the markdown (and the README block) from the results JSON alone")
    parser.add_argument("--name", default=DEFAULT_NAME,
                        help="results file stem under benchmarks/results; only the default one feeds the README")
    parser.add_argument("--truth-file", default=str(TRUTH_FILE),
                        help="the ground-truth table, read and extended one candidate at a time")
    parser.add_argument("--cache-dir", default=str(Path.home() / ".cache" / "ddsearch"))
    parser.add_argument("--datadam-iterations", type=int, default=1000)
    parser.add_argument("--batch-real", type=int, default=256)
    parser.add_argument("--pad-iterations", type=int, default=150, help="0: do not try PAD")
    parser.add_argument("--pad-train-per-class", type=int, default=500,
                        help="PAD scores and experts use this many training images per class")
    parser.add_argument("--pad-note", default="not attempted (--pad-iterations 0)",
                        help="why there is no PAD proxy, for the results")
    parser.add_argument("--candidates", default=",".join(CANDIDATES))
    parser.add_argument("--epochs", type=int, default=150,
                        help="proxy/control training epochs (an IPC 10 set is one SGD step per epoch at batch 256; "
                             "150 keeps the measured speed-up over the 50x bar here; the report records it)")
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--truth-epochs", type=int, default=10)
    parser.add_argument("--truth-seeds", type=int, default=2)
    parser.add_argument("--truth-train-size", type=int, default=0, help="0: the whole training split")
    parser.add_argument("--truth-batch-size", type=int, default=256)
    args = parser.parse_args()
    if args.stage == "report":
        payload = json.loads((RESULTS / f"{args.name}.json").read_text())
        if "truth_file" not in payload:  # the results predate the committed truth: show how far the truth is
            names = resolve_space(args.candidates)
            update_readme("nas", "\n".join(truth_progress_lines(Path(args.truth_file), shown_candidates(names))))
            return
        add_gaps(payload)
        write_results(args.name, payload, "\n".join(report(payload)))
        if args.name == DEFAULT_NAME:
            update_readme("nas", "\n".join(readme_lines(payload)))
        return
    torch.set_num_threads(2)
    cache = Path(args.cache_dir)
    device = torch.device("cpu")
    data = load_dataset("mnist", root=data_root(), val_size=5000)

    from ddsearch.nas import NASSettings, agreement, control_set, ground_truth, split_runnable

    names, skipped = split_runnable(resolve_space(args.candidates), data.channels, data.num_classes, data.image_size)
    settings = NASSettings(epochs=args.epochs, seeds=args.seeds, truth_epochs=args.truth_epochs,
                           truth_seeds=args.truth_seeds, truth_train_size=args.truth_train_size,
                           truth_batch_size=args.truth_batch_size, top_k=3)
    if args.stage == "truth":
        speed = reference_step_ms(data)
        print(f"reference ConvNet step: {speed:.0f} ms")
        for score in ground_truth(names, data, settings, cache_file=args.truth_file,
                                  entry_note={"reference_step_ms": round(speed, 1)}):
            print(f"{score.arch}: val {score.mean:.4f} +- {score.std:.4f} ({score.seconds:.0f} s"
                  + (", cached)" if score.cached else ")") + (f" error: {score.error}" if score.error else ""))
        update_readme("nas", "\n".join(truth_progress_lines(Path(args.truth_file), shown_candidates(names))))
        return

    datadam_path, datadam_info = make_datadam_proxy(data, args.datadam_iterations, args.batch_real, cache)
    print(datadam_path, datadam_info)
    pad_path, pad_info = (None, {"method": "pad", "error": args.pad_note})
    if args.pad_iterations:
        pad_path, pad_info = make_pad_proxy(data, args.pad_iterations, cache, args.pad_train_per_class)
        print(pad_path, pad_info)
    if args.stage == "proxies":
        return

    proxies: dict[str, SyntheticSet] = {"DataDAM": SyntheticSet.load(datadam_path, expect=data)}
    if pad_path is not None:
        proxies["PAD"] = SyntheticSet.load(pad_path, expect=data)
    proxies["random control"] = control_set(data, proxies["DataDAM"], seed=settings.seed)

    speed = reference_step_ms(data)
    start = time.perf_counter()
    truth = ground_truth(names, data, settings, cache_file=args.truth_file,
                         entry_note={"reference_step_ms": round(speed, 1)})
    truth_wall = time.perf_counter() - start
    truth_acc = [s.mean for s in truth]
    truth_seconds = sum(s.seconds for s in truth)
    train_images = min(args.truth_train_size or len(data.train_y), len(data.train_y))
    distill_seconds = {"DataDAM": datadam_info.get("distill_seconds", 0.0),
                       "PAD": pad_info.get("setup_seconds", 0.0) + pad_info.get("distill_seconds", 0.0)}

    stored = read_truth_table(args.truth_file)[1]
    rows, per_arch = [], {n: {"arch": n, "true_acc": a, "true_std": t.std, "truth_seconds": t.seconds,
                              "truth_reference_step_ms": stored.get(n, {}).get("reference_step_ms")}
                          for n, a, t in zip(names, truth_acc, truth)}
    series = {}
    for label, synset in proxies.items():
        start = time.perf_counter()
        use = settings if label != "random control" else replace(settings, use_learned_lr=False)
        scores = cached_scores(cache, label, synset, names, data, use)
        wall = time.perf_counter() - start
        accs = [s.mean for s in scores]
        agree = agreement(names, accs, truth_acc, k=settings.top_k)
        seconds = sum(s.seconds for s in scores)
        made = distill_seconds.get(label, 0.0)
        series[label] = (accs, agree.spearman)
        for n, s in zip(names, scores):
            per_arch[n][label] = s.mean
            if s.error:
                per_arch[n][f"{label} error"] = s.error
        rows.append({"proxy": label, **agree.as_dict(), "proxy_seconds": seconds, "proxy_wall_seconds": wall,
                     "distill_seconds": made, "truth_seconds": truth_seconds,
                     "time_ratio_measured": truth_seconds / seconds,
                     "time_ratio_with_distillation": truth_seconds / (seconds + made),
                     "scores_cached": sum(s.cached for s in scores)})

    info = device_info(device)
    judge(rows)
    payload = {
        "name": args.name, "dataset": "mnist", "val_size": 5000, "candidates": names,
        "skipped": [s.__dict__ for s in skipped],
        "settings": settings.__dict__, "truth_file": Path(args.truth_file).name,
        "truth_cached": sum(s.cached for s in truth), "truth_wall_seconds": truth_wall,
        "truth_train_images": train_images, "proxies": {"datadam": datadam_info, "pad": pad_info},
        "reference_step_ms": speed,
        "results": rows, "per_candidate": list(per_arch.values()), "device": info["device_name"], "env": info,
    }
    add_gaps(payload)
    scatter = RESULTS / f"{args.name}_scatter.png"
    scatter.parent.mkdir(parents=True, exist_ok=True)
    plot(scatter, names, truth_acc, series)
    md = report(payload)
    write_results(args.name, payload, "\n".join(md))
    if args.name == DEFAULT_NAME:
        update_readme("nas", "\n".join(readme_lines(payload)))


if __name__ == "__main__":
    main()
