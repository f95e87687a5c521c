"""A sync's recipe: the store entries a venv was built from, to build a fresh venv again without the lock.

`pypm sync` records one per project in the cache (`<cache>/syncs/<sha256(root)[:32]>.json`) after
it has built a venv from wheels only, with no hooks or signature checks configured: the venv's
state (`pypm.venvstate`: the sha256 of pyproject.toml and pypm.lock, the selection, the
interpreter, the [tool.pypm] knobs) and the wheels installed (name, version, sha256, file name).

`fast_fresh_sync` answers `pypm [-q] sync [--frozen]` from the entry point when `.venv` does not
exist and the recipe's state matches the project exactly as `venvstate.fast_sync` matches a
venv's state.json -- the same inputs, byte for byte, that a full sync turned into this set of
wheels -- so the project model, the lock parser, packaging and the CLI are never imported. The
venv is built from the recipe's plan (`pypm.venvplan`, kept beside it as `<key>.plan`; worked out
by the first such sync), under the project's flock, with the building marker until state.json is
written; anything unexpected -- a missing or modified store entry, a failed link, another sync at
work -- discards what was built and returns None: the full `pypm sync` then does exactly what it
would have.
"""

from __future__ import annotations

import os

TYPE_CHECKING = False  # not from typing (~2 ms on this path)
if TYPE_CHECKING:  # pragma: no cover
    from typing import Any

__all__ = ["RECIPE_VERSION", "recipe_path", "plan_path", "write_recipe", "forget_recipe", "fast_fresh_sync"]

RECIPE_VERSION = 1


def recipe_path(cache_root: str | os.PathLike[str], root: str | os.PathLike[str]) -> str:
    from .fastpath import sha256

    key = sha256(os.path.realpath(root).encode("utf-8", "surrogateescape")).hexdigest()[:32]
    return os.path.join(cache_root, "syncs", f"{key}.json")


def plan_path(recipe: str) -> str:
    """The plan kept beside the recipe file `recipe`."""
    return recipe[: -len(".json")] + ".plan"


def write_recipe(cache_root: str | os.PathLike[str], root: str | os.PathLike[str], state: dict[str, Any],
                 wheels: list[tuple[str, str, str, str]], plans: dict[str, Any] | None = None) -> None:
    """Record (atomically) that `state` (state.json without "installed") was reached by installing
    `wheels` -- (name, version, sha256, wheel file name) -- into a fresh venv. Best effort: a cache
    that cannot be written only loses the fast path. `plans`: install plans the sync already made
    (sha256 -> installer.InstallPlan), reused by the recipe's plan."""
    import json

    path = recipe_path(cache_root, root)
    doc = {"version": RECIPE_VERSION, "root": os.path.realpath(root), "state": state,
           "wheels": [list(w) for w in wheels]}
    from .fastpath import replace_file

    data = json.dumps(doc, sort_keys=True).encode("utf-8")
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        replace_file(path, data)
    except OSError:
        return
    # Its plan too (pypm.venvplan), from the venv this sync has just built -- its RECORDs, scripts
    # and the rest become the plan's copies when they are byte for byte what the plan would write
    # -- so that the first fresh venv is as fast as the later ones. ~10 ms on the canary, ~35 ms
    # on the web stack, while everything it needs is loaded.
    from .fastpath import sha256
    from .venvplan import keep_plan, make_plan

    real = os.path.realpath(root)
    venv = os.path.join(real, ".venv")
    try:
        plan = make_plan(str(cache_root), doc, sha256(data).hexdigest(), venv, known=plans)
        if plan is not None:
            keep_plan(plan_path(path), plan, venv, write_missing=False)
    except Exception:  # noqa: BLE001 - best effort: the first fresh-venv sync works it out instead
        pass


def forget_recipe(cache_root: str | os.PathLike[str], root: str | os.PathLike[str]) -> None:
    """Remove the project's recipe, its plan and the plan's copies of files."""
    path = recipe_path(cache_root, root)
    key = os.path.basename(path)[: -len(".json")]
    try:
        copies = [f for f in os.listdir(os.path.dirname(path)) if f.startswith(key + ".") and f.endswith(".blob")]
    except OSError:
        copies = []
    for p in (path, plan_path(path), *(os.path.join(os.path.dirname(path), f) for f in copies)):
        try:
            os.unlink(p)
        except OSError:
            pass


def _cache_root() -> str:
    """config.cache_dir() as a string, without pathlib on Linux (a test ties the two together)."""
    import sys

    if not sys.platform.startswith("linux"):  # pragma: no cover - pypm's sandbox needs Linux
        from .config import cache_dir

        return str(cache_dir())
    env = os.environ.get("PYPM_CACHE_DIR")
    if env:
        return os.path.realpath(os.path.expanduser(env))
    xdg = os.environ.get("XDG_CACHE_HOME")
    return os.path.join(xdg, "pypm") if xdg else os.path.join(os.path.expanduser("~"), ".cache", "pypm")


def _matching_recipe(root: str, frozen: bool) -> tuple[str, str, str, dict[str, Any]] | None:
    """(cache root, recipe file, sha256 of its bytes, recipe) when the project's recipe matches its
    files and this request."""
    from .fastpath import DEFAULT_SELECTION, json_loads, read_own_file, sha256, sha256_file
    from .venvstate import STATE_VERSION, project_token

    cache_root = _cache_root()
    path = recipe_path(cache_root, root)
    # It names the store entries the venv is built from: the cache user's own only (as the plan).
    got = read_own_file(path)
    if got is None:
        return None
    raw = got[0]
    try:
        recipe = json_loads(raw.decode("utf-8"))
    except ValueError:
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
    if state.get("project-token") != project_token(root):
        return None
    if "path-tokens" in state:  # path dependencies are built from their directories: the full sync
        return None
    if not all(isinstance(w, list) and len(w) == 4 and all(isinstance(x, str) for x in w) for w in wheels):
        return None
    return cache_root, path, sha256(raw).hexdigest(), recipe


def fast_fresh_sync(argv: list[str]) -> int | None:
    """`pypm [-q] sync [-q] [--frozen]` with no `.venv` and a matching recipe: build the venv from
    the store and return 0; else None, having changed nothing. Ctrl-C anywhere is reported as the
    CLI reports it ("interrupted", 130), not as a traceback: what run_plan built is gone by then;
    SIGTERM likewise ("terminated", 143)."""
    try:
        return _fast_fresh_sync(argv)
    except KeyboardInterrupt as e:
        from .errors import report_failure

        return report_failure(e, verbose=False)


def _fast_fresh_sync(argv: list[str]) -> int | None:
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
    cache_root, rpath, recipe_sha, recipe = found
    state = recipe["state"]
    exe = (state.get("interpreter") or {}).get("executable")
    import fcntl

    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as sync's venv lock; busy: the full path waits
        except OSError:
            return None
        if os.path.lexists(venv):
            return None
        from .fastpath import terminate_as_interrupt
        from .venvplan import keep_plan, load_plan, make_plan, run_plan

        terminate_as_interrupt()  # SIGTERM, as Ctrl-C: run_plan removes what it built

        ppath = plan_path(rpath)
        plan = load_plan(ppath, recipe_sha, venv, exe, cache_root)
        made = plan is None
        if plan is None:
            try:
                plan = make_plan(cache_root, recipe, recipe_sha, venv)
            except Exception:  # noqa: BLE001 - the full path does it, and says what is wrong
                return None
            if plan is None:
                return None
        try:
            run_plan(plan, venv, dict(state, frozen=frozen))  # (Ctrl-C: what was built is gone; see above)
        except Exception:  # noqa: BLE001 - nothing is left behind; the full sync redoes it and reports
            return None
        if made:  # still under the lock: no other sync can have touched the venv yet
            try:
                keep_plan(ppath, plan, venv)
            except Exception:  # noqa: BLE001 - best effort: the next fresh venv works it out again
                pass
    finally:
        os.close(fd)
    if not ({"-q", "--quiet"} & set(argv)):
        import sys

        added = plan["added"]
        lines = [f"Created {venv} ({plan['describe']})",
                 f"Synced {venv}: +{len(added)} ~0 -0 (0 unchanged) in {time.monotonic() - t0:.2f}s"]
        lines += [f" + {name}=={version}" for name, version in added]
        print("\n".join(lines), file=sys.stderr)
    return 0
