"""The Python test tools: tests/requirements.in is the hand-edited input, tests/requirements.txt
the lock made from it (uv pip compile, every package pinned with hashes), and scripts/test.sh
installs the lock without resolving. These keep the two in line: a requirement added or bounded
in the input and not carried into the lock fails here, with the command that regenerates it."""

from __future__ import annotations

import re

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from release_checks import REPO_ROOT

INPUT = REPO_ROOT / "tests" / "requirements.in"
LOCK = REPO_ROOT / "tests" / "requirements.txt"
REGENERATE = (
    "regenerate the lock: uv pip compile --python-version 3.11.7 --generate-hashes "
    "tests/requirements.in -o tests/requirements.txt"
)


def input_requirements() -> list[Requirement]:
    lines = (line.split("#", 1)[0].strip() for line in INPUT.read_text().splitlines())
    return [Requirement(line) for line in lines if line]


def lock_entries() -> dict[str, tuple[str, list[str]]]:
    """name -> (pinned version, hashes), from the lock's `name==version \\` blocks."""
    entries: dict[str, tuple[str, list[str]]] = {}
    name = None
    for line in LOCK.read_text().splitlines():
        if pin := re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)", line):
            name = canonicalize_name(pin[1])
            entries[name] = (pin[2], [])
        elif (digest := re.match(r"^\s+--hash=sha256:([0-9a-f]{64})", line)) and name:
            entries[name][1].append(digest[1])
    return entries


def test_every_input_requirement_is_pinned_in_the_lock_within_its_bounds():
    lock = lock_entries()
    for req in input_requirements():
        name = canonicalize_name(req.name)
        assert name in lock, f"{req.name} is in {INPUT.name} but not in {LOCK.name}: {REGENERATE}"
        version = lock[name][0]
        assert req.specifier.contains(version, prereleases=True), (
            f"{LOCK.name} pins {req.name}=={version}, outside {req} in {INPUT.name}: {REGENERATE}"
        )


def test_every_locked_package_is_pinned_with_hashes():
    lock = lock_entries()
    assert len(lock) > len(input_requirements())  # the dependencies too, not just the inputs
    unhashed = sorted(name for name, (_, hashes) in lock.items() if not hashes)
    assert not unhashed, f"locked without hashes: {unhashed}: {REGENERATE}"


def test_the_test_command_installs_the_lock_with_the_uv_it_pins():
    script = (REPO_ROOT / "scripts" / "test.sh").read_text()
    assert "sha256sum tests/requirements.txt" in script  # reinstalls when the lock changes
    assert "uv pip sync" in script and "--require-hashes tests/requirements.txt" in script
    assert "grep -o '^uv==[^ ]*' tests/requirements.txt" in script
    assert "uv" in lock_entries()
