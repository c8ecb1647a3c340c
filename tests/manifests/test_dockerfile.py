"""The Dockerfile and .dockerignore, checked as text (no Docker engine needed), and against the
Deployment that runs the image."""

from __future__ import annotations

import json
import re
import shlex

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python < 3.11
    tomllib = None

from manifest_checks import REPO_ROOT, one

DOCKERFILE = REPO_ROOT / "Dockerfile"
DOCKERIGNORE = REPO_ROOT / ".dockerignore"


def instructions():
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    text = DOCKERFILE.read_text()
    out, current = [], ""
    for line in text.splitlines():
        stripped = line.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if current and stripped.startswith("#"):
            continue
        current += " " + stripped
        if current.endswith("\\"):
            current = current[:-1]
            continue
        word, _, rest = current.strip().partition(" ")
        out.append((word.upper(), rest.strip()))
        current = ""
    assert not current, "Dockerfile ends in a continuation line"
    return out


def stages():
    """Stages as lists of instructions, each starting with its FROM."""
    result = []
    for ins in instructions():
        if ins[0] == "FROM":
            result.append([ins])
        elif result:
            result[-1].append(ins)
    return result


def arg_defaults():
    defaults = {}
    for word, rest in instructions():
        if word == "ARG" and "=" in rest:
            k, _, v = rest.partition("=")
            defaults.setdefault(k.strip(), v.strip())
    return defaults


def resolve(image: str) -> str:
    return re.sub(r"\$\{(\w+)\}", lambda m: arg_defaults()[m.group(1)], image)


def from_parts(stage) -> tuple[dict[str, str], str, str | None]:
    """A stage's FROM line as (flags such as --platform, image with ARG defaults resolved, name)."""
    word, rest = stage[0]
    assert word == "FROM"
    parts = rest.split()
    flags = {}
    while parts[0].startswith("--"):
        key, _, value = parts.pop(0)[2:].partition("=")
        flags[key] = value
    image = resolve(parts[0])
    name = parts[2] if len(parts) == 3 and parts[1].upper() == "AS" else None
    return flags, image, name


def stage_args(stage) -> dict[str, str]:
    """ARG name=default pairs declared inside a stage."""
    out = {}
    for word, rest in stage:
        if word == "ARG":
            k, _, v = rest.partition("=")
            out[k.strip()] = v.strip()
    return out


def version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split("."))


# Docker's platform names (TARGETARCH) and the Rust musl targets they are built for.
PLATFORM_TARGETS = {"amd64": "x86_64-unknown-linux-musl", "arm64": "aarch64-unknown-linux-musl"}


def test_builder_cross_compiles_a_static_musl_binary_from_the_lock_file():
    builder = stages()[0]
    flags, image, name = from_parts(builder)
    assert name == "builder"
    # Runs natively on the build machine; what it builds for comes from TARGETARCH.
    assert flags == {"platform": "$BUILDPLATFORM"}
    m = re.fullmatch(r"rust:(\d+\.\d+\.\d+)-bookworm", image)
    assert m, f"the builder image {image} is not a pinned Rust release"
    if tomllib is None:
        pytest.fail("tomllib is needed (Python 3.11 or later)")
    msrv = tomllib.loads((REPO_ROOT / "Cargo.toml").read_text())["package"]["rust-version"]
    assert version_tuple(m.group(1)) >= version_tuple(msrv), "older than Cargo.toml's rust-version"

    run = " ".join(rest for word, rest in builder if word == "RUN")
    [added] = [
        t.group(1).split()
        for word, rest in builder
        if word == "RUN" and (t := re.search(r"rustup target add ([\w\s-]+?)\s*(?:&&|$)", rest))
    ]
    assert sorted(added) == sorted(PLATFORM_TARGETS.values())
    for arch, target in PLATFORM_TARGETS.items():
        assert re.search(rf"\b{arch}\) target={target};", run), f"{arch} is not built for {target}"
    assert "TARGETARCH" in stage_args(builder)
    # Exactly the lock file's dependency versions (--locked), release profile, through zig.
    assert re.search(r'cargo auditable zigbuild --release --locked --target "?\$\{target\}"? ', run), run
    # The tools that build it are pinned to exact versions.
    args = stage_args(builder)
    for tool in ("ZIGLANG_VERSION", "CARGO_ZIGBUILD_VERSION", "CARGO_AUDITABLE_VERSION"):
        assert re.fullmatch(r"\d+\.\d+\.\d+", args.get(tool, "")), f"{tool} is not pinned"
    assert '"ziglang==${ZIGLANG_VERSION}"' in run and '"cargo-zigbuild==${CARGO_ZIGBUILD_VERSION}"' in run
    assert 'cargo install --locked "cargo-auditable@${CARGO_AUDITABLE_VERSION}"' in run
    # The binary is checked before it is copied: right machine, static.
    assert "program interpreter" in run and "readelf -h" in run


def test_final_stage_is_distroless_nonroot_with_the_binary_as_entrypoint():
    final = stages()[-1]
    assert len(stages()) >= 2, "multi-stage build"
    flags, image, _ = from_parts(final)
    # The target platform's image (no --platform), pinned by digest.
    assert flags == {}
    assert re.fullmatch(r"gcr\.io/distroless/static-debian12:nonroot@sha256:[0-9a-f]{64}", image), image
    users = [rest for word, rest in final if word == "USER"]
    assert users == ["65532:65532"]
    entrypoints = [json.loads(rest) for word, rest in final if word == "ENTRYPOINT"]
    assert entrypoints == [["/usr/local/bin/ecr-token-webhook"]]
    copies = [rest for word, rest in final if word == "COPY"]
    assert copies == ["--from=builder /out/ecr-token-webhook /usr/local/bin/ecr-token-webhook"]
    # Nothing but the binary comes into the final image.
    assert not [w for w, _ in final if w in {"RUN", "ADD"}]


def test_exposed_ports_match_the_deployment(base_objects):
    exposed = set()
    for word, rest in stages()[-1]:
        if word == "EXPOSE":
            exposed |= {int(p.split("/")[0]) for p in rest.split()}
    c = one(base_objects, "Deployment", "ecr-token-webhook")["spec"]["template"]["spec"]["containers"][0]
    assert exposed == {p["containerPort"] for p in c["ports"]} == {8443, 9090}


def test_image_user_matches_the_pod_security_context(base_objects):
    user = [rest for word, rest in stages()[-1] if word == "USER"][0]
    uid, gid = (int(x) for x in user.split(":"))
    pod = one(base_objects, "Deployment", "ecr-token-webhook")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsUser"] == uid
    assert pod["securityContext"]["runAsGroup"] == gid


def copied_sources():
    """Sources the builder stage COPYs from the build context."""
    out = []
    for word, rest in stages()[0]:
        if word == "COPY" and "--from" not in rest:
            parts = shlex.split(rest)
            out += [p.rstrip("/") for p in parts[:-1] if not p.startswith("--")]
    return out


def test_everything_cargo_needs_is_copied_and_exists():
    sources = copied_sources()
    for s in sources:
        assert (REPO_ROOT / s).exists(), f"the Dockerfile copies {s}, which does not exist"
    assert {"Cargo.toml", "Cargo.lock", "src"} <= set(sources)
    if tomllib is None:
        pytest.fail("tomllib is needed (Python 3.11 or later)")
    manifest = tomllib.loads((REPO_ROOT / "Cargo.toml").read_text())
    needed = []
    if (REPO_ROOT / "build.rs").exists() or manifest["package"].get("build"):
        needed.append(manifest["package"].get("build", "build.rs"))
    for section, folder in (("bench", "benches"), ("bin", "src/bin"), ("example", "examples")):
        for target in manifest.get(section, []):
            needed.append(target.get("path", f"{folder}/{target['name']}.rs"))
    for path in needed:
        top = path.split("/")[0]
        assert top in sources, f"Cargo.toml names {path}, which the Dockerfile does not copy"


def test_dockerignore_keeps_build_output_history_and_keys_out():
    lines = [ln.strip() for ln in DOCKERIGNORE.read_text().splitlines()]
    patterns = [ln for ln in lines if ln and not ln.startswith("#")]
    assert patterns[0] == "*", "the context is an allowlist"
    allowed = {p[1:].rstrip("/") for p in patterns if p.startswith("!")}
    assert allowed == set(copied_sources()), "allowlist and COPY lines disagree"
    last_include = max(i for i, p in enumerate(patterns) if p.startswith("!"))
    for never in ("**/*.key", "**/*.pem"):
        # Later lines win: keys stay out even inside the allowed folders.
        assert patterns.index(never) > last_include, never
    for spelled in ("target/", ".venv/", ".git/"):
        assert spelled in patterns
