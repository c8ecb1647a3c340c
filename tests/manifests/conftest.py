"""Fixtures for the manifest tests (helpers live in manifest_checks.py).

Run from the repository root:  python -m pytest -q tests/manifests
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable

import pytest

# The helpers sit beside this file; make them importable whatever pytest's import mode.
sys.path.insert(0, str(Path(__file__).resolve().parent))

from manifest_checks import KUSTOMIZE_BASE, find_kubectl, kustomize, schema_errors


@pytest.fixture(scope="session")
def kubectl() -> str:
    """Path of kubectl; fails (never skips) when there is none."""
    return find_kubectl()


@pytest.fixture(scope="session")
def render_kustomize() -> Callable[[Path | str], list[dict]]:
    """`kubectl kustomize DIR`, parsed into a list of objects."""
    return kustomize


@pytest.fixture(scope="session")
def validate_schemas() -> Callable[[list[dict], str], list[str]]:
    """Strict Kubernetes schema validation; CRD kinds on the explicit list are skipped."""
    return schema_errors


@pytest.fixture(scope="session")
def base_objects() -> list[dict]:
    """deploy/base rendered once per session."""
    return kustomize(KUSTOMIZE_BASE)
