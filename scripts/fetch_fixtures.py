#!/usr/bin/env python3
"""Fetch the real wheels (and a few sdists) of the canary's dependency set for the test index.

    python3 scripts/fetch_fixtures.py [--force]

The set is a universal resolution (uv, requires-python >= 3.9, every OS) of the canary's
requirements plus torch's runtime dependencies, so pypm's own universal lock of
examples/my-lib finds every package it needs on the local test index. Files land in
$PYPM_FIXTURES_DIR (default ~/.cache/pypm-test-fixtures/<hash of the requirement list>/);
a marker file written last says the set is complete, so a second run returns at once and
an interrupted run is redone. The default index is whatever uv and pip use by default:
their configuration files are not read (PIP_CONFIG_FILE=/dev/null, uv --no-config), so the
machine's extra indexes and find-links never leak into the set.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name, parse_sdist_filename, parse_wheel_filename
from packaging.version import Version

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.support.fixtures import (  # noqa: E402 - needs the repo on sys.path first
    CANARY_REQUIREMENTS,
    HEAVY_MARKER,
    MARKER_FILE,
    SDIST_PACKAGES,
    TORCH_RUNTIME_REQUIREMENTS,
    canary_wheels_dir,
    fixtures_dir,
    requirements_hash,
)

# Build backends of the sdists we fetch (idna and tomli build with flit_core), so that tests
# building those sdists find their backend on the offline test index.
BUILD_BACKENDS = ("flit_core>=3.2,<4",)
# Universal resolutions made for these lower bounds: 3.9 is my-lib's requires-python; 3.11
# adds the newest releases that dropped old Pythons (a resolver may pick them under a fork).
PYTHON_FLOORS = ("3.9", "3.11")
LINUX_X86_64 = ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64", "linux_x86_64")


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "UV_", "VIRTUAL_ENV"))}
    env["PIP_CONFIG_FILE"] = os.devnull
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    env["UV_PYTHON_DOWNLOADS"] = "never"  # a missing 3.9 is fine: the resolution is universal
    return env


def requirement_lines() -> list[str]:
    lines = list(CANARY_REQUIREMENTS) + list(BUILD_BACKENDS)
    lines += [f"{r}; {HEAVY_MARKER}" for r in TORCH_RUNTIME_REQUIREMENTS]
    return lines


def compile_pins(work: Path) -> list[tuple[str, str]]:
    """(name, version) pins of uv's universal resolutions, deduplicated and sorted.

    Besides the canary's own resolutions, torch's dependencies are also resolved without the
    heavy extra's marker: the versions a resolver that does not narrow requires-python by
    markers would look for (networkx, filelock, fsspec releases for 3.9/3.10) are then on the
    index too, as they would be on a real one.
    """
    req_in = work / "requirements.in"
    req_in.write_text("\n".join(requirement_lines()) + "\n")
    torch_in = work / "torch-deps.in"
    torch_in.write_text("\n".join(TORCH_RUNTIME_REQUIREMENTS) + "\n")
    runs = [(req_in, floor) for floor in PYTHON_FLOORS] + [(torch_in, PYTHON_FLOORS[0])]
    pins: set[tuple[str, str]] = set()
    for req_file, floor in runs:
        out = subprocess.run(
            ["uv", "pip", "compile", "--no-config", "--universal", "--python-version", floor,
             "--no-header", "--no-annotate", str(req_file)],
            cwd=work, env=_clean_env(), capture_output=True, text=True,
        )
        if out.returncode != 0:
            sys.exit(f"fetch_fixtures: uv pip compile failed:\n{out.stderr}")
        for line in out.stdout.splitlines():
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            req = Requirement(line)
            (spec,) = req.specifier
            pins.add((str(canonicalize_name(req.name)), spec.version))
    return sorted(pins)


def _pip_download(dest: Path, args: list[str], pins: list[str]) -> bool:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--ignore-requires-python", "-q", "-d", str(dest), *args, *pins]
    return subprocess.run(cmd, env=_clean_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True).returncode == 0


def _binary_args() -> list[str]:
    args = ["--only-binary=:all:", "--python-version", "3.11", "--implementation", "cp", "--abi", "cp311"]
    for p in LINUX_X86_64:
        args += ["--platform", p]
    return args


_PURE_ARGS = ["--only-binary=:all:", "--python-version", "3", "--implementation", "py", "--abi", "none", "--platform", "any"]


def _name_version(filename: str) -> tuple[str, str] | None:
    try:
        if filename.endswith(".whl"):
            n, v, _, _ = parse_wheel_filename(filename)
        elif filename.endswith((".tar.gz", ".zip")):
            n, v = parse_sdist_filename(filename)
        else:
            return None
    except ValueError:
        return None
    return str(n), str(v)


def _files_of(staging: Path, name: str, version: str) -> list[Path]:
    want = (name, str(Version(version)))
    return [p for p in staging.iterdir() if _name_version(p.name) == want]


def _valid(path: Path) -> bool:
    try:
        if path.name.endswith(".whl") or path.name.endswith(".zip"):
            with zipfile.ZipFile(path) as zf:
                return zf.testzip() is None
        if path.name.endswith(".tar.gz"):
            with tarfile.open(path) as tf:
                tf.getmembers()
            return True
    except (OSError, zipfile.BadZipFile, tarfile.TarError, EOFError):
        return False
    return False


def download(pins: list[tuple[str, str]], staging: Path) -> None:
    staging.mkdir(parents=True, exist_ok=True)
    for p in staging.iterdir():  # a file cut short by an earlier, interrupted run
        if not _valid(p):
            p.unlink()
    specs = [f"{n}=={v}" for n, v in pins]
    # The wheel a CPython 3.11 x86-64 Linux machine installs (pure or binary), all pins at once.
    if not _pip_download(staging, _binary_args(), specs):
        for spec in specs:  # find the pin(s) with no such wheel; the pure pass below covers them
            _pip_download(staging, _binary_args(), [spec])
    # Binary packages also get their pure wheel when they publish one (black, mypy, ...): tag
    # priority then has a real choice to make.
    for name, version in pins:
        files = _files_of(staging, name, version)
        if not any(f.name.endswith("-none-any.whl") for f in files):
            _pip_download(staging, _PURE_ARGS, [f"{name}=={version}"])
    # A few small pure packages' sdists, so source paths meet real sdists too.
    sdist_names = {str(canonicalize_name(n)) for n in SDIST_PACKAGES}
    for name, version in pins:
        if name in sdist_names:
            if not _pip_download(staging, ["--no-binary=:all:"], [f"{name}=={version}"]):
                sys.exit(f"fetch_fixtures: could not download the sdist of {name}=={version}")
    missing = [f"{n}=={v}" for n, v in pins if not _files_of(staging, n, v)]
    if missing:
        sys.exit(f"fetch_fixtures: no file could be downloaded for: {', '.join(missing)}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--force", action="store_true", help="fetch again even when a complete set exists")
    opts = ap.parse_args()

    target = fixtures_dir()
    if not opts.force and canary_wheels_dir() is not None:
        print(f"canary fixtures: complete in {target}")
        return 0
    if shutil.which("uv") is None:
        sys.exit("fetch_fixtures: uv is needed (pip install uv, or pip install -e '.[test]')")
    target.mkdir(parents=True, exist_ok=True)
    (target / MARKER_FILE).unlink(missing_ok=True)
    staging = target / ".staging"
    with tempfile.TemporaryDirectory(prefix="pypm-fixtures-") as tmp:
        pins = compile_pins(Path(tmp))
    print(f"canary fixtures: {len(pins)} pins -> {target}", flush=True)
    download(pins, staging)
    fetched = {p.name for p in staging.iterdir() if _valid(p)}
    for name in sorted(fetched):
        os.replace(staging / name, target / name)
    for p in target.iterdir():  # files of an earlier set (--force after new releases)
        if p.is_file() and not p.name.startswith(".") and p.name not in fetched:
            p.unlink()
    shutil.rmtree(staging, ignore_errors=True)
    files = sorted(p.name for p in target.iterdir() if p.is_file() and not p.name.startswith("."))
    wanted = {f"{n}=={v}" for n, v in pins}
    manifest = {
        "requirements-hash": requirements_hash(),
        "requirements": requirement_lines(),
        "pins": sorted(wanted),
        "files": files,
        "sha256": {f: hashlib.sha256((target / f).read_bytes()).hexdigest() for f in files},
    }
    tmp_marker = target / (MARKER_FILE + ".tmp")
    tmp_marker.write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    os.replace(tmp_marker, target / MARKER_FILE)  # written last: its presence means complete
    wheels = sum(1 for f in files if f.endswith(".whl"))
    print(f"canary fixtures: {wheels} wheels and {len(files) - wheels} sdists in {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
