"""PAD: scheduler, parameter selection, gradients, expert cache, resume, and a digits run.

Everything runs on the CPU with scikit-learn's digits and small ConvNets; the expert cache lives
under pytest's tmp directories, never in ~/.cache.
"""

from __future__ import annotations

import copy
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from ddsearch.checkpoint import load_state, save_state
from ddsearch.config import study_from_dict
from ddsearch.methods.pad import PADSettings
from ddsearch.data import load_dataset
from ddsearch.errors import DDSearchError
from ddsearch.evaluate import TrainSettings, evaluate_synset
from ddsearch.methods import create_distiller
from ddsearch.methods.pad import (
    PAD,
    ParamLayout,
    active_indices,
    active_range,
    epoch_indices,
    get_experts,
    get_scores,
    kept_from,
    loss_ranked_matching_loss,
    matching_loss,
    selection_mask,
    sort_by_score,
)
from ddsearch.methods.pad import _cache
from ddsearch.methods.pad import experts as experts_mod
from ddsearch.methods.pad import scores as scores_mod
from ddsearch.models import get_network

pytestmark = pytest.mark.usefixtures("one_thread")

ARCH = "ConvNet-d2-w16-relu-instancenorm-avgpool"
ARCH32 = "ConvNet-d2-w32-relu-instancenorm-avgpool"


def tiny(cache: Path, **overrides) -> PADSettings:
    """Small, fast PAD settings for digits (8x8)."""
    base = dict(
        ipc=2, iterations=4, arch=ARCH, num_experts=2, expert_train_epochs=5, expert_batch=128,
        max_start_epoch=2, expert_epochs=2, syn_steps=3, batch_syn=8, score_models=1, score_epochs=1,
        init_ratio=0.5, add_end_epoch=2, rm_epoch_first=4, rm_epoch_second=4, cache_dir=str(cache),
    )
    return PADSettings(**(base | overrides))


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


@pytest.fixture(scope="module")
def cache(tmp_path_factory, digits) -> Path:
    """A cache with the experts of ``tiny()`` already built (shared by the module's tests)."""
    root = tmp_path_factory.mktemp("pad-cache")
    get_experts(digits, tiny(root), seed=0)
    return root


# ---- scheduler ----------------------------------------------------------------------------

SCHED = dict(max_start_epoch=4, init_ratio=0.5, add_end_epoch=4, rm_epoch_first=6, rm_easy_ratio_first=0.1,
             rm_epoch_second=8, rm_easy_ratio_second=0.3)
# (start, end) per epoch for class sizes 7, 20, 33, worked out by hand from the rules:
# end = floor((0.5 + 0.5 * e / 4) * n) before epoch 4, n after; start = floor(0.1 n) after epoch 6,
# floor(0.3 n) after epoch 8.
EXPECTED = {
    7: {0: (0, 3), 1: (0, 4), 2: (0, 5), 3: (0, 6), 4: (0, 7), 6: (0, 7), 7: (0, 7), 8: (0, 7), 9: (2, 7)},
    20: {0: (0, 10), 1: (0, 12), 2: (0, 15), 3: (0, 17), 4: (0, 20), 6: (0, 20), 7: (2, 20), 8: (2, 20), 9: (6, 20)},
    33: {0: (0, 16), 1: (0, 20), 2: (0, 24), 3: (0, 28), 4: (0, 33), 6: (0, 33), 7: (3, 33), 8: (3, 33), 9: (9, 33)},
}


def test_scheduler_picks_exact_subsets_for_uneven_classes() -> None:
    settings = PADSettings(**SCHED)
    sizes = (7, 20, 33)
    labels = torch.tensor(np.random.default_rng(0).permutation(np.repeat([0, 1, 2], sizes)))
    scores = torch.rand(len(labels), generator=torch.Generator().manual_seed(1))
    class_indices = [torch.nonzero(labels == c).flatten() for c in range(3)]
    ordered = sort_by_score(scores, class_indices)
    for c, n in enumerate(sizes):
        idx = class_indices[c]
        by_score = idx[np.argsort(scores[idx].numpy(), kind="stable")]
        assert torch.equal(ordered[c], by_score)  # ordered by score, not by index
        assert not torch.equal(ordered[c], idx)
        for epoch, (start, end) in EXPECTED[n].items():
            assert active_range(n, epoch, settings) == (start, end), (n, epoch)
            assert torch.equal(active_indices(ordered[c], epoch, settings), by_score[start:end])
    for epoch in (0, 9):
        picked = epoch_indices(ordered, epoch, settings)
        assert len(picked) == sum(EXPECTED[n][epoch][1] - EXPECTED[n][epoch][0] for n in sizes)
        assert len(set(picked.tolist())) == len(picked)


def test_easy_samples_leave_only_after_every_matched_epoch() -> None:
    """Removal inside the matched window is refused; the shipped studies at every IPC keep it out."""
    import sys

    from ddsearch.config import load_study

    with pytest.raises(ValueError, match="rm_epoch_first .5. is inside the matched epochs.*>= 6"):
        PADSettings(**(SCHED | dict(rm_epoch_first=5)))
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    try:
        from reproduce import IPC_OVERRIDES
    finally:
        sys.path.pop(0)
    root = Path(__file__).resolve().parents[1] / "studies"
    for name in ("mnist_pad.yaml", "mhist_pad.yaml"):
        for ipc, overrides in {10: [], **IPC_OVERRIDES["pad"]}.items():
            m = load_study(root / name, [f"method.ipc={ipc}", *overrides]).method
            last_matched = max(m.max_start_epoch, m.max_start_epoch_final or 0) + m.expert_epochs
            assert last_matched <= m.rm_epoch_first < m.expert_train_epochs, (name, ipc)


def test_scheduler_keeps_tiny_classes_and_handles_no_ramp() -> None:
    s = PADSettings(**(SCHED | dict(init_ratio=0.1, rm_easy_ratio_second=0.9)))
    assert active_range(1, 0, s) == (0, 1)  # floor(0.1) = 0, but a class never vanishes
    assert active_range(3, 9, s) == (2, 3)
    assert active_range(0, 0, s) == (0, 0)
    s0 = PADSettings(**(SCHED | dict(add_end_epoch=0)))
    assert active_range(10, 0, s0) == (0, 10)


# ---- parameter selection -------------------------------------------------------------------

def test_alpha_zero_keeps_all_and_half_drops_the_shallow_half() -> None:
    net = get_network(ARCH, 1, 10, 8)
    layout = ParamLayout.of(net)
    total = layout.total
    assert selection_mask(layout, 0.0).all()
    mask = selection_mask(layout, 0.5)
    assert not mask[: total // 2].any() and mask[total // 2 :].all()
    # Layer order: the first conv is entirely dropped, the classifier entirely kept.
    offsets = np.cumsum((0,) + layout.numels)
    first, last = layout.names.index("blocks.0.0.weight"), layout.names.index("classifier.weight")
    assert not mask[offsets[first] : offsets[first + 1]].any()
    assert mask[offsets[last] : offsets[last + 1]].all()

    g = torch.Generator().manual_seed(0)
    start, target = torch.randn(total, generator=g), torch.randn(total, generator=g)
    student = torch.randn(total, generator=g)
    shallow = student.clone()
    shallow[: total // 2] += 1.0
    deep = student.clone()
    deep[-1] += 1.0
    half = kept_from(total, 0.5)
    assert torch.equal(matching_loss(shallow, start, target, half), matching_loss(student, start, target, half))
    assert matching_loss(deep, start, target, half) != matching_loss(student, start, target, half)
    assert matching_loss(shallow, start, target, 0) != matching_loss(student, start, target, 0)
    expected = ((student - target)[half:] ** 2).sum() / ((start - target)[half:] ** 2).sum()
    assert torch.allclose(matching_loss(student, start, target, half), expected)


def test_loss_ranked_selection_drops_the_best_matched_entries() -> None:
    """The released code's rule: the alpha-fraction with the smallest error leaves both sums."""
    g = torch.Generator().manual_seed(1)
    total, drop = 400, 100
    start, target = torch.randn(total, generator=g), torch.randn(total, generator=g)
    student = (target + torch.randn(total, generator=g)).requires_grad_(True)
    err = (student.detach() - target).square()
    kept = err.argsort()[drop:]
    expected = err[kept].sum() / (start[kept] - target[kept]).square().sum()
    loss = loss_ranked_matching_loss(student, start, target, drop)
    assert torch.allclose(loss, expected)
    assert torch.allclose(loss_ranked_matching_loss(student, start, target, 0), matching_loss(student, start, target, 0))
    (grad,) = torch.autograd.grad(loss, student)
    dropped = err.argsort()[:drop]
    assert not grad[dropped].any() and grad[kept].ne(0).all()
    # Unlike the depth rule, what is kept follows the error, wherever it sits in the vector.
    assert dropped.min() < total // 4 < dropped.max()


def test_pad_uses_the_selection_rule_it_is_given(digits, cache) -> None:
    depth = PAD(tiny(cache, alpha=0.5), digits, seed=0, progress=False)
    ranked = PAD(tiny(cache, alpha=0.5, selection="loss"), digits, seed=0, progress=False)
    a = depth.matching_loss(expert=0, start_epoch=1)
    b = ranked.matching_loss(expert=0, start_epoch=1)
    assert torch.isfinite(a) and torch.isfinite(b) and not torch.allclose(a, b)


# ---- gradients ------------------------------------------------------------------------------

def test_matching_loss_reaches_images_lr_and_labels(digits, cache) -> None:
    pad = PAD(tiny(cache), digits, seed=0, progress=False)
    assert pad.labels.is_floating_point() and pad.labels.requires_grad
    loss = pad.matching_loss(expert=0, start_epoch=1)
    loss.backward()
    for name, tensor in (("images", pad.images), ("syn_lr", pad.syn_lr), ("labels", pad.labels)):
        assert tensor.grad is not None, name
        assert torch.isfinite(tensor.grad).all(), name
        assert tensor.grad.abs().sum() > 0, name
    # And a step really moves all three.
    pad = PAD(tiny(cache, skip_threshold=None, lr_lr=1e-3), digits, seed=0, progress=False)
    before = [pad.images.detach().clone(), pad.labels.detach().clone(), pad.syn_lr.detach().clone()]
    pad.step()
    after = [pad.images, pad.labels, pad.syn_lr]
    assert all(not torch.equal(a, b.detach()) for a, b in zip(before, after))


def test_herding_start_keeps_the_controls_images_with_the_experts_soft_labels(digits, cache) -> None:
    from ddsearch.coreset import embedding_network, select_coreset

    pad = PAD(tiny(cache, init="herding", init_embed_epochs=1), digits, seed=0, progress=False)
    control = select_coreset(digits, 2, "herding", embedding_network(digits, ARCH, epochs=1, seed=0))
    assert torch.equal(pad.images.detach(), control.images)
    assert pad.labels.shape == (2 * digits.num_classes, digits.num_classes) and pad.labels.is_floating_point()
    hard = pad.labels.detach().argmax(dim=1)
    assert (hard == control.labels).float().mean() >= 0.5  # the experts' logits mostly agree with the classes


def test_pad_keeps_the_deep_part_by_alpha(digits, cache) -> None:
    for alpha in (0.0, 0.5):
        pad = PAD(tiny(cache, alpha=alpha), digits, seed=0, progress=False)
        assert pad.keep_from == int(alpha * pad.layout.total)
        assert pad.describe()["kept_params"] == pad.layout.total - pad.keep_from


def test_skip_threshold_leaves_everything_unchanged(digits, cache) -> None:
    pad = PAD(tiny(cache, skip_threshold=1e-12), digits, seed=0, progress=False)
    before = [t.detach().clone() for t in (pad.images, pad.labels, pad.syn_lr)]
    loss = pad.step()
    assert float(loss) > 1e-12
    assert all(torch.equal(a, b.detach()) for a, b in zip(before, (pad.images, pad.labels, pad.syn_lr)))


def test_start_epoch_upper_bound_grows(digits, cache) -> None:
    s = tiny(cache, max_start_epoch=1, max_start_epoch_final=3, iterations=10, rm_epoch_first=5, rm_epoch_second=5)
    pad = PAD(s, digits, seed=0, progress=False)
    assert [pad.start_epoch_upper(i) for i in (0, 4, 5, 10, 20)] == [1, 1, 2, 3, 3]


# ---- cache --------------------------------------------------------------------------------

def test_cache_hit_does_not_retrain(digits, cache, monkeypatch) -> None:
    def boom(*args, **kwargs):
        raise AssertionError("an expert was retrained on a cache hit")

    monkeypatch.setattr(experts_mod, "train_expert", boom)
    monkeypatch.setattr(scores_mod, "compute_scores", boom)
    buffer = get_experts(digits, tiny(cache), seed=0)
    assert buffer.built == 0 and len(buffer) == 2
    assert buffer.trajectories[0].shape == (6, buffer.layout.total)
    pad = create_distiller(tiny(cache), digits, seed=0)  # the registry path, as the runner uses it
    assert isinstance(pad, PAD)
    # A setting that shapes the experts is a different key: it must train (and here, fail loudly).
    with pytest.raises(AssertionError, match="retrained"):
        get_experts(digits, tiny(cache, lr_teacher=0.02), seed=0)


def test_cache_fields_are_what_shapes_the_cache_keys(digits, cache) -> None:
    """``CACHE_FIELDS`` (the searched keys `ddsearch experts` warns about) held to the real cache keys."""
    base = tiny(cache)

    def keys(settings: PADSettings) -> tuple[str, str]:
        return (_cache.make_key(experts_mod.expert_description(digits, settings, seed=0)),
                _cache.make_key(scores_mod.score_description(digits, settings, seed=0)))

    shaping = {"arch": ARCH32, "lr_teacher": 0.02, "expert_train_epochs": 6, "expert_batch": 64,
               "expert_momentum": 0.5, "expert_weight_decay": 1e-4, "expert_sam_rho": 0.05, "init_ratio": 0.6,
               "add_end_epoch": 3, "rm_epoch_first": 5, "rm_easy_ratio_first": 0.2, "rm_epoch_second": 5,
               "rm_easy_ratio_second": 0.3, "score": "grand", "score_models": 2, "score_epochs": 2,
               "dsa_strategy": "none"}
    assert set(shaping) == experts_mod.CACHE_FIELDS - {"num_experts"}  # num_experts: how many, not which
    for field, value in shaping.items():
        assert keys(base.model_copy(update={field: value})) != keys(base), field
    assert keys(base.model_copy(update={"num_experts": 5})) == keys(base)  # expert k's file is the same
    not_shaping = {"lr_img": 10.0, "syn_steps": 7, "alpha": 0.5, "ipc": 3, "iterations": 9,
                   "expert_epochs": 1, "max_start_epoch": 1, "lr_y": 3.0, "soft_labels": False}
    assert not set(not_shaping) & experts_mod.CACHE_FIELDS
    for field, value in not_shaping.items():
        assert keys(base.model_copy(update={field: value})) == keys(base), field


def test_scores_are_cached_and_el2n_matches_definition(digits, cache, monkeypatch) -> None:
    settings = tiny(cache)
    scores, path, cached = get_scores(digits, settings, seed=0)
    assert cached and path.is_file() and scores.shape == (digits.train_x.shape[0],)
    assert (scores >= 0).all() and (scores <= 2**0.5 + 1e-6).all()
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.0, 0.0, 0.0]])
    p = logits.softmax(1)
    manual = torch.stack([(p[0] - torch.tensor([1.0, 0, 0])).norm(), (p[1] - torch.tensor([0, 0, 1.0])).norm()])
    assert torch.allclose(scores_mod.el2n(logits, torch.tensor([0, 2])), manual)


def test_grand_matches_per_sample_loop() -> None:
    torch.manual_seed(0)
    net = get_network(ARCH, 1, 10, 8)
    x, y = torch.randn(5, 1, 8, 8), torch.randint(0, 10, (5,))
    fast = scores_mod.grand(net, x, y, chunk=2)
    slow = []
    for i in range(5):
        net.zero_grad()
        torch.nn.functional.cross_entropy(net(x[i : i + 1]), y[i : i + 1]).backward()
        slow.append(torch.sqrt(sum(p.grad.square().sum() for p in net.parameters())))
    assert torch.allclose(fast, torch.stack(slow), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_corrupt_expert_file_is_detected_and_rebuilt(digits, cache, tmp_path, monkeypatch, damage) -> None:
    root = tmp_path / "cache"
    shutil.copytree(cache, root)
    settings = tiny(root)
    path = experts_mod.expert_dir(digits, settings, 0) / "expert_001.safetensors"
    raw = bytearray(path.read_bytes())
    if damage == "flip":
        raw[-100] ^= 0xFF  # inside the tensor data: only the checksum can tell
    else:
        raw = raw[: len(raw) // 2]
    path.write_bytes(bytes(raw))

    with pytest.raises(DDSearchError, match="corrupt"):
        get_experts(digits, settings, seed=0, build=False)

    calls = []
    real = experts_mod.train_expert
    monkeypatch.setattr(experts_mod, "train_expert", lambda *a, **k: calls.append(a[4]) or real(*a, **k))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        buffer = get_experts(digits, settings, seed=0)
    assert calls == [1]  # only the damaged expert is retrained
    assert any("corrupt" in str(w.message) for w in caught)
    assert buffer.built == 1 and torch.isfinite(buffer.trajectories[1]).all()
    get_experts(digits, settings, seed=0, build=False)  # and now it verifies


def test_missing_experts_without_build_is_a_clear_error(digits, tmp_path) -> None:
    with pytest.raises(DDSearchError, match="ddsearch experts"):
        get_experts(digits, tiny(tmp_path), seed=0, build=False)


# ---- resume -------------------------------------------------------------------------------

def test_resumed_run_is_bit_identical(digits, cache, tmp_path) -> None:
    settings = tiny(cache, skip_threshold=None, lr_lr=1e-4)
    straight = PAD(settings, digits, seed=3, progress=False)
    for _ in range(4):
        straight.step()

    first = PAD(settings, digits, seed=3, progress=False)
    for _ in range(2):
        first.step()
    path = save_state(first.state_dict(), tmp_path / "state.safetensors")
    del first
    resumed = PAD(settings, digits, seed=3, progress=False)
    resumed.load_state_dict(load_state(path))
    for _ in range(2):
        resumed.step()

    assert resumed.iteration == straight.iteration == 4
    a, b = straight.synset(), resumed.synset()
    assert torch.equal(a.images, b.images)
    assert torch.equal(a.labels, b.labels)
    assert a.lr == b.lr
    assert not torch.equal(a.images, PAD(settings, digits, seed=3, progress=False).images)  # it did move


def test_checkpoint_from_other_experts_is_refused(digits, cache, tmp_path) -> None:
    state = PAD(tiny(cache), digits, seed=0, progress=False).state_dict()
    state["extra"]["experts_key"] = "something-else"
    with pytest.raises(DDSearchError, match="other expert trajectories"):
        PAD(tiny(cache), digits, seed=0, progress=False).load_state_dict(state)


# ---- bad input ----------------------------------------------------------------------------

@pytest.mark.parametrize(
    "method, message",
    [
        ({"syn_steps": 0}, "syn_steps must be at least 1"),
        ({"alpha": 1.0}, r"alpha must be in \[0, 1\)"),
        ({"alpha": -0.1}, r"alpha must be in \[0, 1\)"),
        ({"max_start_epoch": 19, "expert_epochs": 2, "expert_train_epochs": 20}, "beyond the 20 epochs"),
        ({"max_start_epoch": 5, "max_start_epoch_final": 30}, "beyond the 20 epochs"),
        ({"max_start_epoch": 5, "max_start_epoch_final": 3}, "max_start_epoch_final"),
    ],
)
def test_bad_settings_get_clear_errors(method, message) -> None:
    with pytest.raises(DDSearchError, match=message) as err:
        study_from_dict({"method": {"name": "pad", **method}})
    assert "method" in str(err.value)


def test_commands_refuse_other_methods(tmp_path) -> None:
    from ddsearch.commands.pad_cache import experts_command

    study = tmp_path / "s.yaml"
    study.write_text("dataset: {name: digits}\nmethod: {name: datadam}\n")
    with pytest.raises(DDSearchError, match="method.name: pad"):
        experts_command(str(study), [])


def test_commands_and_runner_with_a_pad_study(digits, cache, tmp_path, capsys) -> None:
    from ddsearch.config import load_study
    from ddsearch.commands.pad_cache import experts_command, scores_command
    from ddsearch.runner import run_distillation

    s = tiny(cache)
    method = {k: v for k, v in s.model_dump().items()}
    study_file = tmp_path / "pad.yaml"
    import yaml

    study_file.write_text(yaml.safe_dump({
        "name": "pad_test", "device": "cpu", "dataset": {"name": "digits"}, "method": method,
        "evaluation": {"arch": ARCH, "eval_every": 2, "epochs": 3, "final_epochs": 3, "final_repeats": 1},
        "evaluators": [ARCH],
    }))
    assert scores_command(str(study_file), []) == 0
    assert experts_command(str(study_file), []) == 0
    out = capsys.readouterr().out
    assert "cache hit" in out and "2 cached, 0 trained" in out

    study = load_study(study_file)
    outcome = run_distillation(study, digits, progress=False)
    assert [p.iteration for p in outcome.evals] == [2, 4]
    assert outcome.synset.soft and outcome.synset.lr is not None
    assert outcome.table[0].arch == ARCH


# ---- does it distill? -----------------------------------------------------------------------

@pytest.mark.slow
def test_short_digits_run_beats_its_real_init(digits, tmp_path) -> None:
    """A short CPU run must beat the same evaluator (same seeds) on its own starting set."""
    settings = PADSettings(
        ipc=5, iterations=80, arch=ARCH32, num_experts=3, expert_train_epochs=10, expert_batch=64,
        max_start_epoch=4, max_start_epoch_final=6, expert_epochs=2, syn_steps=10, lr_img=100,
        score_models=1, score_epochs=2, add_end_epoch=4, rm_epoch_first=8, rm_epoch_second=9,
        cache_dir=str(tmp_path),
    )
    torch.manual_seed(0)
    pad = PAD(settings, digits, seed=0, progress=False)
    protocol = TrainSettings(epochs=150, dsa_strategy="color_crop_cutout_scale_rotate")

    def accuracy(synset) -> float:
        return evaluate_synset(synset, digits, ARCH32, protocol, repeats=2, seed=0).test_mean

    before = accuracy(pad.synset())
    for _ in range(settings.iterations):
        pad.step()
    after = accuracy(pad.synset())
    print(f"digits ipc 5: real init {before:.4f} -> PAD {after:.4f} (lr {pad.learned_lr():.4f})")
    assert after > before + 0.02


@pytest.mark.slow
def test_parallel_workers_build_the_same_experts(digits, cache, tmp_path) -> None:
    """workers=2 trains in spawned processes; each expert depends on its own seed only."""
    parallel = get_experts(digits, tiny(tmp_path, workers=2), seed=0)
    sequential = get_experts(digits, tiny(cache), seed=0)
    assert parallel.built == 2 and sequential.built == 0
    for a, b in zip(parallel.trajectories, sequential.trajectories):
        assert torch.equal(a, b)


# ---- benchmarks/pad_from_start.py: variants from one starting state ----------------------------

def test_variants_run_from_one_restored_state(digits, cache) -> None:
    from conftest import import_benchmark

    bench = import_benchmark("pad_from_start")
    pad = PAD(tiny(cache, skip_threshold=None), digits, seed=0, progress=False)
    base, state = pad.settings, copy.deepcopy(pad.state_dict())
    variant = bench.variant_settings("lr_img=10;selection=loss;syn_steps=2", base)
    assert (variant.lr_img, variant.selection, variant.syn_steps) == (10.0, "loss", 2)
    assert variant.model_dump() | {"lr_img": base.lr_img, "selection": base.selection, "syn_steps": base.syn_steps} \
        == base.model_dump()
    for bad in ("no_such_setting=1", "selection=lossy", "alpha=1.5"):
        with pytest.raises(DDSearchError, match="--variant"):
            bench.variant_settings(bad, base)
    with pytest.raises(DDSearchError, match="beyond"):
        bench.run_variant(pad, state, base, "expert_epochs=9", 4)

    first = bench.run_variant(pad, state, base, "lr_img=100", 4)
    images = pad.images.detach().clone()
    other = bench.run_variant(pad, state, base, "lr_img=10", 4)
    assert other["image_drift"] < first["image_drift"]  # a smaller image lr moves the images less
    again = bench.run_variant(pad, state, base, "lr_img=100", 4)
    assert torch.equal(pad.images.detach(), images)  # same start, same stream: the same run
    assert again["loss_quarters"] == first["loss_quarters"] and len(first["loss_quarters"]) == 4
    assert base.lr_img == 100.0 and base.selection == "depth"  # variants never change the base settings


# ---- benchmarks/reference_pad.py: ours beside the authors' code --------------------------------

def test_ours_starts_from_the_references_start_when_paired(digits, cache) -> None:
    from conftest import import_benchmark

    bench = import_benchmark("reference_pad")
    own = PAD(tiny(cache, skip_threshold=None), digits, seed=0, progress=False)
    theirs = (torch.randn_like(own.images), torch.randn_like(own.labels))
    alone = bench.run_ours(own, 2, None)
    paired = bench.run_ours(PAD(tiny(cache, skip_threshold=None), digits, seed=0, progress=False), 2, theirs)
    assert torch.equal(paired["start"][0], theirs[0]) and torch.equal(paired["start"][1], theirs[1])
    assert not torch.equal(alone["start"][0], theirs[0])
    assert not torch.equal(paired["end"][0], theirs[0])  # it then distils from there
    assert paired["seconds_per_iteration"] > 0 and paired["precision"] == own.precision
