"""The chart as the release workflow publishes it: a copy pointed at the signed image by digest
(scripts/release/set-chart-image.sh), packaged with the tag's version through Helm's own SDK,
then loaded back from the archive and rendered."""

from __future__ import annotations

import difflib
import shutil
import subprocess
from pathlib import Path

import helm_python as helm
import pytest
import yaml

from release_checks import CHART, RELEASE_SCRIPTS

SCRIPT = RELEASE_SCRIPTS / "set-chart-image.sh"
IMAGE = "ghcr.io/example-org/ecr-token-webhook"
DIGEST = "sha256:" + "0123456789abcdef" * 4


def copy_chart(tmp_path: Path) -> Path:
    dest = tmp_path / "chart" / "ecr-token-webhook"
    shutil.copytree(CHART, dest)
    return dest


def set_image(chart: Path, repository=IMAGE, digest=DIGEST) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(SCRIPT), str(chart), repository, digest], capture_output=True, text=True, timeout=60
    )


def containers(files: dict[str, str]) -> list[dict]:
    out = []
    for path, text in files.items():
        if path.endswith(".yaml"):
            for doc in yaml.safe_load_all(text):
                if doc and doc.get("kind") == "Deployment":
                    out += doc["spec"]["template"]["spec"]["containers"]
    return out


def test_only_the_image_repository_and_digest_change(tmp_path):
    chart = copy_chart(tmp_path)
    proc = set_image(chart)
    assert proc.returncode == 0, proc.stderr
    before = (CHART / "values.yaml").read_text().splitlines()
    after = (chart / "values.yaml").read_text().splitlines()
    changed = [
        line for line in difflib.unified_diff(before, after, lineterm="", n=0)
        if line[:1] in "+-" and not line.startswith(("+++", "---"))
    ]
    assert sorted(changed) == sorted(
        [
            "-  repository: ecr-token-webhook",
            f"+  repository: {IMAGE}",
            '-  digest: ""',
            f'+  digest: "{DIGEST}"',
        ]
    ), changed
    # Comments and every other value survive; the result is still valid for the chart's schema.
    values = yaml.safe_load((chart / "values.yaml").read_text())
    helm.Chart.load(str(chart)).validate_schema(values)


def test_the_packaged_chart_carries_the_version_and_runs_the_signed_image(tmp_path):
    chart = copy_chart(tmp_path)
    assert set_image(chart).returncode == 0
    archive = helm.package(str(chart), destination=str(tmp_path), version="1.2.3-rc.1", app_version="1.2.3-rc.1")
    assert Path(archive).name == "ecr-token-webhook-1.2.3-rc.1.tgz"
    packaged = helm.Chart.load_archive(Path(archive).read_bytes())
    metadata = packaged.metadata if not callable(packaged.metadata) else packaged.metadata()
    assert (metadata["version"], metadata["appVersion"]) == ("1.2.3-rc.1", "1.2.3-rc.1")
    [c] = containers(packaged.render({}, name="ecr-token-webhook", namespace="ecr-token-webhook", is_install=True))
    # By digest: the pull cannot be redirected to another image under the same tag.
    assert c["image"] == f"{IMAGE}@{DIGEST}"
    # A user's own image still wins.
    [c] = containers(
        packaged.render({"image": {"repository": "registry.example/mirror", "digest": "", "tag": "1.2.3-rc.1"}},
                        name="ecr-token-webhook", namespace="ecr-token-webhook", is_install=True)
    )
    assert c["image"] == "registry.example/mirror:1.2.3-rc.1"


@pytest.mark.parametrize(
    "repository, digest",
    [
        ("ghcr.io/Example-Org/ecr-token-webhook", DIGEST),  # registries want lowercase
        (f"{IMAGE}:1.2.3", DIGEST),  # a tag is not a repository
        (IMAGE, "sha256:abc"),
        (IMAGE, DIGEST.upper()),
        (IMAGE, "0123456789abcdef" * 4),
    ],
)
def test_bad_names_are_refused_and_nothing_is_written(tmp_path, repository, digest):
    chart = copy_chart(tmp_path)
    proc = set_image(chart, repository, digest)
    assert proc.returncode == 2, proc.stderr
    assert (chart / "values.yaml").read_text() == (CHART / "values.yaml").read_text()


def test_values_without_the_keys_fail(tmp_path):
    chart = copy_chart(tmp_path)
    values = chart / "values.yaml"
    values.write_text(values.read_text().replace("\n  digest:", "\n  sha:"))
    before = values.read_text()
    proc = set_image(chart)
    assert proc.returncode == 1
    assert "1 repository: and 0 digest: lines" in proc.stderr
    assert values.read_text() == before
