"""The test install is reproducible: README's test command is what CI runs, and it pins every
package through ``.ci/constraints.txt`` (issue: CI went red when a registry published
transformers 5.25 between two runs)."""

from __future__ import annotations

import tomllib
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from tests.conftest import REPO_ROOT

CONSTRAINTS = REPO_ROOT / ".ci" / "constraints.txt"


def _readme_command(marker: str) -> str:
    lines = (REPO_ROOT / "README.md").read_text().splitlines()
    return lines[lines.index(marker) + 1].strip()


def _pins() -> dict[str, Version]:
    pins = {}
    for line in CONSTRAINTS.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, version = line.partition("==")
            assert version, f"not an exact pin: {line!r}"
            pins[canonicalize_name(name)] = Version(version)
    return pins


def test_ci_runs_the_readmes_test_command_with_the_pins() -> None:
    readme = _readme_command("# 2. set up and pass the tests")
    ci = (REPO_ROOT / ".ci" / "run").read_text()
    ci_line = next(
        line for line in ci.splitlines() if line.startswith("python3 -m venv") and "-c .ci" in line
    )
    assert ci_line.replace("pip install -q ", "pip install ") == readme
    assert "-c .ci/constraints.txt" in readme
    assert "-c .ci/constraints.txt" in _readme_command(
        "# 1. set up and run the main job (offline, CPU)"
    )


def test_every_dependency_is_pinned_inside_its_range() -> None:
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    pins = _pins()
    requirements = [Requirement(r) for r in project["dependencies"]]
    for extra, reqs in project["optional-dependencies"].items():
        if extra != "vllm":  # vllm pins its own torch/transformers: never in the test install
            requirements += [Requirement(r) for r in reqs if not r.startswith("agentflow-gym")]
    for req in requirements:
        name = canonicalize_name(req.name)
        assert name in pins, f"{req.name} is not pinned in .ci/constraints.txt"
        assert req.specifier.contains(pins[name], prereleases=True), (
            f"{req.name}=={pins[name]} is outside pyproject's range {req.specifier}"
        )
    assert "vllm" not in pins
