"""The crate's modules import each other without a circle (issue 23).

A module is `src/NAME.rs` together with `src/NAME/...`; it depends on every `crate::OTHER` its
code names (comments aside). Run from the repository root:
python -m pytest -q tests/release/test_module_graph.py
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"

# `crate::name` anywhere in code, and each name in `use crate::{a, b::c, ...}`.
CRATE_PATH = re.compile(r"\bcrate::([a-z_][a-z0-9_]*)")
CRATE_GROUP = re.compile(r"\bcrate::\{([^}]*)\}", re.S)
GROUP_NAME = re.compile(r"(?:^|,)\s*([a-z_][a-z0-9_]*)")


def module_of(path: Path, src: Path) -> str | None:
    """The top-level module a source file belongs to; None for the crate roots."""
    rel = path.relative_to(src)
    if rel.parts[0] in ("lib.rs", "main.rs"):
        return None
    return rel.parts[0].removesuffix(".rs")


def code_without_comments(text: str) -> str:
    return "\n".join(line.split("//", 1)[0] for line in text.splitlines())


def uses(text: str) -> set[str]:
    code = code_without_comments(text)
    names = set(CRATE_PATH.findall(code))
    for group in CRATE_GROUP.findall(code):
        # Only the group's first-level names: `a::{b, c}` inside names `a`.
        depth, top = 0, []
        for ch in group:
            depth += ch == "{"
            depth -= ch == "}"
            top.append(ch if depth == 0 else " ")
        names.update(GROUP_NAME.findall("".join(top)))
    return names


def module_graph(src: Path = SRC) -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for path in sorted(src.rglob("*.rs")):
        module = module_of(path, src)
        if module is None:
            continue
        deps = uses(path.read_text(encoding="utf-8"))
        deps.discard(module)
        graph.setdefault(module, set()).update(deps)
    modules = set(graph)
    return {m: {d for d in deps if d in modules} for m, deps in graph.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One circle per strongly connected component of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_modules_import_each_other_without_a_circle():
    graph = module_graph()
    assert len(graph) > 10, f"found too few modules under {SRC}: {sorted(graph)}"
    found = cycles(graph)
    assert not found, "import circles among src/ modules: " + "; ".join(
        " <-> ".join(c) for c in found
    )


@pytest.mark.parametrize(
    "files, want",
    [
        # The two circles issue 23 found on main, and their cures.
        (
            {
                "admission": "use crate::refresher::{self, secret_event};",
                "refresher": "use crate::status::{self, State};",
                "status": "use crate::cli::{OutputFormat, StatusArgs};",
                "cli": "use crate::admission::FailureMode;\nfn known() -> crate::status::Known {}",
            },
            [["admission", "cli", "refresher", "status"]],
        ),
        (
            {
                "metrics": "use crate::token::TokenKey;",
                "token": "use crate::{metrics::{EcrOutcome, Metrics}, time::rfc3339};",
                "time": "",
            },
            [["metrics", "token"]],
        ),
        (
            {
                "admission": "use crate::events::EventSink;",
                "refresher": "use crate::{events::secret_event, state::State};",
                "status": "use crate::state::State;\nuse crate::cli::Known;",
                "cli": "",
                "events": "",
                "state": "// not code: crate::status::Row",
            },
            [],
        ),
    ],
)
def test_the_checker_finds_circles(tmp_path, files, want):
    for name, text in files.items():
        (tmp_path / f"{name}.rs").write_text(text, encoding="utf-8")
    (tmp_path / "lib.rs").write_text("pub mod cli;", encoding="utf-8")
    assert cycles(module_graph(tmp_path)) == want
