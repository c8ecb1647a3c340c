"""The release checks: workflows, Dockerfile and release scripts (tests/release).

Run from the repository root:  python -m pytest -q tests/release
"""

from __future__ import annotations

import sys
from pathlib import Path

# The helpers sit beside this file; make them importable whatever pytest's import mode.
sys.path.insert(0, str(Path(__file__).resolve().parent))

from release_checks import LINTERS  # noqa: E402


def pytest_terminal_summary(terminalreporter):
    """Say which linters ran, at which versions, and whether actionlint ran shellcheck."""
    if LINTERS:
        terminalreporter.write_sep("-", "release linters")
        for name, said in sorted(LINTERS.items()):
            terminalreporter.write_line(f"{name}: {said}")
