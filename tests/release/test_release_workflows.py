"""The GitHub Actions workflows, read as data: CI does what .ci/run does on the toolchain the
image is built with; the release builds, signs and publishes what issue 9 asks for; actions are
pinned by commit; every job has least permissions and a timeout; nothing depends on this machine.
(actionlint checks syntax, expressions and the run: scripts: test_release_lint.py.)"""

from __future__ import annotations

import re

import pytest

from release_checks import (
    CI_WORKFLOW,
    DOCKERFILE,
    IMAGE_WORKFLOW,
    NODE_WORKFLOW,
    RELEASE_SCRIPTS,
    RELEASE_WORKFLOW,
    REPO_ROOT,
    WORKFLOWS,
    load_workflow,
    run_text,
    step_using,
    steps,
)


@pytest.fixture(scope="module")
def ci() -> dict:
    return load_workflow(CI_WORKFLOW)


@pytest.fixture(scope="module")
def release() -> dict:
    return load_workflow(RELEASE_WORKFLOW)


def workflow_files():
    return sorted(WORKFLOWS.glob("*.y*ml"))


@pytest.mark.parametrize("path", workflow_files(), ids=lambda p: p.name)
def test_every_action_is_pinned_to_a_commit_with_its_release_named(path):
    uses = re.findall(r"^\s*(?:-\s+)?uses:\s*(\S+)(.*)$", path.read_text(), re.M)
    assert uses
    for ref, rest in uses:
        assert not ref.startswith(("./", "docker://")), ref
        assert re.fullmatch(r"[\w.-]+/[\w.-]+(/[\w./-]+)?@[0-9a-f]{40}", ref), f"{ref} is not pinned to a commit"
        assert re.fullmatch(r"\s+# v?\d+(\.\d+)*", rest), f"{ref} has no '# vX.Y.Z' comment naming its release"


@pytest.mark.parametrize("path", workflow_files(), ids=lambda p: p.name)
def test_jobs_have_timeouts_and_checkouts_keep_no_token(path):
    wf = load_workflow(path)
    assert "concurrency" in wf and "group" in wf["concurrency"]
    for job_id, job in wf["jobs"].items():
        assert 0 < job.get("timeout-minutes", 0) <= 120, f"{job_id} has no timeout"
    for s in step_using(wf, "actions/checkout"):
        assert s.get("with", {}).get("persist-credentials") is False


@pytest.mark.parametrize("path", workflow_files(), ids=lambda p: p.name)
def test_no_expression_is_pasted_into_a_script(path):
    """Values reach run: scripts through env:, so no tag or branch name is ever shell code."""
    wf = load_workflow(path)
    for job_id, s in steps(wf):
        assert "${{" not in s.get("run", ""), f"{job_id}: {s['run']}"


def test_nothing_depends_on_this_machine():
    texts = {p: p.read_text() for p in [*workflow_files(), DOCKERFILE, *RELEASE_SCRIPTS.glob("*")]}
    for path, text in texts.items():
        for local in ("../shared", "/work/", "/home/", ".venv", "localhost", "127.0.0.1"):
            assert local not in text, f"{path.relative_to(REPO_ROOT)} mentions {local}"


def test_ci_runs_dot_ci_run_on_push_and_pull_request(ci):
    assert set(ci["on"]) == {"push", "pull_request"}
    assert ci["permissions"] == {"contents": "read"}
    [job] = ci["jobs"].values()
    assert "permissions" not in job
    assert job["steps"][-1]["run"] == "bash .ci/run"
    assert step_using(ci, "actions/checkout")
    # kubectl (kustomize) and Python 3.11 (tomllib) for the manifest tests, nextest for Rust's.
    assert step_using(ci, "Azure/setup-kubectl")
    [python] = step_using(ci, "actions/setup-python")
    assert str(python["with"]["python-version"]) == "3.11"
    [nextest] = step_using(ci, "taiki-e/install-action")
    assert re.fullmatch(r"cargo-nextest@\d+\.\d+\.\d+", nextest["with"]["tool"])
    [cache] = step_using(ci, "Swatinem/rust-cache")
    assert cache["with"]["save-if"] == "${{ github.ref == 'refs/heads/main' }}"


def test_ci_tests_with_the_rust_release_the_image_is_built_with(ci):
    [toolchain] = step_using(ci, "dtolnay/rust-toolchain")
    assert {"rustfmt", "clippy"} <= {c.strip() for c in toolchain["with"]["components"].split(",")}
    line = next(ln for ln in CI_WORKFLOW.read_text().splitlines() if "dtolnay/rust-toolchain@" in ln)
    ci_rust = re.search(r"# (\d+\.\d+\.\d+)$", line).group(1)
    image_rust = re.search(r"^ARG RUST_IMAGE=rust:(\d+\.\d+\.\d+)-", DOCKERFILE.read_text(), re.M).group(1)
    assert ci_rust == image_rust


def test_the_image_is_built_and_started_before_any_release(ci):
    """image.yml builds each platform from the Dockerfile whenever its inputs change, pushes
    nothing, and runs the result; only main writes the layer cache."""
    wf = load_workflow(IMAGE_WORKFLOW)
    copied = ["Dockerfile", ".dockerignore", "Cargo.toml", "Cargo.lock", "src/**", "benches/**"]
    for event in ("pull_request", "push"):
        assert set(copied) <= set(wf["on"][event]["paths"]), event
    assert wf["on"]["push"]["branches"] == ["main"]
    assert wf["permissions"] == {"contents": "read"}
    [job] = wf["jobs"].values()
    assert "permissions" not in job
    assert job["strategy"]["matrix"]["platform"] == ["linux/amd64", "linux/arm64"]
    [build] = step_using(wf, "docker/build-push-action")
    w = build["with"]
    assert (w["context"], w["file"], w["platforms"]) == (".", "Dockerfile", "${{ matrix.platform }}")
    assert w["push"] is False and w["load"] is True
    cache = next(s for _, s in steps(wf) if s.get("id") == "cache")
    assert cache["env"]["SAVE"] == "${{ github.event_name == 'push' }}"
    script = run_text(wf, "build")
    assert 'docker run --rm --platform "$PLATFORM" ecr-token-webhook:ci --version' in script
    assert "65532:65532" in script


def test_the_node_tier_runs_on_kind_with_the_image_from_the_dockerfile():
    """node.yml: the real Dockerfile's image, loaded into a kind cluster on Kubernetes 1.28, and
    tests/node run against it (the same tier .ci/run runs on the project's node kit)."""
    wf = load_workflow(NODE_WORKFLOW)
    assert wf["permissions"] == {"contents": "read"}
    assert wf["on"]["push"]["branches"] == ["main"]
    [job] = wf["jobs"].values()
    assert "permissions" not in job
    [build] = step_using(wf, "docker/build-push-action")
    w = build["with"]
    assert (w["context"], w["file"], w["push"], w["load"]) == (".", "Dockerfile", False, True)
    assert "cache-to" not in w, "only image.yml, from main, writes the layer cache"
    [kind] = step_using(wf, "helm/kind-action")
    assert re.fullmatch(r"kindest/node:v1\.28\.\d+@sha256:[0-9a-f]{64}", kind["with"]["node_image"])
    config = REPO_ROOT / kind["with"]["config"]
    assert 'config_path = "/etc/containerd/certs.d"' in config.read_text()
    script = run_text(wf, "node")
    assert 'kind load docker-image "$IMAGE" --name "$CLUSTER"' in script
    assert "pytest -q -p no:cacheprovider tests/node" in script
    [tier] = [s for _, s in steps(wf) if "tests/node" in s.get("run", "")]
    assert set(tier["env"]) == {"ECR_TOKEN_WEBHOOK_NODE_KIND", "ECR_TOKEN_WEBHOOK_NODE_IMAGE"}


def test_release_runs_on_version_tags_with_least_privilege(release):
    assert release["on"] == {"push": {"tags": ["v*"]}}
    assert release["permissions"] == {}
    perms = {job_id: job["permissions"] for job_id, job in release["jobs"].items()}
    assert perms == {
        "version": {"contents": "read"},
        "image": {"contents": "read", "packages": "write", "id-token": "write"},
        "chart": {"contents": "read", "packages": "write", "id-token": "write"},
        "release": {"contents": "write"},
    }
    assert release["concurrency"]["cancel-in-progress"] is False


def test_release_checks_the_tag_against_the_versions_first(release):
    assert 'bash scripts/release/check-version.sh "$TAG"' in run_text(release, "version")
    [step] = [s for j, s in steps(release) if j == "version" and "check-version.sh" in s.get("run", "")]
    assert step["env"]["TAG"] == "${{ github.ref_name }}"
    for job_id, job in release["jobs"].items():
        if job_id != "version":
            assert "version" in job["needs"], f"{job_id} does not wait for the version check"
    # GHCR names are lowercase whatever the owner's spelling.
    names = run_text(release, "version")
    assert "ghcr.io/${GITHUB_REPOSITORY,,}" in names
    assert "ghcr.io/${GITHUB_REPOSITORY_OWNER,,}/charts" in names


def test_release_builds_a_multi_arch_image_with_attestations(release):
    assert step_using(release, "docker/setup-qemu-action", "image")
    assert step_using(release, "docker/setup-buildx-action", "image")
    [login] = step_using(release, "docker/login-action", "image")
    assert login["with"] == {
        "registry": "ghcr.io", "username": "${{ github.actor }}", "password": "${{ secrets.GITHUB_TOKEN }}"
    }
    [meta] = step_using(release, "docker/metadata-action", "image")
    assert meta["with"]["images"] == "${{ needs.version.outputs.image }}"
    assert "type=semver,pattern={{version}}" in meta["with"]["tags"]
    [build] = step_using(release, "docker/build-push-action", "image")
    w = build["with"]
    assert (w["context"], w["file"]) == (".", "Dockerfile")
    assert w["platforms"] == "linux/amd64,linux/arm64"
    assert w["push"] is True and w["sbom"] is True and w["provenance"] == "mode=max"
    assert w["tags"] == "${{ steps.meta.outputs.tags }}"
    assert "cache-from" not in w, "a release is built without a cache another run could have seeded"
    assert release["jobs"]["image"]["outputs"]["digest"] == "${{ steps.build.outputs.digest }}"
    # Both images start and report the tag's version.
    script = run_text(release, "image")
    assert "for platform in linux/amd64 linux/arm64" in script
    assert 'docker run --rm --platform "$platform" "$IMAGE@$DIGEST" --version' in script


def test_release_signs_the_image_and_attests_an_spdx_sbom(release):
    assert step_using(release, "sigstore/cosign-installer", "image")
    script = run_text(release, "image")
    # By digest, never by tag (a tag can move after signing).
    assert 'cosign sign --yes "$IMAGE@$DIGEST"' in script
    [sbom] = step_using(release, "anchore/sbom-action", "image")
    assert sbom["with"]["format"] == "spdx-json"
    assert sbom["with"]["image"] == "${{ needs.version.outputs.image }}@${{ steps.build.outputs.digest }}"
    # From the registry (credentials given), for one named platform.
    assert sbom["with"]["registry-username"] and sbom["env"]["SYFT_PLATFORM"] == "linux/amd64"
    assert re.search(r'cosign attest --yes --type spdxjson --predicate "\$sbom" "\$IMAGE@\$DIGEST"', script)
    # The workflow verifies with the same identity docs/release.md tells users to expect.
    assert "cosign verify " in script and "cosign verify-attestation --type spdxjson" in script
    assert "--certificate-oidc-issuer https://token.actions.githubusercontent.com" in script


def test_release_publishes_and_signs_the_chart(release):
    [helm] = step_using(release, "Azure/setup-helm", "chart")
    assert re.fullmatch(r"v\d+\.\d+\.\d+", helm["with"]["version"])
    assert step_using(release, "sigstore/cosign-installer", "chart")
    script = run_text(release, "chart")
    assert 'bash scripts/release/set-chart-image.sh "$chart" "$IMAGE" "$DIGEST"' in script
    assert 'helm package "$chart" --version "$VERSION" --app-version "$VERSION"' in script
    assert 'helm push "dist/ecr-token-webhook-$VERSION.tgz" "oci://$CHARTS"' in script
    assert 'cosign sign --yes "$CHARTS/ecr-token-webhook@$digest"' in script
    env = release["jobs"]["chart"]["env"]
    assert env["DIGEST"] == "${{ needs.image.outputs.digest }}"
    assert env["CHARTS"] == "${{ needs.version.outputs.charts }}"


def test_release_creates_a_github_release_with_chart_and_sbom(release):
    job = release["jobs"]["release"]
    assert set(job["needs"]) == {"version", "image", "chart"}
    assert step_using(release, "actions/download-artifact", "release")
    uploaded = {s["with"]["path"] for s in step_using(release, "actions/upload-artifact")}
    assert uploaded == {
        "ecr-token-webhook-${{ needs.version.outputs.version }}.spdx.json",
        "dist/ecr-token-webhook-${{ needs.version.outputs.version }}.tgz",
    }
    script = run_text(release, "release")
    assert 'gh release create "$TAG"' in script and "--verify-tag" in script
    assert '"dist/ecr-token-webhook-$VERSION.tgz" "dist/ecr-token-webhook-$VERSION.spdx.json"' in script
