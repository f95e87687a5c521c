"""Where the real canary wheels fetched by scripts/fetch_fixtures.py live on this machine."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

__all__ = [
    "CANARY_REQUIREMENTS",
    "TORCH_RUNTIME_REQUIREMENTS",
    "HEAVY_MARKER",
    "SDIST_PACKAGES",
    "MARKER_FILE",
    "requirements_hash",
    "fixtures_dir",
    "canary_wheels_dir",
    "canary_manifest",
    "local_torch_wheel",
]

# The canary's requirement set (examples/my-lib) plus its build backend; a universal
# resolution of these (requires-python >= 3.9, every OS) is what the test index serves.
CANARY_REQUIREMENTS: tuple[str, ...] = (
    "requests==2.32.3",
    'tomli>=2; python_version < "3.11"',
    "black==24.4.2",
    "pytest==8.0.2",
    "mypy==1.10.0",
    "setuptools>=68",
    "wheel",
)

# torch's runtime dependencies (from the METADATA of the CPU torch wheel under /opt/wheels);
# torch itself comes from that find-links directory, not from the test index. They carry
# the marker of my-lib's `heavy` extra (HEAVY_MARKER) when resolved.
TORCH_RUNTIME_REQUIREMENTS: tuple[str, ...] = (
    "filelock",
    "typing-extensions>=4.10.0",
    "setuptools>=77.0.3",
    "sympy>=1.13.3",
    "networkx>=2.5.1",
    "jinja2",
    "fsspec>=0.8.5",
)

HEAVY_MARKER = 'python_version == "3.11" and sys_platform == "linux" and platform_machine == "x86_64"'

# Small pure packages whose sdist is fetched too, so sdist code paths meet real sdists.
SDIST_PACKAGES: tuple[str, ...] = ("idna", "tomli")

MARKER_FILE = ".complete"
# Bump when scripts/fetch_fixtures.py changes which files it fetches: a new directory results.
FETCH_LOGIC_VERSION = 3
LOCAL_WHEELS = Path("/opt/wheels")


def requirements_hash() -> str:
    """Short hash of everything that decides the fixture set (a change means a new directory)."""
    blob = json.dumps([CANARY_REQUIREMENTS, TORCH_RUNTIME_REQUIREMENTS, SDIST_PACKAGES, FETCH_LOGIC_VERSION])
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def fixtures_dir() -> Path:
    """$PYPM_FIXTURES_DIR, else ~/.cache/pypm-test-fixtures/<hash of the requirement list>/."""
    env = os.environ.get("PYPM_FIXTURES_DIR")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "pypm-test-fixtures" / requirements_hash()


def canary_manifest() -> dict[str, object] | None:
    """The marker file's content (pins, files, hash) when a complete fetch exists, else None."""
    marker = fixtures_dir() / MARKER_FILE
    try:
        data = json.loads(marker.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("requirements-hash") != requirements_hash():
        return None
    return data


def canary_wheels_dir() -> Path | None:
    """The directory of fetched canary wheels/sdists, or None when the fetch is missing or partial."""
    manifest = canary_manifest()
    if manifest is None:
        return None
    d = fixtures_dir()
    files = manifest.get("files", [])
    if not isinstance(files, list) or not all((d / str(f)).is_file() for f in files):
        return None
    return d


def local_torch_wheel() -> Path | None:
    """The CPU torch wheel in the machine's find-links directory, if present."""
    found = sorted(LOCAL_WHEELS.glob("torch-*.whl")) if LOCAL_WHEELS.is_dir() else []
    return found[-1] if found else None
