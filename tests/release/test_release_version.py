"""scripts/release/check-version.sh: the release workflow's gate between a tag and the versions
in Cargo.toml, Cargo.lock and Chart.yaml. Run on the repository itself and on small repository
trees made here, with good and bad tags and files."""

from __future__ import annotations

import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml

from release_checks import CHART, RELEASE_SCRIPTS, REPO_ROOT

SCRIPT = RELEASE_SCRIPTS / "check-version.sh"


def run(script: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(script), *args], capture_output=True, text=True, timeout=60)


def repo_version() -> str:
    return tomllib.loads((REPO_ROOT / "Cargo.toml").read_text())["package"]["version"]


def test_the_repository_agrees_with_itself():
    """Independent parsers (tomllib, PyYAML) read the same versions the script compares."""
    version = repo_version()
    lock = tomllib.loads((REPO_ROOT / "Cargo.lock").read_text())
    [locked] = [p["version"] for p in lock["package"] if p["name"] == "ecr-token-webhook"]
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert locked == chart["version"] == str(chart["appVersion"]) == version
    for tag in (f"v{version}", f"refs/tags/v{version}"):
        proc = run(SCRIPT, tag)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout == f"{version}\n"


def test_the_repository_refuses_another_version():
    proc = run(SCRIPT, "v999.0.0")
    assert proc.returncode == 1
    for what in ("Cargo.toml", "Cargo.lock", "Chart.yaml version", "Chart.yaml appVersion"):
        assert what in proc.stderr
    assert proc.stdout == ""


CARGO_TOML = """\
[package]
name = "ecr-token-webhook"
version = "{cargo}"   # the crate's version
edition = "2024"

[dependencies]
serde = {{ version = "9.9.9", features = ["derive"] }}

[workspace.package]
version = "8.8.8"
"""

CARGO_LOCK = """\
version = 4

[[package]]
name = "aaa-before"
version = "7.7.7"

[[package]]
name = "ecr-token-webhook"
version = "{lock}"
dependencies = [
 "serde",
]

[[package]]
name = "serde"
version = "9.9.9"
"""

CHART_YAML = """\
apiVersion: v2
name: ecr-token-webhook
description: test
type: application
version: {chart}
appVersion: {app}
dependencies:
  - name: other
    version: 6.6.6
"""


def make_tree(tmp_path: Path, cargo="1.2.3", lock="1.2.3", chart="1.2.3", app='"1.2.3"') -> Path:
    """A repository tree with just what the script reads, and the script itself."""
    (tmp_path / "scripts" / "release").mkdir(parents=True)
    shutil.copy(SCRIPT, tmp_path / "scripts" / "release" / SCRIPT.name)
    (tmp_path / "Cargo.toml").write_text(CARGO_TOML.format(cargo=cargo))
    (tmp_path / "Cargo.lock").write_text(CARGO_LOCK.format(lock=lock))
    chart_dir = tmp_path / "deploy" / "helm" / "ecr-token-webhook"
    chart_dir.mkdir(parents=True)
    (chart_dir / "Chart.yaml").write_text(CHART_YAML.format(chart=chart, app=app))
    return tmp_path / "scripts" / "release" / SCRIPT.name


@pytest.mark.parametrize(
    "tag, files",
    [
        ("v1.2.3", {}),
        ("refs/tags/v1.2.3", {}),
        ("v1.2.3", {"app": "1.2.3"}),
        ("v1.2.3", {"app": "'1.2.3'"}),
        ("v1.2.3", {"app": '"1.2.3"  # the image tag', "chart": "1.2.3 # chart"}),
        ("v0.10.0-rc.1", dict(cargo="0.10.0-rc.1", lock="0.10.0-rc.1", chart="0.10.0-rc.1", app="0.10.0-rc.1")),
    ],
)
def test_good_tags_print_the_version(tmp_path, tag, files):
    script = make_tree(tmp_path, **files)
    proc = run(script, tag)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == tag.removeprefix("refs/tags/").removeprefix("v") + "\n"
    assert proc.stderr == ""


@pytest.mark.parametrize(
    "tag, files, blamed",
    [
        ("v1.2.3", {"cargo": "1.2.4"}, ["Cargo.toml [package] version is '1.2.4'"]),
        # Everything bumped but the lock file: cargo build --locked would refuse it.
        ("v1.2.4", {"cargo": "1.2.4", "chart": "1.2.4", "app": "1.2.4"},
         ["Cargo.lock version of ecr-token-webhook is '1.2.3'"]),
        ("v1.2.3", {"lock": "1.2.2"}, ["Cargo.lock version of ecr-token-webhook is '1.2.2'"]),
        ("v1.2.3", {"chart": "1.2.4"}, ["Chart.yaml version is '1.2.4'"]),
        ("v1.2.3", {"app": '"1.2.4"'}, ["Chart.yaml appVersion is '1.2.4'"]),
        ("v1.2.3", {"chart": "1.2.3-rc.1", "app": "1.2.3-rc.1"}, ["Chart.yaml version", "Chart.yaml appVersion"]),
        ("v2.0.0", {}, ["Cargo.toml", "Cargo.lock", "Chart.yaml version", "Chart.yaml appVersion"]),
    ],
)
def test_every_mismatch_is_reported(tmp_path, tag, files, blamed):
    script = make_tree(tmp_path, **files)
    proc = run(script, tag)
    assert proc.returncode == 1
    assert proc.stdout == ""
    for text in blamed:
        assert text in proc.stderr, proc.stderr
    # Only the files that disagree are blamed.
    assert proc.stderr.count(f"the tag {tag} says") == len(blamed)


@pytest.mark.parametrize(
    "tag",
    ["1.2.3", "v1.2", "v1.2.3.4", "v01.2.3", "v1.2.3+build.5", "v1.2.3-", "vX.Y.Z", "release-1.2.3", "", "v1.2.3 "],
)
def test_malformed_tags_are_refused(tmp_path, tag):
    script = make_tree(tmp_path)
    proc = run(script, tag)
    assert proc.returncode == 2
    assert "SemVer" in proc.stderr
    assert proc.stdout == ""


def test_missing_file_and_usage(tmp_path):
    script = make_tree(tmp_path)
    (tmp_path / "Cargo.lock").unlink()
    proc = run(script, "v1.2.3")
    assert proc.returncode == 2 and "Cargo.lock" in proc.stderr
    assert run(script).returncode == 2
    assert run(script, "v1.2.3", "v1.2.4").returncode == 2


def test_a_version_outside_package_is_not_taken_for_it(tmp_path):
    """[workspace.package] and dependency versions do not stand in for [package]'s."""
    script = make_tree(tmp_path)
    toml = tmp_path / "Cargo.toml"
    toml.write_text(toml.read_text().replace('version = "1.2.3"   # the crate\'s version\n', ""))
    proc = run(script, "v1.2.3")
    assert proc.returncode == 1
    assert "Cargo.toml [package] version is ''" in proc.stderr


def test_workflow_and_release_docs_name_the_script():
    """The release workflow gates on this script, and docs/release.md tells how to pass it."""
    workflow = (REPO_ROOT / ".github" / "workflows" / "release.yml").read_text()
    assert 'bash scripts/release/check-version.sh "$TAG"' in workflow
    page = (REPO_ROOT / "docs" / "release.md").read_text()
    assert "scripts/release/check-version.sh" in page
