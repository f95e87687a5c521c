"""The record of what a `.venv` was synced from: `.venv/.pypm/state.json`, and the no-op check on it.

Written by `pypm sync` after the venv matches the lock; read by `pypm run` and by `pypm sync`'s
no-op check (`fast_sync`), which compare it with the current pyproject.toml and pypm.lock hashes
and the requested selection (run's entry-point fast path, run.fast_main, parses it without this
module), then check the venv in O(directories), not O(files): see `venv_intact`. Imports only
`os` and `pypm.fastpath` at module level: `fast_sync` runs before the CLI loads.
"""

from __future__ import annotations

import os

from .fastpath import json_loads, sha256, sha256_file

TYPE_CHECKING = False  # not from typing (~2 ms on the no-op sync): annotations are strings here
if TYPE_CHECKING:  # pragma: no cover
    from pathlib import Path
    from typing import Any, Callable, Iterable

    from .selection import Selection

__all__ = ["STATE_VERSION", "STATE_REL", "expected_state", "tool_knobs", "index_knobs", "read_state", "write_state",
           "drop_state", "project_token", "files_present", "installed_record", "record_dirs", "venv_intact",
           "shared_sync_lock", "synced_unchanged", "fast_sync"]

STATE_VERSION = 1
STATE_REL = os.path.join(".pypm", "state.json")  # relative to the venv (`venv / STATE_REL` for a Path)


def _selection_json(sel: Selection) -> dict[str, Any]:
    out: dict[str, Any] = {"main": sel.main, "extras": sorted(sel.extras), "groups": sorted(sel.groups),
                           "include-project": sel.include_project}
    if sel.packages or sel.all_packages:  # (only then: the default selection's record is unchanged)
        out.update({"packages": sorted(sel.packages), "all-packages": sel.all_packages})
    if sel.no_install:  # likewise
        out["no-install"] = sorted(sel.no_install)
    return out


def expected_state(root: Path, sel: Selection, *, python_flag: str | None, frozen: bool) -> dict[str, Any] | None:
    """What state.json must say for a venv to be current; None when there is no lock yet."""
    lock_sha = sha256_file(os.path.join(root, "pypm.lock"))
    py_sha = sha256_file(os.path.join(root, "pyproject.toml"))
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
            "index": index_knobs(project),
            # The validated [tool.pypm.sandbox] and the name, for pypm.sandboxing on the fast path.
            "name": project.name,
            "sandbox": {"network": sb.network, "bind": list(sb.bind), "ro-bind": list(sb.ro_bind), "env": list(sb.env),
                        "profile": sb.profile, "writable-project": sb.writable_project,
                        "limits": dict(sb.limits)}}


def index_knobs(project: Any) -> dict[str, Any]:
    """The index settings `run --with`'s environment is keyed by (run._with_args), kept in
    state.json for run's fast path (run._fast_with)."""
    tool = project.tool
    return {"index-url": tool.index_url, "extra-index-url": list(tool.extra_index_urls),
            "find-links": list(project.find_links_paths()), "index-strategy": tool.index_strategy}


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


def read_state(venv: Path | str) -> dict[str, Any] | None:
    """The venv's state.json, or None when it is missing or unreadable (then: sync)."""
    try:
        with open(os.path.join(venv, STATE_REL), encoding="utf-8") as f:
            data = json_loads(f.read())
    except (OSError, ValueError):  # (a bad UTF-8 byte is a UnicodeDecodeError, a ValueError)
        return None
    return data if isinstance(data, dict) else None


def write_state(venv: Path, state: dict[str, Any]) -> None:
    """Atomically: a reader sees the old state or the new one, never a torn file.

    fastpath.replace_file, without lockfile.write_atomic's fsync and imports (dataclasses,
    tempfile: ~8 ms of a fresh-venv sync, and the fsync a few more): state.json is knowledge
    about the venv, not data. A state lost or emptied by a crash of the machine reads as no
    state (read_state -> None), and the next sync checks the venv in full, as the installer's
    journal and RECORD (also written without fsync) are repaired."""
    import json

    from .fastpath import replace_file

    path = os.path.join(os.fspath(venv), STATE_REL)
    try:
        os.mkdir(os.path.dirname(path))
    except FileExistsError:
        pass
    replace_file(path, (json.dumps(state, indent=2, sort_keys=True) + "\n").encode("utf-8"))


def drop_state(venv: Path) -> None:
    # Before the venv changes: a crash from here on must not leave a state file that
    # tells `pypm run` the venv is current.
    try:
        os.unlink(os.path.join(venv, STATE_REL))
    except FileNotFoundError:
        pass


# --------------------------------------------------------------------------- what the venv holds

def project_token(root: Path | str, pyproject: bytes | None = None) -> str:
    """Identity of the editable install: the files its build reads (a change means reinstall).
    `pyproject`: pyproject.toml's bytes when the caller has read them already."""
    h = sha256()
    for name in ("pyproject.toml", "setup.py", "setup.cfg"):
        if name == "pyproject.toml" and pyproject is not None:
            data = pyproject
        else:
            try:
                with open(os.path.join(root, name), "rb") as f:
                    data = f.read()
            except FileNotFoundError:
                continue
        h.update(name.encode() + b"\0" + data + b"\0")
    return h.hexdigest()


def files_present(dist_info: Path | str) -> bool:
    """Every file in the dist's RECORD exists with its recorded size and was not modified after
    the install (one stat each, no hashing): catches what a crash or a stray `rm` left behind, and
    an edit in place. The installer writes RECORD last, so no installed file is newer than it;
    a file whose mtime is later was written since. (A file rewritten with the same size and its
    old mtime restored is not caught here: `pypm verify --venv` hashes; docs/architecture.md.)
    This is the full sync's check (O(files)); the no-op check is `venv_intact` (O(directories))."""
    import csv

    try:
        with open(os.path.join(dist_info, "RECORD"), newline="", encoding="utf-8") as f:
            installed_at = os.fstat(f.fileno()).st_mtime_ns
            rows = list(csv.reader(f))
    except (OSError, UnicodeDecodeError, csv.Error):
        return False
    base = os.path.dirname(os.fspath(dist_info)) + "/"  # plain strings: pathlib costs ~3x per file here
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


def installed_record(venv: Path | str, site_dirs: Iterable[Path | str]) -> dict[str, Any]:
    """What state.json keeps about the installed dists, taken at the end of a sync that changed or
    verified the venv: `site-dirs` and `dists` (dist-info dirs), relative to the venv; `records`,
    each dist's RECORD as [size, mtime_ns] (same order as `dists`); and `dirs`, {dir relative to
    the venv: mtime_ns} for every directory holding a file of some RECORD, and its parents up to
    its site dir (excluded: the venv itself, anything outside it, `__pycache__` dirs, whose
    mtimes change whenever Python writes bytecode). `records`/`dirs` are None when a RECORD
    cannot be read or a directory is gone: then every no-op sync takes the full path."""
    venv = os.path.abspath(venv)
    rel = sorted({os.path.relpath(os.path.abspath(d), venv) for d in site_dirs})
    dists = _dist_infos(venv, rel)
    snap = _snapshot(venv, rel, dists) if dists is not None else None
    records: list[list[int]] | None = None
    dirs: dict[str, int] | None = None
    if snap is not None:
        records, dirs = snap
        _outlast_the_tick(max([*dirs.values(), *(m for _, m in records)], default=0))
    return {"site-dirs": rel, "dists": dists, "records": records, "dirs": dirs}


_CLOCK_REALTIME_COARSE = 5  # Linux's clock id (the time module does not name it)


def _outlast_the_tick(newest_ns: int) -> None:
    # Without fine-grained ("multigrain", Linux 6.13+) timestamps, an mtime is the coarse clock
    # (one tick: 1-10 ms): a change made in the same tick as the newest recorded mtime would leave
    # it as it is, unseen by the no-op check. Git calls these entries "racily clean". Waiting until
    # the tick is over (at most one, and only when something changed this recent) makes every
    # later change visible; changes by other processes *during* the sync remain a race, as for
    # every tool that checks timestamps.
    import time

    try:
        clock: Callable[[], int] = lambda: time.clock_gettime_ns(_CLOCK_REALTIME_COARSE)  # noqa: E731
        clock()
    except (AttributeError, OSError):  # pragma: no cover - not Linux (pypm's sandbox needs Linux anyway)
        clock = time.time_ns
    deadline = time.monotonic() + 0.05  # the clock stepping back must not hang a sync
    while clock() <= newest_ns and time.monotonic() < deadline:
        time.sleep(0.001)


def _dist_infos(venv: str, rel_dirs: list[str]) -> list[str] | None:
    found: set[str] = set()
    for d in rel_dirs:
        try:
            found.update(f"{d}/{n}" for n in os.listdir(os.path.join(venv, d)) if n.endswith(".dist-info"))
        except FileNotFoundError:
            continue
        except OSError:
            return None
    return sorted(found)


def _snapshot(venv: str, rel_sites: list[str], dists: list[str]) -> tuple[list[list[int]], dict[str, int]] | None:
    # One pass over every RECORD (O(files), as the full sync's files_present already is), so that
    # the no-op check can be O(directories): creating, deleting or renaming any entry changes
    # its directory's mtime.
    import csv

    prefix = venv + "/"
    stops = {prefix + s for s in rel_sites}
    records: list[list[int]] = []
    held: set[str] = set()  # directories (as RECORD spells them, relative to a site dir) per dist
    seen: set[str] = set()  # absolute directories already walked up from
    dirs: set[str] = set()
    for dist in dists:
        try:
            with open(prefix + dist + "/RECORD", newline="", encoding="utf-8") as f:
                st = os.fstat(f.fileno())
                held = {row[0].rpartition("/")[0] for row in csv.reader(f) if row and row[0]}
        except (OSError, UnicodeDecodeError, csv.Error):
            return None
        records.append([st.st_size, st.st_mtime_ns])
        _walk_up(prefix, stops, dist, held, seen, dirs)
    mtimes: dict[str, int] = {}
    for d in sorted(dirs):
        try:
            mtimes[d[len(prefix):]] = os.stat(d).st_mtime_ns
        except OSError:
            return None
    return records, mtimes


def _walk_up(prefix: str, stops: set[str], dist: str, held: set[str], seen: set[str], dirs: set[str]) -> None:
    base = prefix + dist.rpartition("/")[0]  # RECORD paths are relative to the dist-info's parent
    for d in held:
        d = os.path.normpath(os.path.join(base, d))  # once per directory, not per file
        while d not in seen:
            seen.add(d)
            if not d.startswith(prefix):
                break  # the venv itself, or a file outside it: not ours to watch
            if os.path.basename(d) != "__pycache__":
                dirs.add(d)
            if d in stops:
                break
            d = os.path.dirname(d)


def record_dirs(venv: str, rel_sites: list[str], held: list[tuple[str, set[str]]]) -> list[str]:
    """The directories `installed_record` keeps the mtimes of (relative to the venv, sorted), for
    dists given as (dist-info relative to the venv, the directories its RECORD's paths name):
    the fresh-venv fast path (pypm.syncrecipe) works them out once, and only stats them."""
    prefix = os.path.abspath(venv) + "/"
    stops = {prefix + s for s in rel_sites}
    seen: set[str] = set()
    dirs: set[str] = set()
    for dist, names in held:
        _walk_up(prefix, stops, dist, names, seen, dirs)
    return sorted(d[len(prefix):] for d in dirs)


def venv_intact(venv: Path | str, state: dict[str, Any]) -> bool:
    """The no-op check, O(directories): the venv holds exactly the dist-infos `state` recorded,
    none interrupted (no journal), each RECORD with its recorded size and mtime, and every recorded
    directory with its recorded mtime -- a file deleted, created, or replaced by a rename changes
    its directory's mtime. Not seen: a file edited in place (same inode), as uv and pip do not see
    it either; `pypm verify --venv` finds it and `pypm sync --reinstall` repairs it."""
    rec = state.get("installed")
    if not isinstance(rec, dict):
        return False
    dists, records, dirs = rec.get("dists"), rec.get("records"), rec.get("dirs")
    if not (isinstance(dists, list) and isinstance(records, list) and isinstance(dirs, dict)
            and len(records) == len(dists)):
        return False  # (a state.json from before `records`/`dirs`: the full path records them)
    venv = os.fspath(venv)
    try:
        if os.listdir(os.path.join(venv, ".pypm", "journal")):
            return False  # an install was interrupted: the full sync repairs it
    except FileNotFoundError:
        pass
    except OSError:
        return False
    if _dist_infos(venv, list(rec.get("site-dirs") or [])) != dists:
        return False
    prefix = venv + "/"
    stat = os.stat
    try:
        for dist, (size, mtime) in zip(dists, records):
            st = stat(prefix + dist + "/RECORD")
            if st.st_mtime_ns != mtime or st.st_size != size:
                return False
        for d, mtime in dirs.items():
            if stat(prefix + d).st_mtime_ns != mtime:
                return False
    except (OSError, TypeError, ValueError):  # gone, or a hand-edited record
        return False
    return True


# --------------------------------------------------------------------------- `pypm sync`'s no-op check

def shared_sync_lock(root: Path | str) -> int | None:
    """A descriptor holding a shared flock on the project directory (close it to release), or None
    when a sync holds it (`sync.project_lock`, exclusive) or it cannot be taken: then the no-op
    check must not run, the full path waits. Read state.json only after taking it."""
    import fcntl

    try:
        fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


def synced_unchanged(root: Path | str, venv: Path | str, state: dict[str, Any], *,
                     pyproject: bytes | None = None) -> bool:
    """What `pypm sync`'s no-op fast path checks once `state` matches pyproject.toml, pypm.lock and
    the request (as `pypm run` checks): no hook or signature check configured, the interpreter
    and the editable project's inputs unchanged, and `venv_intact`. The caller holds
    `shared_sync_lock(root)` and read `state` after taking it (no other sync at work)."""
    tool = state.get("tool")
    if not isinstance(tool, dict) or tool.get("plugins") or tool.get("trusted-keys"):
        return False  # hooks must fire and signatures be checked on every sync: the full path does
    exe = (state.get("interpreter") or {}).get("executable")
    if not exe or not isinstance(exe, str) or not os.path.exists(exe):
        return False
    if state.get("project-token") != project_token(root, pyproject):
        return False
    from .fastpath import path_tokens_current

    if not path_tokens_current(state.get("path-tokens")):
        return False
    return venv_intact(venv, state)




def fast_sync(argv: list[str]) -> int | None:
    """`pypm [-q] sync [-q] [--frozen]` on a synced project, from the entry point before argparse
    and the CLI load (as `run.fast_main` does for run): 0 when the venv is current, else None and
    nothing was done (the full CLI then does what it would have). Imports os, fcntl, time and the
    builtin _sha256/_json only (`-X importtime`)."""
    import time

    t0 = time.monotonic()
    from .fastpath import DEFAULT_SELECTION, find_root, plain_sync_argv

    if not plain_sync_argv(argv):
        return None

    root = find_root()
    if root is None:
        return None
    venv = os.path.join(root, ".venv")
    fd = shared_sync_lock(root)
    if fd is None:
        return None  # another sync at work (or no flock here): the full path waits for it
    try:
        state = read_state(venv)  # once, under the lock: no sync can rewrite it meanwhile
        if state is None:
            return None
        try:
            with open(os.path.join(root, "pyproject.toml"), "rb") as f:
                pyproject = f.read()
        except OSError:
            return None
        want = {"version": STATE_VERSION, "pyproject-sha256": sha256(pyproject).hexdigest(),
                "lock-sha256": sha256_file(os.path.join(root, "pypm.lock")), "python-flag": None,
                "selection": DEFAULT_SELECTION}
        if want["lock-sha256"] is None or any(state.get(k) != v for k, v in want.items()):
            return None
        if state.get("frozen", False) and "--frozen" not in argv:
            return None  # a venv synced from an unchecked lock only satisfies --frozen
        if state.get("extraneous"):
            return None  # `pypm run` kept packages the selection does not want: sync removes them
        if not os.path.exists(os.path.join(venv, "bin", "python")):
            return None
        if not synced_unchanged(root, venv, state, pyproject=pyproject):
            return None
    finally:
        os.close(fd)  # releases the shared lock
    if not ({"-q", "--quiet"} & set(argv)):
        import sys

        n = len((state.get("installed") or {}).get("dists") or [])
        print(f"Checked {n} packages in {time.monotonic() - t0:.2f}s: nothing to do", file=sys.stderr)
    return 0
