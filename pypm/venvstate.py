"""The record of what a `.venv` was synced from: `.venv/.pypm/state.json`.

Written by `pypm sync` after the venv matches the lock; read by `pypm run` and by `pypm sync`'s
no-op check (`fast_sync`), which compare it with the current pyproject.toml and pypm.lock hashes
and the requested selection (run's entry-point fast path, run.fast_main, parses it without this
module). Imports only the standard library: `fast_sync` runs before the CLI loads.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from .selection import Selection

__all__ = ["STATE_VERSION", "STATE_REL", "expected_state", "tool_knobs", "read_state", "write_state",
           "drop_state", "project_token", "files_present", "installed_record", "venv_intact",
           "synced_unchanged", "fast_sync"]

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
    sb = project.tool.sandbox
    return {"sandbox-enabled": sb.enabled, "plugins": bool(project.tool.plugins),
            "plugin-run": _plugin_run(project),
            "trusted-keys": list(project.tool.trusted_keys),
            # The validated [tool.pypm.sandbox] and the name, for pypm.sandboxing on the fast path.
            "name": project.name,
            "sandbox": {"network": sb.network, "bind": list(sb.bind), "ro-bind": list(sb.ro_bind), "env": list(sb.env),
                        "profile": sb.profile, "writable-project": sb.writable_project}}


def _plugin_run(project: Any) -> dict[str, Any] | None:
    # Which enabled plugins have run hooks, and the files that decide it (host.run_hook_record):
    # lets `pypm run`'s fast path skip the plugin machinery. None: no plugins, or one cannot be
    # loaded (then every run takes the full path, which reports it).
    if not project.tool.plugins:
        return None
    from .errors import PluginError
    from .plugins.host import run_hook_record

    try:
        return run_hook_record(project)
    except PluginError:
        return None


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


# --------------------------------------------------------------------------- `pypm sync`'s no-op check

def project_token(root: Path) -> str:
    """Identity of the editable install: the files its build reads (a change means reinstall)."""
    h = hashlib.sha256()
    for name in ("pyproject.toml", "setup.py", "setup.cfg"):
        try:
            h.update(name.encode() + b"\0" + (root / name).read_bytes() + b"\0")
        except FileNotFoundError:
            pass
    return h.hexdigest()


def files_present(dist_info: Path) -> bool:
    """Every file in the dist's RECORD exists with its recorded size and was not modified after
    the install (one stat each, no hashing): catches what a crash or a stray `rm` left behind, and
    an edit in place. The installer writes RECORD last, so no installed file is newer than it;
    a file whose mtime is later was written since. (A file rewritten with the same size and its
    old mtime restored is not caught here: `pypm verify --venv` hashes; docs/architecture.md.)"""
    import csv

    try:
        with open(dist_info / "RECORD", newline="", encoding="utf-8") as f:
            installed_at = os.fstat(f.fileno()).st_mtime_ns
            rows = list(csv.reader(f))
    except (OSError, UnicodeDecodeError, csv.Error):
        return False
    base = str(dist_info.parent) + "/"  # plain strings: pathlib costs ~3x per file on this path
    for row in rows:
        if not row or not row[0]:
            continue
        try:
            st = os.stat(base + row[0])
        except OSError:
            return False
        if len(row) > 2 and row[2] and row[2].isdigit() and int(row[2]) != st.st_size:
            return False
        if st.st_mtime_ns > installed_at:
            return False
    return True


def installed_record(venv: Path, site_dirs: list[Path]) -> dict[str, Any]:
    """What state.json keeps about the installed dists: where they live and their dist-info dirs."""
    rel = sorted({str(Path(d).relative_to(venv)) for d in site_dirs})
    return {"site-dirs": rel, "dists": _dist_infos(venv, rel)}


def _dist_infos(venv: Path, rel_dirs: list[str]) -> list[str] | None:
    found: set[str] = set()
    for d in rel_dirs:
        try:
            found.update(f"{d}/{n}" for n in os.listdir(venv / d) if n.endswith(".dist-info"))
        except FileNotFoundError:
            continue
        except OSError:
            return None
    return sorted(found)


def venv_intact(venv: Path, state: dict[str, Any]) -> bool:
    """The venv holds exactly the dists `state` recorded, none interrupted (no journal), every
    file of each present with its size: what a full sync's plan would also find, without
    reading the lock."""
    rec = state.get("installed")
    if not isinstance(rec, dict) or not isinstance(rec.get("dists"), list):
        return False
    try:
        if os.listdir(venv / ".pypm" / "journal"):
            return False  # an install was interrupted: the full sync repairs it
    except FileNotFoundError:
        pass
    except OSError:
        return False
    if _dist_infos(venv, list(rec.get("site-dirs") or [])) != rec["dists"]:
        return False
    return all(files_present(venv / d) for d in rec["dists"])


def synced_unchanged(root: Path, venv: Path, state: dict[str, Any]) -> bool:
    """What `pypm sync`'s no-op fast path checks once `state` matches pyproject.toml, pypm.lock and
    the request (as `pypm run` checks): no hook or signature check configured, the interpreter
    and the editable project's inputs unchanged, no other sync at work, and `venv_intact`."""
    import fcntl

    tool = state.get("tool")
    if not isinstance(tool, dict) or tool.get("plugins") or tool.get("trusted-keys"):
        return False  # hooks must fire and signatures be checked on every sync: the full path does
    exe = (state.get("interpreter") or {}).get("executable")
    if not exe or not os.path.exists(exe) or state.get("project-token") != project_token(Path(root)):
        return False
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)  # another sync at work: take the full path
        except OSError:
            return False
        return read_state(Path(venv)) == state and venv_intact(Path(venv), state)
    finally:
        os.close(fd)


_FAST_SYNC_FLAGS = {"-q", "--quiet", "--frozen"}


def fast_sync(argv: list[str]) -> int | None:
    """`pypm [-q] sync [-q] [--frozen]` on a synced project, from the entry point before argparse
    and the CLI load (as `run.fast_main` does for run): 0 when the venv is current, else None and
    nothing was done (the full CLI then does what it would have). Canary no-op sync: ~55 -> ~25 ms."""
    import time

    t0 = time.monotonic()
    if "sync" not in argv[:2] or not set(argv) - {"sync"} <= _FAST_SYNC_FLAGS or argv.count("sync") != 1:
        return None
    if argv[0] != "sync" and argv[0] not in ("-q", "--quiet"):
        return None
    from .fastpath import DEFAULT_SELECTION, find_root

    root = find_root()
    if root is None:
        return None
    venv = Path(root) / ".venv"
    state = read_state(venv)
    lock_sha = _sha256_file(Path(root) / "pypm.lock")
    if state is None or lock_sha is None:
        return None
    frozen = "--frozen" in argv
    want = {"version": STATE_VERSION, "pyproject-sha256": _sha256_file(Path(root) / "pyproject.toml"),
            "lock-sha256": lock_sha, "python-flag": None, "selection": DEFAULT_SELECTION}
    if any(state.get(k) != v for k, v in want.items()):
        return None
    if state.get("frozen", False) and not frozen:
        return None  # a venv synced from an unchecked lock only satisfies --frozen
    if not (venv / "bin" / "python").exists() or not synced_unchanged(Path(root), venv, state):
        return None
    if not ({"-q", "--quiet"} & set(argv)):
        import sys

        n = len((state.get("installed") or {}).get("dists") or [])
        print(f"Checked {n} packages in {time.monotonic() - t0:.2f}s: nothing to do", file=sys.stderr)
    return 0
