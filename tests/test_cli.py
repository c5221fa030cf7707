"""Bad input gets one clear line on stderr, exit code 2 and no traceback; --debug shows one."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from conftest import assert_one_line_error, build_fake_mhist, run_cli
from ddsearch.cli import main
from ddsearch.synset import SyntheticSet





def write_study(tmp_path: Path, text: str) -> str:
    path = tmp_path / "study.yaml"
    path.write_text(text)
    return str(path)


def test_unknown_dataset_suggests(capsys) -> None:
    code, _, err = run_cli(capsys, "baseline", "--dataset", "mnsit")
    assert_one_line_error(code, err, "unknown dataset 'mnsit'", "mnist")


def test_unknown_architecture_suggests(capsys) -> None:
    code, _, err = run_cli(capsys, "baseline", "--dataset", "digits", "--arch", "ConvNetD")
    assert_one_line_error(code, err, "unknown architecture 'ConvNetD'", "did you mean 'ConvNetD")


def test_missing_mhist_explains_layout_and_request(capsys, tmp_path) -> None:
    code, _, err = run_cli(capsys, "baseline", "--dataset", "mhist", "--data-root", str(tmp_path / "nothing"))
    assert_one_line_error(code, err, "annotations.csv")
    assert "author" in err.lower()


def test_corrupt_image_and_missing_column(capsys, tmp_path) -> None:
    root = build_fake_mhist(tmp_path / "mhist", n_train=4, n_test=2, size=16)
    (root / "images" / "MHIST_001.png").write_bytes(b"not a png")
    code, _, err = run_cli(capsys, "baseline", "--dataset", "mhist", "--data-root", str(root), "--image-size", "16")
    assert_one_line_error(code, err, "MHIST_001.png")
    csv = root / "annotations.csv"
    csv.write_text(csv.read_text().replace("Partition", "Split"))
    code, _, err = run_cli(capsys, "baseline", "--dataset", "mhist", "--data-root", str(root))
    assert_one_line_error(code, err, "Partition")


def test_foreign_and_misfit_synsets(capsys, tmp_path) -> None:
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x00" * 64)
    code, _, err = run_cli(capsys, "evaluate", "--synset", str(junk))
    assert_one_line_error(code, err, "not a ddsearch synset")
    rgb = SyntheticSet(images=torch.zeros(10, 3, 8, 8), labels=torch.arange(10), num_classes=10, dataset="digits")
    code, _, err = run_cli(capsys, "evaluate", "--synset", str(rgb.save(tmp_path / "rgb.safetensors")))
    assert_one_line_error(code, err, "shape")


def test_ipc_larger_than_smallest_class(capsys, tmp_path) -> None:
    study = write_study(tmp_path, "dataset: {name: digits}\nmethod: {name: datadam, ipc: 5000}\n")
    code, _, err = run_cli(capsys, "distill", study, "--tracking-uri", f"sqlite:///{tmp_path}/db.sqlite")
    assert_one_line_error(code, err, "ipc 5000", "smallest class")
    assert not (tmp_path / "db.sqlite").exists()  # nothing half-written: no run was created


def test_invalid_yaml_and_unknown_key(capsys, tmp_path) -> None:
    code, _, err = run_cli(capsys, "distill", write_study(tmp_path, "method: {name: datadam\n"))
    assert_one_line_error(code, err, "invalid YAML", "line")
    code, _, err = run_cli(capsys, "distill", write_study(tmp_path, "method: {name: datadam, lambda_mdm: 0.1}\n"))
    assert_one_line_error(code, err, "method.lambda_mdm", "lambda_mmd")
    code, _, err = run_cli(capsys, "distill", write_study(tmp_path, "dataset: {name: digits}\nmethod: {name: datadam}\n"), "--set", "method.p=-1")
    assert_one_line_error(code, err, "method.p")


def test_debug_shows_the_traceback(tmp_path) -> None:
    from ddsearch.errors import DDSearchError

    with pytest.raises(DDSearchError):
        main(["--debug", "baseline", "--dataset", "mnsit"])


def test_help_everywhere(capsys) -> None:
    for command in ("datasets", "evaluate", "baseline", "distill", "tune", "report", "ui", "nas", "scores", "experts"):
        with pytest.raises(SystemExit) as caught:
            main([command, "--help"])
        assert caught.value.code == 0
        assert "usage: ddsearch" in capsys.readouterr().out
