"""The record of what a `.venv` was synced from: `.venv/.pypm/state.json`.

Written by `pypm sync` after the venv matches the lock; read by `pypm run`'s fast path,
which compares it with the current pyproject.toml and pypm.lock hashes and the requested
selection. Imports only the standard library: it is on that hot path.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from .selection import Selection

__all__ = ["STATE_VERSION", "STATE_REL", "expected_state", "tool_knobs", "read_state", "write_state",
           "drop_state"]

STATE_VERSION = 1
STATE_REL = Path(".pypm") / "state.json"


def _sha256_file(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except FileNotFoundError:
        return None


def _selection_json(sel: Selection) -> dict[str, Any]:
    return {"main": sel.main, "extras": sorted(sel.extras), "groups": sorted(sel.groups),
            "include-project": sel.include_project}


def expected_state(root: Path, sel: Selection, *, python_flag: str | None, frozen: bool) -> dict[str, Any] | None:
    """What state.json must say for a venv to be current; None when there is no lock yet."""
    lock_sha = _sha256_file(root / "pypm.lock")
    py_sha = _sha256_file(root / "pyproject.toml")
    if lock_sha is None or py_sha is None:
        return None
    return {"version": STATE_VERSION, "pyproject-sha256": py_sha, "lock-sha256": lock_sha,
            "selection": _selection_json(sel), "python-flag": python_flag, "frozen": frozen}


def tool_knobs(project: Any) -> dict[str, Any]:
    """The [tool.pypm] settings `pypm run` needs, kept in state.json so its fast path does not
    parse pyproject.toml (state.json is only trusted while pyproject.toml's hash matches)."""
    return {"sandbox-enabled": project.tool.sandbox.enabled, "plugins": bool(project.tool.plugins),
            "trusted-keys": list(project.tool.trusted_keys)}


def read_state(venv: Path) -> dict[str, Any] | None:
    """The venv's state.json, or None when it is missing or unreadable (then: sync)."""
    try:
        data = json.loads((venv / STATE_REL).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def write_state(venv: Path, state: dict[str, Any]) -> None:
    """Atomically: a reader sees the old state or the new one, never a torn file."""
    from .lockfile import write_atomic

    (venv / STATE_REL).parent.mkdir(exist_ok=True)
    write_atomic(venv / STATE_REL, json.dumps(state, indent=2, sort_keys=True) + "\n")


def drop_state(venv: Path) -> None:
    # Before the venv changes: a crash from here on must not leave a state file that
    # tells `pypm run` the venv is current.
    try:
        (venv / STATE_REL).unlink()
    except FileNotFoundError:
        pass
