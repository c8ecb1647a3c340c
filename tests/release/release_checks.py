"""Helpers for the release tests: where the repository and the linters are, the workflows parsed."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = REPO_ROOT / ".github" / "workflows"
CI_WORKFLOW = WORKFLOWS / "ci.yml"
IMAGE_WORKFLOW = WORKFLOWS / "image.yml"
NODE_WORKFLOW = WORKFLOWS / "node.yml"
RELEASE_WORKFLOW = WORKFLOWS / "release.yml"
DOCKERFILE = REPO_ROOT / "Dockerfile"
CHART = REPO_ROOT / "deploy" / "helm" / "ecr-token-webhook"
RELEASE_SCRIPTS = REPO_ROOT / "scripts" / "release"

# What the linters said about themselves, for the summary at the end of the run.
LINTERS: dict[str, str] = {}


def tool(name: str) -> str:
    """Path of a linter: the one installed beside this Python (scripts/test.sh's .venv) first,
    then PATH. Fails, never skips, when there is none."""
    beside = Path(sys.executable).parent / name
    if beside.is_file():
        return str(beside)
    found = shutil.which(name)
    if found:
        return found
    pytest.fail(
        f"{name} not found beside {sys.executable} nor on PATH: "
        "install the test tools with scripts/test.sh (from the lock, tests/requirements.txt)"
    )


def version_of(name: str, path: str, *args: str, pattern: str) -> str:
    out = subprocess.run([path, *args], capture_output=True, text=True, timeout=60).stdout
    m = re.search(pattern, out)
    assert m, f"cannot read {name}'s version from: {out!r}"
    return m.group(1)


def load_workflow(path: Path) -> dict:
    wf = yaml.safe_load(path.read_text())
    # YAML 1.1 reads the key `on` as the boolean true.
    if True in wf:
        wf["on"] = wf.pop(True)
    return wf


def steps(wf: dict):
    """(job id, step) for every step of every job."""
    for job_id, job in wf["jobs"].items():
        for step in job.get("steps", []):
            yield job_id, step


def step_using(wf: dict, action: str, job: str | None = None) -> list[dict]:
    """Steps whose `uses:` is the given owner/repo (any ref)."""
    return [
        s
        for j, s in steps(wf)
        if (job is None or j == job) and s.get("uses", "").split("@")[0].lower() == action.lower()
    ]


def run_text(wf: dict, job: str) -> str:
    """All run: scripts of a job, joined."""
    return "\n".join(s["run"] for j, s in steps(wf) if j == job and "run" in s)
