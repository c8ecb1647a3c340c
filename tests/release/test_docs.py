"""The docs a user reads hold together (issue 23): every relative link in README.md, docs/*.md
and the other READMEs resolves to a file, each `#anchor` to a heading of its target (GitHub's
slugs); the README stays short; docs/architecture.md and the crate doc name every module.
Run from the repository root: python -m pytest -q tests/release/test_docs.py
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGES = sorted(
    [ROOT / "README.md", *(ROOT / "docs").glob("*.md")]
    + [ROOT / "deploy/README.md", ROOT / "certs/README.md", ROOT / "tests/fixtures/README.md"]
)
README_MAX_LINES = 300

# [text](target) and [text](target "title"); images too. Reference-style links are not used.
LINK = re.compile(r"\[[^\]]*\]\(\s*<?([^)\s>]*)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")


def prose(text: str) -> list[str]:
    """The lines outside fenced code blocks (a `# comment` in a code block is no heading)."""
    out, fence = [], None
    for line in text.splitlines():
        stripped = line.lstrip()
        marker = stripped[:3]
        if marker in ("```", "~~~"):
            if fence is None:
                fence = marker
            elif fence == marker:
                fence = None
            out.append("")
            continue
        out.append("" if fence else line)
    return out


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: link targets and markup dropped, lowercase, punctuation
    other than `-` and `_` removed, spaces to `-`."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)
    text = re.sub(r"<[^>]+>", "", text).lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    for line in prose(path.read_text(encoding="utf-8")):
        m = HEADING.match(line)
        if not m:
            continue
        base = slug(m.group(2))
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.add(base if n == 0 else f"{base}-{n}")
    return out


def links(path: Path) -> list[str]:
    found = []
    for line in prose(path.read_text(encoding="utf-8")):
        # Inline code is not a link: `[a](b)` inside backquotes is shown, not followed.
        line = re.sub(r"`[^`]*`", "", line)
        found += LINK.findall(line)
    return found


def test_slug_follows_github() -> None:
    assert slug("At a glance: `ecr-token-webhook status`") == "at-a-glance-ecr-token-webhook-status"
    assert slug("Guard (optional)") == "guard-optional"
    assert slug("Argo CD: an OCI Helm repository in ECR") == "argo-cd-an-oci-helm-repository-in-ecr"
    assert slug("Who may call [the webhook](x.md)") == "who-may-call-the-webhook"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(page: Path) -> None:
    assert page.is_file(), page
    broken = []
    for target in links(page):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto:, ...
            continue
        if not target:
            broken.append("an empty link target")
            continue
        file_part, _, anchor = target.partition("#")
        dest = (page.parent / unquote(file_part)).resolve() if file_part else page
        if not dest.exists():
            broken.append(f"{target}: no such file")
            continue
        if anchor:
            if dest.is_dir() or dest.suffix != ".md":
                broken.append(f"{target}: an anchor into something that is not Markdown")
            elif anchor not in anchors(dest):
                broken.append(f"{target}: no heading with that anchor in {dest.relative_to(ROOT)}")
    assert not broken, f"{page.relative_to(ROOT)}:\n" + "\n".join(broken)


def test_readme_is_short() -> None:
    lines = (ROOT / "README.md").read_text(encoding="utf-8").count("\n")
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines; move detail into docs/"


def modules() -> set[str]:
    src = ROOT / "src"
    names = {p.stem for p in src.glob("*.rs")} | {p.name for p in src.iterdir() if p.is_dir()}
    return names - {"lib", "main"}


def source_files() -> set[str]:
    """Every source file as docs/architecture.md names it: `name.rs`, or `folder/` for a
    folder's mod.rs; a module's tests (tests.rs) go with it."""
    src = ROOT / "src"
    names = set()
    for path in src.rglob("*.rs"):
        rel = path.relative_to(src).as_posix()
        if path.name == "tests.rs":
            continue
        names.add(rel.removesuffix("mod.rs") if path.name == "mod.rs" else rel)
    return names - {"lib.rs"}


def test_architecture_names_every_source_file() -> None:
    text = (ROOT / "docs/architecture.md").read_text(encoding="utf-8")
    named = set(re.findall(r"`(?:src/)?([a-z_/]+(?:\.rs|/))`", text))
    missing = sorted(source_files() - named)
    # Files that moved or went: a name that is not a path under src/ (mod.rs, tests.rs, src/) is prose.
    gone = sorted(n for n in named if "/" in n.rstrip("/") and not (ROOT / "src" / n).exists())
    assert not missing, f"docs/architecture.md does not name: {missing}"
    assert not gone, f"docs/architecture.md names files that are not in src/: {gone}"


def test_crate_doc_names_every_module() -> None:
    lib = (ROOT / "src/lib.rs").read_text(encoding="utf-8")
    doc = "\n".join(line for line in lib.splitlines() if line.startswith("//!"))
    declared = set(re.findall(r"^pub mod (\w+);", lib, re.M)) | set(re.findall(r"^mod (\w+);", lib, re.M))
    # As intra-doc links, [`name`], so a word like "time" in the prose does not count.
    missing = sorted(m for m in declared if f"[`{m}`]" not in doc)
    assert declared == modules(), "src/lib.rs declares other modules than src/ holds"
    assert not missing, f"src/lib.rs's crate doc does not name: {missing}"
