"""A sync's recipe: the store entries a venv was built from, to build a fresh venv again without the lock.

`pypm sync` records one per project in the cache (`<cache>/syncs/<sha256(root)[:32]>.json`) after
it has built a venv from wheels only, with no hooks or signature checks configured: the venv's
state (`pypm.venvstate`: the sha256 of pyproject.toml and pypm.lock, the selection, the
interpreter, the [tool.pypm] knobs) and the wheels installed (name, version, sha256, file name).

`fast_fresh_sync` answers `pypm [-q] sync [--frozen]` from the entry point when `.venv` does not
exist and the recipe's state matches the project exactly as `venvstate.fast_sync` matches a
venv's state.json -- the same inputs, byte for byte, that a full sync turned into this set of
wheels -- so the project model, the lock parser, packaging and the CLI are never imported (on
the canary, ~60% of a warm-cache sync into a fresh venv was imports and parsing). Every store
entry is checked as `Cache.unpack` checks it (present, none of its files written since it was
unpacked), the venv is built with the building marker until state.json is written, and anything
unexpected -- a missing or modified entry, a failed install, another sync at work -- discards
what was built and returns None: the full `pypm sync` then does exactly what it would have.
"""

from __future__ import annotations

import os

TYPE_CHECKING = False  # not from typing (~2 ms on this path)
if TYPE_CHECKING:  # pragma: no cover
    from typing import Any

__all__ = ["RECIPE_VERSION", "recipe_path", "write_recipe", "fast_fresh_sync"]

RECIPE_VERSION = 1


def recipe_path(cache_root: str | os.PathLike[str], root: str | os.PathLike[str]) -> str:
    from .fastpath import sha256

    key = sha256(os.path.realpath(root).encode("utf-8", "surrogateescape")).hexdigest()[:32]
    return os.path.join(cache_root, "syncs", f"{key}.json")


def write_recipe(cache_root: str | os.PathLike[str], root: str | os.PathLike[str], state: dict[str, Any],
                 wheels: list[tuple[str, str, str, str]]) -> None:
    """Record (atomically) that `state` (state.json without "installed") was reached by installing
    `wheels` -- (name, version, sha256, wheel file name) -- into a fresh venv. Best effort: a cache
    that cannot be written only loses the fast path."""
    import json

    path = recipe_path(cache_root, root)
    doc = {"version": RECIPE_VERSION, "root": os.path.realpath(root), "state": state,
           "wheels": [list(w) for w in wheels]}
    from .fastpath import replace_file

    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        replace_file(path, json.dumps(doc, sort_keys=True).encode("utf-8"))
    except OSError:
        pass


def forget_recipe(cache_root: str | os.PathLike[str], root: str | os.PathLike[str]) -> None:
    try:
        os.unlink(recipe_path(cache_root, root))
    except OSError:
        pass


def _matching_recipe(root: str, frozen: bool) -> tuple[str, dict[str, Any]] | None:
    """(cache root, recipe) when the project's recipe matches its files and this request."""
    from .config import cache_dir
    from .fastpath import DEFAULT_SELECTION, json_loads, sha256_file
    from .venvstate import STATE_VERSION, project_token

    cache_root = str(cache_dir())
    try:
        with open(recipe_path(cache_root, root), encoding="utf-8") as f:
            recipe = json_loads(f.read())
    except (OSError, ValueError):
        return None
    if not isinstance(recipe, dict) or recipe.get("version") != RECIPE_VERSION or recipe.get("root") != root:
        return None
    state, wheels = recipe.get("state"), recipe.get("wheels")
    if not isinstance(state, dict) or not isinstance(wheels, list) or not wheels:
        return None
    want = {"version": STATE_VERSION, "python-flag": None, "selection": DEFAULT_SELECTION,
            "pyproject-sha256": sha256_file(os.path.join(root, "pyproject.toml")),
            "lock-sha256": sha256_file(os.path.join(root, "pypm.lock"))}
    if any(state.get(k) != v for k, v in want.items()) or want["lock-sha256"] is None:
        return None
    if state.get("frozen", False) and not frozen:
        return None  # made from a lock that was not checked: only good for --frozen
    tool = state.get("tool")
    if not isinstance(tool, dict) or tool.get("plugins") or tool.get("trusted-keys"):
        return None  # hooks must fire and signatures be checked: the full path does both
    if state.get("project-token") != project_token(root):  # type: ignore[arg-type]
        return None
    if not all(isinstance(w, list) and len(w) == 4 and all(isinstance(x, str) for x in w) for w in wheels):
        return None
    return cache_root, recipe


def _store_entries(cache_root: str, wheels: list[list[str]]) -> list[tuple[list[str], str, Any]] | None:
    """[(wheel, store entry, its manifest)] when every entry is in the store with its manifest;
    None sends the sync down the full path. (Whether an entry was written since it was unpacked
    is checked just before it is installed, on the install threads: torch alone is 12k stats.)"""
    from .wheeltree import manifest_path, read_manifest

    out = []
    for w in wheels:
        sha = w[2]
        if len(sha) != 64 or not all(c in "0123456789abcdef" for c in sha):
            return None
        entry = os.path.join(cache_root, "unpacked", sha[:2], sha)
        mpath = manifest_path(entry)  # type: ignore[arg-type]
        manifest = read_manifest(mpath) if mpath is not None else None
        if manifest is None or not os.path.isdir(entry):
            return None
        out.append((w, entry, manifest))
    return out


class _StoreEntryWritten(Exception):
    """A store entry was written since it was unpacked: the full sync repairs it."""


def _run_all(jobs: list[Any], fn: Any, workers: int) -> None:
    """fn(job) for every job on `workers` threads (linking is system calls that release the GIL);
    the first error stops the others from starting new jobs and is raised."""
    import threading

    it = iter(jobs)
    guard = threading.Lock()
    errors: list[BaseException] = []

    def work() -> None:
        while True:
            with guard:
                job = next(it, None)
            if job is None or errors:
                return
            try:
                fn(job)
            except BaseException as e:  # noqa: BLE001 - handed to the caller
                errors.append(e)
                return

    threads = [threading.Thread(target=work, name=f"pypm-install_{i}") for i in range(max(1, workers))]
    for t in threads:
        t.start()
    try:
        for t in threads:
            t.join()
    except BaseException as e:  # Ctrl-C: no new job starts, and the running ones finish before the
        errors.append(e)        # caller removes the venv (a makedirs still running would recreate it)
        for t in threads:
            t.join()
        raise
    if errors:
        raise errors[0]


def fast_fresh_sync(argv: list[str]) -> int | None:
    """`pypm [-q] sync [-q] [--frozen]` with no `.venv` and a matching recipe: build the venv from
    the store and return 0; else None, having changed nothing."""
    import time

    t0 = time.monotonic()
    from .fastpath import find_root, plain_sync_argv

    if not plain_sync_argv(argv):
        return None

    root = find_root()
    if root is None:
        return None
    venv = os.path.join(root, ".venv")
    if os.path.lexists(venv):
        return None  # an existing venv is fast_sync's (no-op) or the full path's (changes)
    frozen = "--frozen" in argv
    found = _matching_recipe(root, frozen)
    if found is None:
        return None
    cache_root, recipe = found
    state = recipe["state"]
    exe = (state.get("interpreter") or {}).get("executable")
    if not isinstance(exe, str) or not os.path.exists(exe):
        return None
    entries = _store_entries(cache_root, recipe["wheels"])
    if entries is None:
        return None
    from .errors import PypmError
    from .interpreter import query_interpreter

    try:
        interp = query_interpreter(exe)  # from its cache, keyed by the executable's size and mtime
    except PypmError:
        return None
    if interp.version_str != state["interpreter"].get("version"):
        return None
    import fcntl

    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as sync's venv lock; busy: the full path waits
        except OSError:
            return None
        if os.path.lexists(venv):
            return None
        try:
            _build(venv, interp, entries, dict(state, frozen=frozen), cache_root)
        except KeyboardInterrupt as e:  # what was built is gone (_build): report as the CLI does
            from .errors import report_failure

            return report_failure(e, verbose=False)
        except Exception:  # noqa: BLE001 - nothing is left behind; the full sync redoes it and reports
            return None
    finally:
        os.close(fd)
    if not ({"-q", "--quiet"} & set(argv)):
        import sys

        lines = [f"Created {venv} ({interp.describe()})",
                 f"Synced {venv}: +{len(entries)} ~0 -0 (0 unchanged) in {time.monotonic() - t0:.2f}s"]
        lines += [f" + {w[0]}=={w[1]}" for w, _, _ in sorted(entries, key=lambda e: e[0][0])]
        print("\n".join(lines), file=sys.stderr)
    return 0


def _build(venv: str, interp: Any, entries: list[tuple[list[str], str, Any]], state: dict[str, Any],
           cache_root: str) -> None:
    from pathlib import Path

    from .installer import install_wheel
    from .wheeltree import store_written_since
    from .venv import VenvLayout, create_venv, discard_half_built, mark_complete
    from .venvstate import installed_record, write_state

    try:
        create_venv(Path(venv), interp, keep_marker=True)
        layout = VenvLayout.for_interpreter(Path(venv), interp)

        def check(job: tuple[list[str], str, Any]) -> None:
            (_name, _version, sha, _filename), entry, manifest = job
            if store_written_since(cache_root, sha, entry, manifest):  # as Cache.unpack checks
                raise _StoreEntryWritten(entry)

        def install(job: tuple[list[str], str, Any]) -> None:
            (_name, _version, sha, filename), entry, _manifest = job
            install_wheel(layout, Path(entry), wheel_filename=filename, wheel_sha256=sha,
                          journal=False)  # the venv is removed whole on any failure

        # Biggest first: the longest install starts at once instead of last, and its entry's
        # check (one stat per file: torch's 12k) runs beside it on the other thread -- the venv
        # is this sync's own, so a check that fails after linking began still leaves nothing.
        # Two threads: on the canary, 1, 2, 4 and 8 took the same wall time (medians 150-167 ms,
        # A B A B x6) -- links and mkdirs serialise in the file system -- and more only cost
        # system time.
        ordered = sorted(entries, key=lambda e: -len(e[2]["files"]))
        jobs = [(install, ordered[0]), (check, ordered[0])]
        jobs += [(lambda j: (check(j), install(j)), e) for e in ordered[1:]]
        _run_all(jobs, lambda job: job[0](job[1]), min(2, len(jobs)))
        state = dict(state, installed=installed_record(Path(venv), [layout.purelib, layout.platlib]))
        write_state(Path(venv), state)
        mark_complete(Path(venv))
    except BaseException:
        discard_half_built(Path(venv))
        raise
