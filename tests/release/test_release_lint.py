"""The linters, run on what ships: actionlint (with shellcheck on every run: script) on the
workflows, hadolint on the Dockerfile, shellcheck on the scripts CI and a release run. Each must
report nothing; each is also shown a known mistake, so a linter that silently checks nothing
cannot pass. A missing linter fails the test (tests/requirements.txt installs all three)."""

from __future__ import annotations

import json
import re
import subprocess
import textwrap

import pytest

from release_checks import (
    DOCKERFILE,
    LINTERS,
    RELEASE_SCRIPTS,
    REPO_ROOT,
    WORKFLOWS,
    tool,
    version_of,
)


@pytest.fixture(scope="module")
def shellcheck() -> str:
    path = tool("shellcheck")
    LINTERS["shellcheck"] = version_of("shellcheck", path, "--version", pattern=r"version: (\S+)")
    return path


@pytest.fixture(scope="module")
def actionlint(shellcheck) -> list[str]:
    """The actionlint command line, with shellcheck named explicitly so it always runs."""
    path = tool("actionlint")
    version = version_of("actionlint", path, "-version", pattern=r"^(.+)")
    LINTERS["actionlint"] = (
        f"{version}; ran shellcheck {LINTERS['shellcheck']} ({shellcheck}) on every run: script"
    )
    # pyflakes checks Python run: scripts; the workflows have none, so it is switched off.
    return [path, "-shellcheck", shellcheck, "-pyflakes=", "-format", "{{json .}}"]


@pytest.fixture(scope="module")
def hadolint() -> str:
    path = tool("hadolint")
    LINTERS["hadolint"] = version_of("hadolint", path, "--version", pattern=r"Linter (\S+)")
    return path


def findings(cmd: list[str], cwd=REPO_ROOT) -> list[dict]:
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, timeout=120)
    try:
        found = json.loads(proc.stdout or "[]")
    except json.JSONDecodeError:
        pytest.fail(f"{cmd[0]} exited {proc.returncode}: {proc.stdout}{proc.stderr}")
    assert (proc.returncode == 0) == (found == []), (proc.returncode, proc.stdout, proc.stderr)
    return found


def test_actionlint_and_shellcheck_find_nothing_in_the_workflows(actionlint):
    workflows = sorted(str(p.relative_to(REPO_ROOT)) for p in WORKFLOWS.glob("*.y*ml"))
    assert workflows == [
        ".github/workflows/ci.yml", ".github/workflows/image.yml", ".github/workflows/node.yml",
        ".github/workflows/release.yml",
    ]
    assert findings(actionlint + workflows) == []


def test_actionlint_really_runs_shellcheck(actionlint, tmp_path):
    wf = tmp_path / ".github" / "workflows" / "bad.yml"
    wf.parent.mkdir(parents=True)
    wf.write_text(
        textwrap.dedent(
            """\
            name: bad
            on: push
            permissions: {}
            jobs:
              a:
                runs-on: ubuntu-24.04
                steps:
                  - run: echo $unquoted
                  - run: echo ${{ github.event.head_commit.message }}
            """
        )
    )
    kinds = {f["kind"] for f in findings(actionlint + [str(wf)], cwd=tmp_path)}
    # shellcheck's SC2086 on the first, actionlint's own script-injection check on the second.
    assert {"shellcheck", "expression"} <= kinds, kinds


def hadolint_findings(hadolint: str, dockerfile) -> list[dict]:
    # The repository's .hadolint.yaml (trusted registries), and every level down to style.
    return findings(
        [hadolint, "--config", str(REPO_ROOT / ".hadolint.yaml"), "--failure-threshold", "style",
         "--format", "json", str(dockerfile)]
    )


def test_hadolint_finds_nothing_in_the_dockerfile(hadolint):
    assert hadolint_findings(hadolint, DOCKERFILE) == []


def test_hadolint_really_checks(hadolint, tmp_path):
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM quay.io/example/image\nRUN apt-get install -y curl\n")
    codes = {f["code"] for f in hadolint_findings(hadolint, bad)}
    # Untagged image, untrusted registry, unpinned package, recommends pulled in.
    assert {"DL3006", "DL3026", "DL3008", "DL3015"} <= codes, codes


def test_every_hadolint_ignore_says_why():
    lines = DOCKERFILE.read_text().splitlines()
    ignores = [i for i, line in enumerate(lines) if re.match(r"\s*#\s*hadolint\s+ignore=", line)]
    for i in ignores:
        # The comment lines right above the ignore give the reason.
        above = lines[i - 1].strip() if i else ""
        assert above.startswith("#") and "hadolint" not in above and len(above) > 20, (
            f"Dockerfile:{i + 1} ignores a hadolint rule without a comment above saying why"
        )


def test_shellcheck_finds_nothing_in_the_ci_and_release_scripts(shellcheck):
    scripts = sorted(RELEASE_SCRIPTS.glob("*.sh")) + [REPO_ROOT / ".ci" / "run", REPO_ROOT / "scripts" / "test.sh"]
    assert len(scripts) >= 4
    proc = subprocess.run(
        [shellcheck, "--format", "json1", "--severity", "style", *map(str, scripts)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    comments = json.loads(proc.stdout)["comments"]
    assert comments == [] and proc.returncode == 0, comments
