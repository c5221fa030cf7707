"""``ddsearch nas``: find the proxy set, run the search, record it in MLflow, print the ranking."""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ddsearch.commands._args import add_command, add_precision_arg, non_negative_int, positive_float, positive_int
from ddsearch.errors import DDSearchError

if TYPE_CHECKING:
    from ddsearch.nas.settings import NASSettings, Parallel


def add_parser(subparsers: Any) -> None:
    p = add_command(subparsers, "nas", run, "rank architectures on a distilled proxy set; compare with full-data training")
    from ddsearch.nas.settings import NASSettings as _NAS  # the protocol's defaults live there (no torch)

    proxy = p.add_argument_group("proxy set (exactly one)")
    proxy.add_argument("--synset", default=None, help="a synset file, or runs:/<run_id>/synset.safetensors")
    proxy.add_argument("--from-study", default=None, metavar="NAME", help="the synset of this study's best trial")
    proxy.add_argument("--study-experiment", default=None, help="MLflow experiment of the study (default: search all)")
    space = p.add_argument_group("candidates")
    space.add_argument("--space", default="seed22", help="seed22, grid, or a comma-separated list of architectures")
    space.add_argument("--k", type=non_negative_int, default=20, help="candidates drawn from the grid (0: all 720)")
    protocol = p.add_argument_group("protocol")  # NASSettings validates these (its defaults live there)
    protocol.add_argument("--epochs", type=int, default=_NAS.epochs, help="training epochs on the proxy and the control")
    protocol.add_argument("--seeds", type=int, default=_NAS.seeds, help="trainings per candidate (mean val accuracy)")
    protocol.add_argument("--lr", type=float, default=_NAS.lr, help="SGD lr (a learned lr in the proxy wins)")
    protocol.add_argument("--ignore-learned-lr", action="store_true")
    protocol.add_argument("--batch-size", type=int, default=_NAS.batch_size)
    protocol.add_argument("--dsa", default=_NAS.dsa_strategy, help="DSA strategy; auto: by dataset; none: off")
    protocol.add_argument("--no-control", action="store_true", help="skip the random real subset of the same size")
    protocol.add_argument("--truth-epochs", type=int, default=_NAS.truth_epochs,
                          help="real-data epochs for the ground truth (0: no ground truth)")
    protocol.add_argument("--truth-seeds", type=int, default=_NAS.truth_seeds)
    protocol.add_argument("--truth-train-size", type=int, default=_NAS.truth_train_size,
                          help="real training images for the ground truth (0: the whole training split)")
    protocol.add_argument("--truth-batch-size", type=int, default=_NAS.truth_batch_size)
    protocol.add_argument("--top-k", type=int, default=_NAS.top_k, help="k of the top-k overlap")
    protocol.add_argument("--seed", type=int, default=_NAS.seed, help="network inits, control subset, grid draw")
    protocol.add_argument("--cache-dir", default=None, help="ground-truth cache (default: $DDSEARCH_CACHE or ~/.cache/ddsearch)")
    protocol.add_argument("--no-cache", action="store_true", help="retrain the ground truth; do not write the cache")
    running = p.add_argument_group("running")
    running.add_argument("--parallel", action="store_true", help="train candidates as Ray tasks")
    running.add_argument("--cpus-per-task", type=positive_float, default=1.0)
    running.add_argument("--gpus-per-task", type=float, default=None, help="fraction of a GPU per task (default 0.25 with CUDA)")
    running.add_argument("--address", default=None, help="Ray cluster address (default: a local Ray)")
    running.add_argument("--dataset", default=None, help="defaults to the dataset recorded in the synset")
    running.add_argument("--data-root", default=None)
    running.add_argument("--image-size", type=positive_int, default=None, help="resize the real data (default: native size)")
    running.add_argument("--val-size", type=positive_float, default=0.1, help="validation split: fraction (<1) or count")
    running.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    add_precision_arg(running, default="auto", what="auto")
    running.add_argument("--tracking-uri", default=None, help="MLflow URI (default: $MLFLOW_TRACKING_URI or ./mlruns)")
    running.add_argument("--experiment", default="nas", help="MLflow experiment of the NAS run")
    running.add_argument("--json", default=None, help="also write the full result to this JSON file")
    running.add_argument("--quiet", action="store_true", help="no progress bars")


def settings_from_args(args: argparse.Namespace) -> NASSettings:
    from ddsearch.nas.settings import NASSettings

    return NASSettings(
        epochs=args.epochs, seeds=args.seeds, lr=args.lr, batch_size=args.batch_size, dsa_strategy=args.dsa,
        use_learned_lr=not args.ignore_learned_lr, truth_epochs=args.truth_epochs, truth_seeds=args.truth_seeds,
        truth_train_size=args.truth_train_size, truth_batch_size=args.truth_batch_size, top_k=args.top_k, seed=args.seed,
        precision=args.precision,
    )


def parallel_from_args(args: argparse.Namespace) -> Parallel | None:
    if not args.parallel:
        return None
    import torch

    from ddsearch.nas.settings import Parallel

    gpus = args.gpus_per_task
    if gpus is None:
        gpus = 0.25 if torch.cuda.is_available() else 0.0
    if args.cpus_per_task <= 0 or gpus < 0:
        raise DDSearchError("--cpus-per-task must be positive and --gpus-per-task not negative")
    return Parallel(cpus_per_task=args.cpus_per_task, gpus_per_task=gpus, address=args.address)


def fetch_proxy(args: argparse.Namespace, uri: str, workdir: Path) -> tuple[Path, str, dict[str, str]]:
    """(local synset file, a description of where it came from, tags for the NAS run)."""
    from ddsearch.tracking import lookup, store
    from ddsearch.tracking.study_runs import TAG_PROXY_RUN, TAG_STUDY

    if bool(args.synset) == bool(args.from_study):
        raise DDSearchError("give the proxy set with exactly one of --synset FILE|runs:/<run_id>/synset.safetensors "
                            "and --from-study NAME")
    if args.synset and args.synset.startswith("runs:/"):
        lookup.parse_runs_uri(args.synset)  # a malformed source is named before the store is looked at
    if args.from_study or args.synset.startswith("runs:/"):
        store.check_store_exists(uri)
    if args.from_study:
        best = lookup.best_study_trial(uri, args.from_study, args.study_experiment)
        print(f"study {args.from_study!r}: best trial {best['run_name'] or best['run_id']} "
              f"({best['metric']} {best['score']:.4f})")
        path = lookup.download_run_artifact(uri, best["source"], workdir)
        tags = {TAG_STUDY: args.from_study, TAG_PROXY_RUN: best["run_id"]}
        return path, best["source"], tags
    if args.synset.startswith("runs:/"):
        path = lookup.download_run_artifact(uri, args.synset, workdir)
        return path, args.synset, {TAG_PROXY_RUN: lookup.parse_runs_uri(args.synset)[0]}
    return Path(args.synset), str(args.synset), {}


def run(args: argparse.Namespace) -> int:
    from ddsearch.augment import DSA
    from ddsearch.data import load_dataset
    from ddsearch.nas.ranking import run_nas
    from ddsearch.nas.report import log_outcome, print_table, summary_lines
    from ddsearch.nas.spaces import resolve_space
    from ddsearch.study_data import resolve_device
    from ddsearch.paths import check_creatable_dir, check_output_file
    from ddsearch.synset import SynsetHeader, SyntheticSet, check_image_size
    from ddsearch.tracking import store
    from ddsearch.tracking.study_runs import NAS_KIND, TAG_DATASET, TAG_PROXY, StudyRuns

    settings = settings_from_args(args)  # bad numbers fail before anything is loaded
    candidates = resolve_space(args.space, args.k, args.seed)
    parallel = parallel_from_args(args)
    if args.json:
        check_output_file(args.json, "--json file")  # before the search, not after it
    if settings.truth_epochs > 0 and not args.no_cache:
        from ddsearch.nas.truth import default_cache_dir

        check_creatable_dir(args.cache_dir or default_cache_dir(), "ground-truth cache folder")
    uri = store.resolve_tracking_uri(args.tracking_uri, create=False)  # created once the proxy is checked
    store.check_reachable(uri)

    with tempfile.TemporaryDirectory(prefix="ddsearch-nas-") as tmp:
        path, source, tags = fetch_proxy(args, uri, Path(tmp))
        header = SynsetHeader.read(path)
        dataset = args.dataset or header.dataset
        if not dataset:
            raise DDSearchError(f"{source} does not name its dataset; pass --dataset")
        check_image_size(header, dataset, args.image_size)  # before the data set is loaded or resized
        if settings.dsa_strategy != "auto":
            DSA(settings.dsa_strategy)  # so is a misspelt --dsa, once the proxy is known to fit
        data = load_dataset(dataset, root=args.data_root, image_size=args.image_size, val_size=args.val_size,
                            device=resolve_device(args.device))
        proxy = SyntheticSet.load(path, expect=data)  # another dataset or shape: a clear error, before any run
    DSA(settings.strategy(data))
    store.check_writable(uri)

    label = proxy.method or "synset"
    space = args.space if args.space in ("seed22", "grid") else "list"
    runs = StudyRuns.in_experiment(uri, args.experiment)
    run_id = runs.create_run(f"nas-{data.name}-{label}-ipc{proxy.ipc}-{space}", NAS_KIND,
                             tags | {TAG_PROXY: source[:4000], TAG_DATASET: data.name})
    print(f"MLflow run {run_id} in {uri}")
    try:
        outcome = run_nas(proxy, data, candidates, settings, control=not args.no_control, cache_dir=args.cache_dir,
                          use_cache=not args.no_cache, parallel=parallel, progress=not args.quiet, proxy_source=source)
        params = {"dataset": data.name, "proxy": source, "proxy_method": proxy.method, "proxy_ipc": proxy.ipc,
                  "proxy_images": int(proxy.images.shape[0]), "space": args.space, "k": args.k,
                  "candidates": ",".join(outcome.candidates), "parallel": parallel is not None,
                  "device": str(data.device)}
        log_outcome(outcome, uri, run_id, params)
    except BaseException as err:
        runs.fail_after(run_id, err)
        raise
    runs.finish(run_id)

    print_table(outcome)
    print("\n".join(summary_lines(outcome)))
    if args.json:
        Path(args.json).write_text(json.dumps(outcome.summary(), indent=2, default=str))
    print(f"recorded in MLflow run {run_id}")
    return 0
