"""Static checks of the container set-up, and the security promises it relies on."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
import yaml

from conftest import REPO_ROOT

DOCKER = REPO_ROOT / "docker"


def readme_install_command() -> str:
    """The install half of the README's first command."""
    text = (REPO_ROOT / "README.md").read_text()
    first_block = re.search(r"```bash\n(.+?)\n```", text, re.S).group(1)
    return first_block.split("&&")[0].strip()


def test_dockerfile_installs_like_the_readme() -> None:
    install = readme_install_command()
    assert install == "pip install -e ."
    dockerfile = (DOCKER / "Dockerfile").read_text()
    run_lines = [line for line in dockerfile.splitlines() if "pip install" in line]
    assert any(install in line for line in run_lines), run_lines
    assert re.search(r"^USER (?!root)\w+", dockerfile, re.M), "the image must not run as root"
    # dependencies are installed from pyproject.toml before the source is copied (layer cache)
    assert dockerfile.index("COPY --chown=ddsearch:ddsearch pyproject.toml") < dockerfile.index("COPY --chown=ddsearch:ddsearch ddsearch ")


def test_compose_publishes_only_the_ui_on_localhost() -> None:
    compose = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    services = compose["services"]
    assert {"postgres", "mlflow", "ray-head", "ray-worker"} <= services.keys()
    published = {name: svc["ports"] for name, svc in services.items() if svc.get("ports")}
    assert list(published) == ["mlflow"]
    (port,) = published["mlflow"]
    assert port.startswith("${MLFLOW_BIND:-127.0.0.1}:")
    assert "--serve-artifacts" in services["mlflow"]["command"]
    assert "postgresql://" in services["mlflow"]["command"]
    gpus = services["ray-worker"]["deploy"]["resources"]["reservations"]["devices"][0]
    assert gpus["capabilities"] == ["gpu"]
    for name in ("mlflow", "ray-head", "ray-worker"):
        assert "shared:/shared" in services[name]["volumes"]


def test_compose_takes_secrets_from_the_environment() -> None:
    text = (DOCKER / "compose.yaml").read_text()
    assert "POSTGRES_PASSWORD: ${POSTGRES_PASSWORD:?" in text
    assert not re.search(r"PASSWORD[:=]\s*[\"']?(?!\$\{)\w", text), "no literal passwords in compose.yaml"
    assert "docker/.env" in (REPO_ROOT / ".gitignore").read_text()


@pytest.mark.skipif(
    shutil.which("docker") is None or subprocess.run(["docker", "compose", "version"], capture_output=True).returncode != 0,
    reason="the docker CLI here has no compose plugin",
)
def test_docker_compose_config_validates() -> None:
    result = subprocess.run(
        ["docker", "compose", "-f", str(DOCKER / "compose.yaml"), "config", "--quiet"],
        capture_output=True, text=True, env={"POSTGRES_PASSWORD": "x", "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr


def test_no_code_path_unpickles_files() -> None:
    """Synsets, checkpoints and buffers are safetensors; nothing may call pickle or a bare torch.load."""
    offenders = []
    for path in (REPO_ROOT / "ddsearch").rglob("*.py"):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if re.search(r"\bpickle\.loads?\(|\bcloudpickle\.loads?\(", line) or (
                "torch.load(" in line and "weights_only=True" not in line
            ):
                offenders.append(f"{path.relative_to(REPO_ROOT)}:{number}: {line.strip()}")
    assert not offenders, offenders


def test_ui_binds_localhost_by_default() -> None:
    from ddsearch.cli import build_parser

    args = build_parser().parse_args(["ui"])
    assert args.host == "127.0.0.1"
