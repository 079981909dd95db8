"""``benchmarks/gpu_runs.sh`` (the prepared GPU runs) parses, names real presets, and can find its wheels."""

from __future__ import annotations

import importlib.metadata
import re
import shutil
import subprocess

import pytest

from helpers import REPO

SCRIPT = REPO / "benchmarks" / "gpu_runs.sh"


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_the_script_parses_and_refuses_bad_arguments():
    assert subprocess.run(["bash", "-n", str(SCRIPT)]).returncode == 0
    usage = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True)
    assert usage.returncode == 2 and "usage:" in usage.stderr
    wrong = subprocess.run(["bash", str(SCRIPT), "run", "yago15k"], capture_output=True, text=True)
    assert wrong.returncode == 2 and "db15k or fb15k-237" in wrong.stderr
    for env, message in (({"VARIANTS": "structure visual"}, "got 'visual'"), ({"SEEDS": "1 two"}, "got 'two'")):
        refused = subprocess.run(["bash", str(SCRIPT), "run", "db15k"], capture_output=True, text=True,
                                 env={"PATH": "/usr/bin:/bin", **env})
        assert refused.returncode == 2 and message in refused.stderr  # before any install or training


def test_its_presets_exist_and_its_wheels_are_installed_here():
    text = SCRIPT.read_text(encoding="utf-8")
    for dataset in ("db15k", "fb15k-237"):
        assert (REPO / "imf_cli" / "presets" / f"{dataset}.yaml").is_file()
        assert (REPO / "imf_cli" / "presets" / f"{dataset}-structure.yaml").is_file()
    names = re.search(r"WHEEL_NAMES=\(([^)]*)\)", text).group(1).split()
    assert "sqlite-utils" in names and "typer" in names
    for name in names:  # `prepare` downloads the versions installed here
        assert importlib.metadata.version(name)
    assert "/.gpu/" in (REPO / ".gitignore").read_text(encoding="utf-8").splitlines()


def test_every_requirement_of_a_carried_package_is_carried_or_in_the_gpu_image():
    """The device image lacked pydantic, which typer 0.29 requires: the first GPU call of 2026-12-04 failed
    with ModuleNotFoundError before training anything."""
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    text = SCRIPT.read_text(encoding="utf-8")
    carried = re.search(r"WHEEL_NAMES=\(([^)]*)\)", text).group(1).split()
    image = re.search(r"IMAGE_PACKAGES=\(([^)]*)\)", text).group(1).split()
    known = {canonicalize_name(name) for name in carried + image}
    missing = []
    for name in carried:
        for line in importlib.metadata.requires(name) or []:
            requirement = Requirement(line)
            if requirement.marker is not None and not requirement.marker.evaluate({"extra": ""}):
                continue  # an extra, or another platform's
            if canonicalize_name(requirement.name) not in known:
                missing.append(f"{name} requires {requirement.name}")
    assert not missing


def test_no_bare_wait_while_the_gpu_sampler_runs():
    """A bare ``wait`` waits for every background job, the never-ending nvidia-smi sampler too: a device
    call hung on one until its time limit and brought nothing back."""
    lines = [line.split("#")[0].strip() for line in SCRIPT.read_text().splitlines()]
    start = next(i for i, line in enumerate(lines) if line == "local sampler=$!")
    stop = next(i for i, line in enumerate(lines) if line.startswith('kill "$sampler"'))
    assert start < stop
    bare = [line for line in lines[start:stop] if re.search(r"(^|;|&&)\s*wait\s*($|;)", line)]
    assert bare == []
