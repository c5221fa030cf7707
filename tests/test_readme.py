"""The README is a contract: its commands and its study-key table must match the code."""

from __future__ import annotations

import re

import pytest

from conftest import REPO_ROOT, import_benchmark
from ddsearch.config_docs import study_keys_markdown

README = (REPO_ROOT / "README.md").read_text()


def test_readme_opens_with_the_two_setup_commands() -> None:
    blocks = re.findall(r"```bash\n(.+?)\n```", README, re.S)
    assert blocks[0] == "pip install -e . && ddsearch tune studies/quickstart.yaml"
    assert blocks[1] == 'pip install -e ".[test]" && python -m pytest -q'
    ci = (REPO_ROOT / ".ci" / "run").read_text()
    assert blocks[1] in ci.splitlines()
    assert (REPO_ROOT / "studies" / "quickstart.yaml").is_file()


def test_study_key_table_is_current() -> None:
    table = README.split("<!-- study-keys:start -->")[1].split("<!-- study-keys:end -->")[0].strip()
    assert table == study_keys_markdown().strip(), "regenerate with: python -m ddsearch.config_docs"


def test_every_ready_made_study_validates() -> None:
    """Shipped studies must load: a typo in one would only surface on a user's GPU cluster."""
    from ddsearch.config import load_study
    from ddsearch.models import get_network

    studies = sorted((REPO_ROOT / "studies").glob("*.yaml"))
    assert {"quickstart", "mnist_datadam", "mnist_pad", "mhist_datadam", "mhist_pad"} <= {p.stem for p in studies}
    sizes = {"digits": 8, "mnist": 28, "mhist": 224}
    for path in studies:
        study = load_study(path)
        assert study.name == path.stem
        size = study.dataset.image_size or sizes[study.dataset.name]
        channels = 3 if study.dataset.name == "mhist" else 1
        for arch in {study.method.arch, study.evaluation.arch, *study.evaluators}:
            get_network(arch, channels, 2 if study.dataset.name == "mhist" else 10, size)


def test_results_block_is_generated_from_the_json() -> None:
    """No hand-typed number in the reproduction block: it is exactly what reproduce.py makes of its JSON."""
    reproduce = import_benchmark("reproduce")
    records = reproduce.Records(REPO_ROOT / "benchmarks" / "results" / "reproduce_cpu.json", force=False)
    table = reproduce.markdown(records.items, "Reproduction table, mnist (reproduce_cpu)",
                               brief="benchmarks/results/reproduce_cpu.md")
    block = README.split("<!-- reproduce:begin -->")[1].split("<!-- reproduce:end -->")[0].strip()
    assert block == reproduce.readme_block(table).strip(), 'regenerate with: python benchmarks/reproduce.py --name reproduce_cpu --stages ""'


def test_nas_block_is_generated_from_the_json() -> None:
    import json

    bench = import_benchmark("bench_nas")
    payload = json.loads((REPO_ROOT / "benchmarks" / "results" / "nas_mnist.json").read_text())
    if "truth_file" in payload:
        expected = bench.readme_lines(payload)
    else:  # the proxy comparison waits for the truth: the block shows how far the truth is
        expected = bench.truth_progress_lines(bench.TRUTH_FILE, bench.CANDIDATES)
    block = README.split("<!-- nas:begin -->")[1].split("<!-- nas:end -->")[0].strip()
    assert block == "\n".join(expected).strip(), "regenerate with: python benchmarks/bench_nas.py --stage report"


@pytest.mark.parametrize("table, least", [
    (README.split("## Results", 1)[1].split("### Reproduction table", 1)[0], 6),
    ((REPO_ROOT / "docs" / "results.md").read_text(), 20),
], ids=["README", "docs/results.md"])
def test_hand_written_results_rows_cite_files_that_hold_their_accuracies(table: str, least: int) -> None:
    """Each row of a measured-results table names files that exist and hold its bold 'mean ± std'."""
    rows = [line for line in table.splitlines() if line.startswith("| ") and not line.startswith(("| what", "| ---"))]
    assert len(rows) >= least
    results = REPO_ROOT / "benchmarks" / "results"
    for row in rows:
        measured, cited = [cell.strip() for cell in row.strip().strip("|").split("|")][-2:]
        names = re.findall(r"`([^`]+\.(?:md|json))`", cited)
        assert names, f"a results row cites no file: {row[:80]}"
        missing = [name for name in names if not (results / name).is_file()]
        assert not missing, f"cited but absent from benchmarks/results: {missing}"
        held = "".join((results / name).read_text() for name in names)
        for bold in re.findall(r"\*\*([^*]+)\*\*", measured):
            for figure in re.findall(r"\d+\.\d+ ± \d+\.\d+", bold):
                assert figure in held, f"{figure} is not in {names}"
