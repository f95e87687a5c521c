"""The `pypm sync` workflow: make `.venv` hold exactly the locked selection, verified.

Plan first (pure, `pypm.plan`), then fetch everything through the cache (verified), then
apply removals, replacements and installs in one place, then record `.venv/.pypm/state.json`
(`pypm.venvstate`) so `pypm run` can tell in two file hashes that nothing needs doing.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from .errors import ExitCode, UsageError
from .selection import Selection, selection_of
from .venvstate import drop_state as _drop_state
from .venvstate import expected_state, files_present, installed_record, project_token, read_state, tool_knobs
from .venvstate import write_state as _write_state

if TYPE_CHECKING:  # pragma: no cover
    from typing import Callable

    from .installer import LinkMode

GIL_SWITCH_INTERVAL = 0.0005  # seconds, while a sync fetches, unpacks and installs (see _sync_locked)

__all__ = ["SyncOptions", "sync_project", "ensure_synced", "already_synced", "keeping_held"]


@dataclass(frozen=True)
class SyncOptions:
    selection: Selection
    extras: tuple[str, ...] = ()  # as typed, to report unknown names
    groups: tuple[str, ...] = ()
    locked: bool = False
    frozen: bool = False
    offline: bool = False
    python: str | None = None
    link_mode: LinkMode | None = None  # the CLI's --link-mode choices
    compile: bool = False
    dry_run: bool = False
    reinstall: bool = False  # every package, from re-verified store entries (a repair beyond sync's stat checks)
    # `sync --check`: plan as --dry-run does against the lock as it is (never re-locked), and fail
    # (exit 1) when .venv would change
    check: bool = False
    # What the selection does not want is removed (plan.KEEP_NONE: an exact sync) or partly kept
    # (KEEP_FOREIGN: `run`, `add`; KEEP_ALL: `sync --inexact`). (A string, not the constant: the
    # no-op path, through this module, does not import pypm.plan.)
    keep: str = "none"

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "SyncOptions":
        from .plan import KEEP_ALL, KEEP_NONE

        def g(name: str, default: Any = None) -> Any:  # run and sync share this
            return getattr(args, name, default)

        return cls(selection=selection_of(args), extras=tuple(g("extra", []) or ()),
                   groups=tuple(g("group", []) or ()) + tuple(g("only_group", []) or ()),
                   locked=bool(g("locked", False)), frozen=bool(g("frozen", False)),
                   offline=bool(g("offline", False)), python=g("python"), link_mode=g("link_mode"),
                   compile=bool(g("compile", False)), dry_run=bool(g("dry_run", False) or g("check", False)),
                   check=bool(g("check", False)),
                   reinstall=bool(g("reinstall", False)), keep=KEEP_ALL if g("inexact", False) else KEEP_NONE)


# --------------------------------------------------------------------------- the venv lock

_HELD: set[str] = set()  # project roots whose lock this process holds (see project_lock)


@contextmanager
def project_lock(ctx: Any, project_root: Path) -> Iterator[None]:
    """Serialise syncs of one project: an exclusive flock on the project directory itself.

    Locking the directory (not a file in it) leaves nothing behind and survives the venv
    being deleted and recreated; the kernel drops the lock if the process dies (kill -9).
    Re-entrant within a process: `pypm add` holds it from reading pyproject.toml to the end of
    its sync (a second descriptor's flock would wait for the first one forever).
    """
    import fcntl

    key = str(project_root)
    if key in _HELD:
        yield
        return
    fd = os.open(project_root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            ctx.info(f"waiting for another pypm process syncing or editing {project_root} ...")
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError as e:  # e.g. a network file system without flock: say so, and go on unlocked
            ctx.info(f"warning: cannot lock {project_root} ({e.strerror}); concurrent syncs are not serialised")
        _HELD.add(key)
        yield
    finally:
        _HELD.discard(key)
        os.close(fd)  # closing the only descriptor releases the flock


@contextmanager
def project_lock_nowait(project_root: Path, *, held: bool = False) -> Iterator[bool]:
    """project_lock without waiting: yields whether it is held now (`held`: by this process
    already). A file system without flock yields False: who else works there cannot be known."""
    import fcntl

    if held:
        yield True
        return
    try:
        fd = os.open(project_root, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        yield False
        return
    key = str(project_root)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # BlockingIOError: another process holds it
            yield False
            return
        _HELD.add(key)
        try:
            yield True
        finally:
            _HELD.discard(key)
    finally:
        os.close(fd)


# --------------------------------------------------------------------------- workflow

def _check_names(project: Any, opts: SyncOptions) -> None:
    from .lockfile import canonical_name

    unknown_extras = [e for e in opts.extras if canonical_name(e) not in project.optional_dependencies]
    unknown_groups = [g for g in opts.groups if canonical_name(g) not in project.dependency_groups]
    msgs = []
    if unknown_extras:
        known = ", ".join(sorted(project.optional_dependencies)) or "none"
        msgs.append(f"unknown extra(s) {', '.join(unknown_extras)} (the project defines: {known})")
    if unknown_groups:
        known = ", ".join(sorted(project.dependency_groups)) or "none"
        msgs.append(f"unknown dependency group(s) {', '.join(unknown_groups)} (the project defines: {known})")
    if msgs:
        raise UsageError(f"{project.pyproject}: " + "; ".join(msgs),
                         hint="check --extra/--group names against [project.optional-dependencies] "
                         "and [dependency-groups]")


def _fire(project: Any, stage: str, **kw: Any) -> None:
    if not project.tool.plugins:  # no import cost when no plugin is enabled
        return
    from . import plugins

    plugins.fire(project, stage, **kw)


def _project_token(project: Any) -> str:
    """Identity of the editable install: the files its build reads (a change means reinstall)."""
    return project_token(project.root)


def already_synced(ctx: Any, args: argparse.Namespace) -> bool:
    """`pypm sync`'s no-op fast path, taken before the project or the lock is parsed: state.json
    matches pyproject.toml, pypm.lock, the selection and --python (as `pypm run` checks), no hook
    or signature check is configured, and the venv is as the last sync left it, checked in
    O(directories) (`venvstate.venv_intact`): what the full plan would find, except a file edited
    in place (`pypm verify --venv`). A no-op sync went from ~110 ms to ~40 ms on the canary."""
    if any(getattr(args, flag, False) for flag in ("dry_run", "check", "compile", "reinstall")):
        return False
    import time

    from .run import _fast_venv, _project_root  # the same freshness check `pypm run` makes
    from .venvstate import shared_sync_lock

    t0 = time.monotonic()
    root = _project_root(ctx.directory)
    fd = shared_sync_lock(root) if root is not None else None
    if fd is None:
        return False  # another sync at work: the full path waits for it
    try:  # state.json is read under the lock: no sync rewrites it meanwhile
        # (sync makes the venv hold exactly the selection; --inexact: at least it)
        fast = _fast_venv(ctx, args, exact=not getattr(args, "inexact", False), on_disk=True)
        if fast is None:
            return False
        state = fast[2]
    finally:
        os.close(fd)
    n = len((state.get("installed") or {}).get("dists") or [])
    ctx.info(f"Checked {n} packages in {time.monotonic() - t0:.2f}s: nothing to do")
    return True


def sync_project(ctx: Any, project: Any, opts: SyncOptions) -> int:
    """`pypm sync`: returns an exit code; errors are PypmErrors."""
    ensure_synced(ctx, project, opts)
    return ExitCode.OK


def keeping_held(project: Any, opts: SyncOptions, *, foreign: bool = True) -> SyncOptions:
    """`opts` for a sync that another command makes on its way (`run`, `shell`, `add`, `remove`,
    `version`), with the selection `.venv` was last synced for added to it: the extras and groups
    the project still declares, the project and its main dependencies if they were there. Only
    `pypm sync` (and `run --exact`) leaves out what its selection does not ask for; `pypm sync
    --all-extras` and then `pypm add x` keeps the extras, as uv's add and run keep what they do
    not need. Packages the new lock no longer holds still go. A workspace selection (--package,
    --all-packages), on either side, is synced as asked. `foreign`: packages another installer
    put into .venv stay too (plan.KEEP_FOREIGN), as uv's run and add leave them (its remove does
    not: foreign=False)."""
    from .lockfile import canonical_name
    from .plan import KEEP_FOREIGN
    from .venvstate import read_state

    if foreign:
        opts = dataclasses.replace(opts, keep=KEEP_FOREIGN)
    sel = opts.selection
    state = read_state(project.root / ".venv")
    held = state.get("selection") if isinstance(state, dict) else None
    if not isinstance(held, dict) or "packages" in held or sel.packages or sel.all_packages:
        return opts
    extras, groups = held.get("extras"), held.get("groups")
    if not isinstance(extras, list) or not isinstance(groups, list) \
            or not all(isinstance(x, str) for x in (*extras, *groups)):
        return opts
    if "*" in extras or "*" in sel.extras:
        all_extras = frozenset({"*"})
    else:
        all_extras = sel.extras | {canonical_name(x) for x in extras if canonical_name(x) in project.optional_dependencies}
    union = dataclasses.replace(sel, main=sel.main or held.get("main") is True,
                     include_project=sel.include_project or held.get("include-project") is True,
                     extras=all_extras,
                     groups=sel.groups | {canonical_name(g) for g in groups if canonical_name(g) in project.dependency_groups})
    return opts if union == sel else dataclasses.replace(opts, selection=union)


def ensure_synced(ctx: Any, project: Any, opts: SyncOptions) -> Path:
    """Bring `project.root/.venv` to exactly the locked selection; returns the venv path."""
    _check_names(project, opts)
    venv = project.root / ".venv"
    with project_lock(ctx, project.root):
        return _sync_locked(ctx, project, opts, venv)


def _sync_locked(ctx: Any, project: Any, opts: SyncOptions, venv: Path) -> Path:
    import time

    t0 = time.monotonic()
    from .fetchchild import FetchChild, enabled

    _fire(project, "pre-sync", venv=str(venv), lock_path=str(project.root / "pypm.lock"), interpreter=None,
          packages=[])
    fetcher = FetchChild.take()  # forked as the process started (pypm.__main__), if it was
    if (opts.offline or opts.dry_run) and fetcher is not None:  # (a plan only: nothing downloads)
        fetcher.close()
        fetcher = None
    elif not (opts.offline or opts.dry_run) and fetcher is None:
        # The fast paths (no-op, fresh venv from a recipe) end before this function: this sync
        # most likely downloads. Its downloads run in a child forked now, before this process
        # starts any thread (pypm.fetchchild): it imports the HTTP stack and makes its TLS
        # context on the other core while this one reads the lock and plans.
        fetcher = FetchChild.start(debug=ctx.debug) if enabled() else None
        if fetcher is None:
            # In-process downloads find their TLS context (CAs loaded with the GIL released,
            # ~15 ms) made beside this thread's work.
            from . import tls

            tls.start()
    # No cyclic garbage collection while syncing, as while locking (pypm.locking): a sync makes
    # tens of thousands of objects that live until it ends (the lock, manifests, install plans),
    # and the collector walked them ~40 times in a cold sync of the web stack (7-14 ms of this
    # process's CPU, holding the GIL its unpack and install threads share).
    from .fastpath import NoCycleCollection

    try:
        with NoCycleCollection():
            return _sync_planned(ctx, project, opts, venv, fetcher, t0)
    finally:
        if fetcher is not None:
            fetcher.close()


def _without(lock: Any, project: Any, packages: list[Any], names: frozenset[str]) -> list[Any]:
    """`packages` less those `--no-install-package` names (as uv's: the named ones only, not their
    dependencies). A name pypm.lock does not hold at all is refused: a typo would otherwise
    install what it was meant to leave out."""
    known = {p.key[0] for p in lock.packages} | {project.normalized_name}  # (key: the canonical name)
    unknown = sorted(names - known)
    if unknown:
        from .errors import UsageError

        raise UsageError(f"--no-install-package {', '.join(unknown)}: not in pypm.lock",
                         hint="name a package the lock holds (`pypm tree` lists them)")
    return [p for p in packages if p.key[0] not in names]


def _sync_planned(ctx: Any, project: Any, opts: SyncOptions, venv: Path, fetcher: Any, t0: float) -> Path:
    import time

    from .plan import Wanted, choose_file, format_plan, make_plan, refuse_unhashed
    from .selection import select_packages

    # The interpreter is asked about itself (a subprocess, ~25 ms when its answer is not cached,
    # unless it is pypm's own base binary) while this thread reads the lock; neither depends on
    # the other.
    found = _Background(_interpreter, project, opts, venv)
    try:
        if project.tool.trusted_keys:  # issue 7: only a lock signed by a trusted key, used as it is (never re-locked)
            from .signing import trusted_lock

            lock = trusted_lock(ctx, project, opts, _lock_for)
        else:
            lock = _lock_for(ctx, project, opts)
        refuse_unhashed(lock.packages)
    except BaseException:
        found.wait()  # the lock's error is the one reported, as when the two ran one after the other
        raise
    interp = found.result()
    interp_desc = interp.describe()

    packages = select_packages(lock, opts.selection, env=dict(interp.markers))
    if opts.selection.no_install:
        packages = _without(lock, project, packages, opts.selection.no_install)
    local_dirs = _local_directories(packages, project.root)
    wanted: list[Wanted] = []
    for p in packages:
        if p.virtual_member:  # a workspace member without [build-system]: its dependencies only
            continue
        if p.local_directory:  # a path dependency's directory: built (or installed editable), no file
            d = _local_dir(project, p)
            # The kind is part of the token: a source made editable (or no longer) with the same
            # build inputs is installed again, the other way
            editable = "editable" in p.source
            wanted.append(Wanted(p.key[0], p.version, "editable" if editable else "directory", None,
                                 local_dirs[str(d)] if editable else f"built-{local_dirs[str(d)]}", p))
            continue
        if p.git:  # a git dependency: built from its commit (the lock's source says which)
            import hashlib

            wanted.append(Wanted(p.key[0], p.version, "git", None, hashlib.sha256(p.git.encode()).hexdigest(), p))
            continue
        kind, f = choose_file(p, interp.tags, interp_desc)
        wanted.append(Wanted(p.key[0], p.version, kind, f, f.sha256, p))
    root_pkg = lock.root()
    install_project = (opts.selection.include_project and not project.is_virtual and root_pkg is not None
                       and project.normalized_name not in opts.selection.no_install)
    if install_project:
        assert root_pkg is not None  # install_project is False without one
        wanted.append(Wanted(project.normalized_name, root_pkg.version, "editable", None,
                             _project_token(project), root_pkg))

    if opts.dry_run:
        matches = _venv_matches(venv, interp)
        installed = _installed(venv, interp) if matches else {}
        if opts.reinstall:
            installed = {n: dataclasses.replace(i, complete=False) for n, i in installed.items()}
        plan = make_plan(installed, wanted, keep=opts.keep)
        print(format_plan(plan))  # the plan is what --dry-run was asked for: stdout
        if opts.check and not (matches and plan.is_noop):
            from .errors import OutOfSync

            why = ("does not exist" if not venv.exists() else f"was not made by {interp_desc}") if not matches \
                else f"differs from pypm.lock ({len(plan.install)} to install, {len(plan.replace)} to replace, " \
                     f"{len(plan.remove)} to remove)"
            raise OutOfSync(f"{venv} {why}", hint="run `pypm sync`")
        return venv

    want_state = expected_state(project.root, opts.selection, python_flag=opts.python, frozen=opts.frozen)
    assert want_state is not None  # ensure_lock left a pypm.lock behind
    want_state["interpreter"] = {"executable": str(interp.executable), "version": interp.version_str}
    want_state["tool"] = tool_knobs(project)
    want_state["project-token"] = _project_token(project)
    if lock.members:  # a workspace: run's fast path in a member's directory finds this venv by them
        from .lockfile import canonical_name
        from .pathdeps import inputs_token

        want_state["workspace-members"] = members = {
            os.path.normpath(project.root / (p.local_directory or p.source["virtual"])): canonical_name(p.name)
            for m in lock.members for p in lock.by_name(m) if p.local_directory or p.virtual_member}
        # Every member's inputs, not only those of the members this venv holds: the lock covers
        # them all, so a change to any makes it stale, and the fast paths must then step aside
        # for the relock (`lock --check` would fail otherwise while `pypm run` said nothing).
        local_dirs = {**{d: inputs_token(d) for d in members if d not in local_dirs}, **local_dirs}
    if local_dirs:  # path dependencies: their inputs changed means sync again (the fast paths check it)
        want_state["path-tokens"] = local_dirs
    layout = _layout(venv, interp)

    from .venv import discard_half_built, mark_complete

    try:  # from the moment a venv exists: Ctrl-C anywhere below must not leave a new one half-built
        # A venv this run creates keeps its building marker until the end of this block, so an
        # interruption anywhere (even before `created` is assigned) is recognised below, and by
        # the next run if this process is killed outright.
        created = _ensure_venv(ctx, venv, interp)
        installed = _installed(venv, interp)
        if opts.reinstall:  # treated as damaged: replaced, and their store entries re-verified first
            installed = {n: dataclasses.replace(i, complete=False) for n, i in installed.items()}
        plan = make_plan(installed, wanted, keep=opts.keep)
        plans: dict[str, Any] = {}  # wheel sha256 -> its installer.InstallPlan, for the recipe below
        if not (plan.is_noop and not created):
            # Downloads, unpacking and installs run on threads of this process, most of their
            # time in system calls and C (TLS, inflate, sha256) that release the GIL. A thread
            # coming back from one waits for the GIL until the holder's switch interval ends:
            # at the default 5 ms, a download thread with the next TLS record already in its
            # socket buffer waited behind Python-bound work (extraction, installs). A shorter
            # interval hands the GIL over sooner (A B A B, tmpfs, medians of 8: the web stack
            # 0.67 -> 0.64 s, the canary 0.39 -> 0.37 s with 0.5 ms). Restored afterwards.
            switch = sys.getswitchinterval()
            sys.setswitchinterval(GIL_SWITCH_INTERVAL)
            try:
                _apply(ctx, project, lock, plan, venv, interp, opts, fresh=created, plans=plans, fetcher=fetcher)
            finally:
                sys.setswitchinterval(switch)
        want_state["installed"] = installed_record(venv, [layout.purelib, layout.platlib])
        if plan.kept:  # the venv holds more than the selection: no exact no-op check passes it
            want_state["extraneous"] = [i.name for i in plan.kept]
        # Touch no file when nothing changed: the state file is rewritten only if it differs.
        if read_state(venv) != want_state:
            _write_state(venv, want_state)
        mark_complete(venv)
    except BaseException:
        # A venv this run created and could not finish is removed (Ctrl-C, bad download,
        # failed build): the next run starts clean instead of from a half-filled venv.
        discard_half_built(venv)
        raise

    if not (plan.is_noop and not created):
        _record_recipe(project, opts, want_state, wanted, plans)
    if plan.is_noop and not created:
        ctx.info(f"Checked {len(plan.unchanged)} packages in {time.monotonic() - t0:.2f}s: nothing to do")
    else:
        ctx.info(f"Synced {venv}: +{len(plan.install)} ~{len(plan.replace)} -{len(plan.remove)} "
                 f"({len(plan.unchanged)} unchanged) in {time.monotonic() - t0:.2f}s")
        # (a project whose backend computes its version is locked as 0: the version it was built with)
        built = None
        if project.version is None:
            from .installer import installed_distributions

            mine = installed_distributions(layout).get(project.normalized_name)
            built = mine.version if mine is not None else None
        ctx.info("\n".join(format_plan(plan, {project.normalized_name: built} if built else None)
                           .splitlines()[1:]))  # one line per change, as the dry run shows
    if plan.kept:
        ctx.info(f"Kept {len(plan.kept)} installed package(s) the selection does not ask for: "
                 + ", ".join(f"{i.name}=={i.version}" for i in plan.kept) + " (`pypm sync` removes them)")
    if project.tool.plugins:
        _fire(project, "post-sync", venv=str(venv), lock_path=str(project.root / "pypm.lock"),
              interpreter=str(interp.executable), packages=_package_infos(plan))
    return venv


class _Background:
    """`fn(*args)` on a thread of its own; `result()` waits and returns it or raises its error."""

    def __init__(self, fn: Any, *args: Any) -> None:
        import threading

        self._out: list[Any] = []
        self._thread = threading.Thread(target=self._run, args=(fn, args), name="pypm-interpreter", daemon=True)
        self._thread.start()

    def _run(self, fn: Any, args: tuple[Any, ...]) -> None:
        try:
            self._out.append((True, fn(*args)))
        except BaseException as e:  # handed to the caller of result()
            self._out.append((False, e))

    def wait(self) -> None:
        self._thread.join()

    def result(self) -> Any:
        self._thread.join()
        ok, value = self._out[0]
        if not ok:
            raise value
        return value


def _record_recipe(project: Any, opts: SyncOptions, state: dict[str, Any], wanted: list[Any],
                   plans: dict[str, Any]) -> None:
    """Keep the recipe of this venv (`pypm.syncrecipe`) when a bare `pypm [-q] sync [--frozen]`
    could rebuild it from the store alone: wheels only, no hooks or signature checks, the default
    selection and interpreter request, default link mode, no byte-compiling. `plans`: the install
    plans of the wheels this sync installed (sha256 -> plan), which the recipe's plan reuses."""
    from .fastpath import DEFAULT_SELECTION

    if (project.tool.plugins or project.tool.trusted_keys or opts.python or opts.link_mode or opts.compile
            or state.get("selection") != DEFAULT_SELECTION or state.get("python-flag") is not None
            or any(w.kind != "wheel" for w in wanted)):
        return
    from .config import cache_dir
    from .syncrecipe import write_recipe

    # (A venv the recipe makes holds only `wanted`: what this one holds besides is not recorded.)
    write_recipe(cache_dir(), project.root, {k: v for k, v in state.items() if k not in ("installed", "extraneous")},
                 [(w.name, w.version, w.file.sha256, w.file.filename) for w in wanted], plans=plans)


def _interpreter(project: Any, opts: SyncOptions, venv: Path) -> Any:
    """The target interpreter. With no request, the one the existing venv was made from is kept
    while it still satisfies requires-python (as uv does): no PATH scan on every sync."""
    from .errors import PypmError
    from .interpreter import find_project_interpreter, query_interpreter

    request = opts.python or project.tool.python
    if request is None:
        exe = ((read_state(venv) or {}).get("interpreter") or {}).get("executable")
        if exe:
            try:
                interp = query_interpreter(exe)
            except PypmError:
                interp = None
            if interp is not None and _venv_matches(venv, interp) and _satisfies(interp, project.requires_python):
                return interp
    return find_project_interpreter(opts.python, project)


def _satisfies(interp: Any, requires_python: str) -> bool:
    if not requires_python:
        return True
    from packaging.specifiers import SpecifierSet

    return SpecifierSet(requires_python).contains(interp.version_str, prereleases=True)


def _package_infos(plan: Any) -> list[Any]:
    from . import plugins
    from .cache import Cache

    # wheel_path: the verified wheel in the cache when it is there (s3cache uploads from it;
    # a pruned cache or a wheel built from an sdist gives None).
    cache = Cache()
    out = []
    for w in (*plan.install, *(n for _, n in plan.replace), *plan.unchanged):
        path = cache.wheel_path(w.file.sha256, w.file.filename) if w.kind == "wheel" and w.file else None
        out.append(plugins.PackageInfo(w.name, w.version, str(path) if path and path.is_file() else None, w.token))
    return out


# --------------------------------------------------------------------------- apply

def _lock_for(ctx: Any, project: Any, opts: SyncOptions) -> Any:
    from .errors import StaleLockError
    from .locking import ensure_lock

    if opts.check and not opts.frozen:
        return ensure_lock(ctx, project, locked=True, frozen=False, offline=opts.offline,
                           refusal=(": .venv cannot be in sync with it", "run `pypm sync` (it locks first)"))
    if opts.dry_run and not (opts.locked or opts.frozen):
        # --dry-run changes nothing, pypm.lock included: plan against the lock as it is.
        from .errors import LockError
        lock_path = project.root / "pypm.lock"
        if not lock_path.exists():
            # Not the --frozen wording: the user never asked for --frozen.
            raise LockError(f"{lock_path} does not exist, and --dry-run does not create one",
                            hint="run `pypm lock` first (or `pypm sync` without --dry-run)")
        try:
            return ensure_lock(ctx, project, locked=True, frozen=False, offline=opts.offline)
        except StaleLockError:
            ctx.info("pypm.lock is missing or out of date: `pypm sync` would re-lock first; "
                     "the plan below is for the current pypm.lock")
            return ensure_lock(ctx, project, locked=False, frozen=True, offline=opts.offline)
    return ensure_lock(ctx, project, locked=opts.locked, frozen=opts.frozen, offline=opts.offline)


def _apply(ctx: Any, project: Any, lock: Any, plan: Any, venv: Path, interp: Any, opts: SyncOptions,
           fresh: bool = False, plans: dict[str, Any] | None = None, fetcher: Any = None) -> None:
    """Fetch, verify, build and unpack everything first (so a bad download changes nothing),
    then change the venv: removals, replacements, installs. A wheel is unpacked into the store
    as soon as its download is verified, while the others download (the store is not the venv).

    `fresh`: the venv was created by this sync (it keeps its building marker until the sync is
    done, and any failure removes it whole): then each package is installed as soon as its store
    entry is ready, while the rest download and unpack -- a failure still leaves no venv behind.
    `plans` receives each installed wheel's install plan (sha256 -> installer.InstallPlan)."""
    import heapq
    import tempfile
    import threading
    from concurrent.futures import Future, ThreadPoolExecutor

    from .build import PARALLEL_BUILDS, RunningBuilds, build_key, build_wheel, cached_build, remember_build, wait_result
    from .cache import Cache
    from .extractor import Workers, worker_count
    from .plugins import wheel_fetchers

    news = [*(n for _, n in plan.replace), *plan.install]
    # A damaged install is repaired from a store entry checked first: installed files are hard
    # links into the unpacked store, so an edit in the venv may have edited the store too.
    damaged = {n.name for o, n in plan.replace if not o.complete}
    with Cache(offline=opts.offline, base_dir=project.root) as cache, \
            tempfile.TemporaryDirectory(prefix="pypm-sync-") as tmp:
        fetchers = wheel_fetchers(project)

        def built(w: Any, source: Any, key: str, editable: bool, label: str,
                  reuse: bool = True) -> tuple[Path, str]:
            # Its own Cache object: a failing download on one thread cancels only its own batch.
            # `reuse` False: build again even when the cache has a wheel for `key` (a path
            # dependency's directory, whose key does not cover its sources).
            with building.running():  # (its sandbox is interrupted if the sync fails meanwhile)
                return _built(w, source, key, editable, label, reuse)

        def _built(w: Any, source: Any, key: str, editable: bool, label: str, reuse: bool) -> tuple[Path, str]:
            with Cache(offline=opts.offline, base_dir=project.root) as bcache:
                entry = cached_build(bcache, key) if reuse else None
                if entry is None:
                    src = source() if callable(source) else source
                    _fire(project, "pre-build", venv=str(venv), interpreter=str(interp.executable))
                    wheel = build_wheel(src, Path(tmp) / "wheels", editable=editable,
                                        build_packages=_build_packages(lock, w.package, interp), interpreter=interp,
                                        network=_build_network(project, w), limits=project.tool.build_limits,
                                        cache=bcache, link_mode=opts.link_mode, fetchers=fetchers, label=label)
                    _fire(project, "post-build", venv=str(venv), interpreter=str(interp.executable))
                    entry = remember_build(bcache, key, wheel, w.name)
                else:
                    ctx.debug(f"using the wheel built earlier for {label}: {entry.filename}")
                return bcache.unpack(entry, package=w.name, recheck=w.name in damaged), entry.filename

        def build_deps_key(w: Any) -> list[str]:
            settings = "network" if _build_network(project, w) else "no-network"  # build settings are inputs too
            return [settings, *(f.sha256 for p in _build_packages(lock, w.package, interp) for f in p.files())]

        unpacked: dict[str, tuple[Path, str]] = {}  # name -> (unpacked tree, wheel filename)
        # Builds run on background threads (a build is mostly a backend subprocess in the
        # sandbox), PARALLEL_BUILDS at once, overlapping the downloads and unpacking on this one
        # (one at a time when plugins are configured: their build hooks fire around each build
        # and need not be thread-safe). The project's own editable build needs no download, so it
        # starts first.
        builder = ThreadPoolExecutor(max_workers=1 if project.tool.plugins else PARALLEL_BUILDS,
                                     thread_name_prefix="pypm-build")
        building = RunningBuilds()
        builds: dict[str, Future[tuple[Path, str]]] = {}
        unpacker: ThreadPoolExecutor | None = None  # made once it is known whether a worker runs
        unpacks: dict[str, Future[Path]] = {}  # sha256 -> its store entry
        workers = Workers(0)  # replaced below once it is known how many wheels need unpacking
        unpack_guard = threading.Lock()
        wheels_by_sha: dict[str, Any] = {}
        pipelined = fresh and not plan.remove and not plan.replace
        # One install thread: installing is a system call per file (a link) with Python between,
        # and every call hands this process's GIL over to the unpack threads and back. A second
        # install thread overlapped little and multiplied those hand-offs (the web stack's cold
        # sync: 83 k futex calls with two, 50 k with one; A B A B on tmpfs, medians of 24 and
        # 20: 0.610 -> 0.596 s, the canary 0.330 -> 0.317 s, less CPU in both).
        installer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pypm-install") if pipelined else None
        installs: list[Future[None]] = []

        def install_when_ready(fut: Future[Any], w: Any, filename: str | None) -> None:
            # (on the thread that finished `fut`): hand the ready tree to an install thread
            if installer is not None and not fut.cancelled() and fut.exception() is None:
                res = fut.result()
                tree, fn = (res, filename) if filename is not None else res
                installs.append(installer.submit(_install, tree, fn, w, project, venv, interp, opts, True, plans))

        def install_when_built(w: Any) -> Callable[[Future[tuple[Path, str]]], None]:
            # the done-callback of w's build (w bound now, not the loop's later value)
            return lambda f: install_when_ready(f, w, None)

        # Biggest first: a wheel that lands while others wait for an unpack thread goes ahead of
        # the smaller ones (the web stack's biggest download, fetched last, used to queue behind
        # ~40 small wheels and then unpack alone at the end). Each task takes the biggest waiting.
        waiting: list[tuple[int, int, str, Any, Path | None]] = []  # a heap: (-size, order, sha, w, path)

        def unpack_biggest() -> None:
            with unpack_guard:
                _, _, sha, w, path = heapq.heappop(waiting)
            fut = unpacks[sha]
            if not fut.set_running_or_notify_cancel():
                return
            try:
                fut.set_result(cache.unpack(w.file, package=w.name, wheel=path, recheck=w.name in damaged,
                                            workers=workers))
            except BaseException as e:  # handed to whoever waits on it, as the executor would
                fut.set_exception(e)

        def start_unpack(sha: str, path: Path | None) -> None:
            w = wheels_by_sha.get(sha)
            with unpack_guard:
                if w is None or sha in unpacks:
                    return
                unpacks[sha] = Future()
                heapq.heappush(waiting, (-(w.file.size or 0), len(unpacks), sha, w, path))
            assert unpacker is not None, "the unpack threads are made before the first download"
            unpacker.submit(unpack_biggest)
            unpacks[sha].add_done_callback(lambda f: install_when_ready(f, w, w.file.filename))

        ok = False
        try:
            for w in news:
                if w.kind in ("editable", "directory"):
                    src = _local_dir(project, w.package)
                    key = build_key(w.kind, str(src), w.token, interp.tags[0], *build_deps_key(w))
                    label = (f"the project {project.name} ({project.root})" if src == project.root
                             else f"{w.name} ({src})")
                    builds[w.name] = builder.submit(built, w, src, key, w.kind == "editable", label,
                                                    w.kind == "editable")
                    builds[w.name].add_done_callback(install_when_built(w))
                elif w.kind == "git":
                    # A commit is content-addressed: the wheel built from it is reused (the key also
                    # holds the subdirectory, the interpreter and the locked build dependencies).
                    # The checkout is made (or fetched) only when no such wheel is cached.
                    from .gitsource import TREE_FORMAT

                    key = build_key("git", TREE_FORMAT, w.package.git, w.token, interp.tags[0], *build_deps_key(w))
                    builds[w.name] = builder.submit(built, w, lambda w=w: _git_checkout(w.package, opts, Path(tmp)),
                                                    key, False, f"{w.name} ({w.package.git})")
                    builds[w.name].add_done_callback(install_when_built(w))
            fetch = plan.to_fetch()
            # A wheel whose unpacked store entry exists installs from that entry (re-checked
            # when repairing): hashing the wheel again on every warm sync only cost time, all of
            # its bytes each time (torch: 183 MB, ~0.4 s).
            fetch_now = [w for w in fetch if w.kind == "sdist" or not cache.unpacked_path(w.file.sha256).is_dir()]
            wheels_by_sha.update((w.file.sha256, w) for w in fetch if w.kind != "sdist")
            wheels_now = [w for w in fetch_now if w.kind != "sdist"]
            # Wheels with no store entry yet are extracted in a worker process (pypm.extractor),
            # off this process's GIL, while the downloads and installs go on here.
            workers = Workers(worker_count([w.file.size or 0 for w in wheels_now]), debug=ctx.debug,
                              in_process=_per_core())
            # One unpack thread per core, and one more per worker: with the worker's next job
            # always in its pipe (extractor.DEPTH), two of them can wait on it, and the worker
            # still gets its next wheel while the others extract big wheels in-process (with one
            # thread per core and both extracting, it sat idle for ~35 ms at a stretch). A second
            # extra thread extracted in-process beside the others, on one GIL: 0.561 s against
            # 0.539 s (the web stack's cold sync, medians of 20).
            unpacker = ThreadPoolExecutor(max_workers=_per_core() + workers.started,
                                          thread_name_prefix="pypm-unpack")
            progress = False if getattr(ctx, "quiet", False) else None  # -q silences the bars too (a terminal's only)
            if fetcher is not None and not fetchers and any(cache.downloads(w.file) for w in fetch_now):
                # The download process (pypm.fetchchild; plugin fetchers run here, in-process).
                # Its downloads need none of this process's GIL, so each wheel is unpacked as
                # soon as it lands (the canary, tmpfs, alternating runs, medians of 12: 0.324 s
                # holding the small wheels back for mypy's download as below, 0.300 s not).
                ctx.debug(f"downloading {len(fetch_now)} files in process {fetcher.pid}")
                got = fetcher.fetch_many(cache, [(w.name, w.file) for w in fetch_now], progress=progress,
                                         on_fetched=start_unpack, debug=ctx.debug)
            else:
                # One network download with half the bytes or more is the sync's critical path:
                # it is followed by its own unpacking. Wheels that land meanwhile wait for it.
                on_fetched = _HoldBack(start_unpack, {w.file.sha256: w.file.size or 0 for w in wheels_now
                                                      if cache.downloads(w.file)},
                                       total=sum(w.file.size or 0 for w in wheels_now))
                got = cache.fetch_many([(w.name, w.file) for w in fetch_now], fetchers=fetchers, progress=progress,
                                       on_mismatch=lambda m: ctx.info(
                                           f"warning: a plugin fetcher delivered {m.filename} of {m.package} with "
                                           f"sha256 {m.actual}, expected {m.expected}; discarded it and used the "
                                           "index"),
                                       on_fetched=on_fetched)
            to_unpack = []
            for w in fetch:
                if w.kind == "sdist":
                    key = build_key("sdist", w.file.sha256, interp.tags[0], *build_deps_key(w))
                    builds[w.name] = builder.submit(
                        built, w, got[w.file.sha256],  # the archive: build.py unpacks it at a fixed path
                        key, False, f"{w.name}=={w.version} ({w.file.filename})")
                    builds[w.name].add_done_callback(install_when_built(w))
                else:
                    to_unpack.append(w)
            for w in to_unpack:  # the ones not downloaded now: their store entries exist
                start_unpack(w.file.sha256, got.get(w.file.sha256))
            for w in to_unpack:  # (in slices: a signal another thread took is then acted on at once)
                unpacked[w.name] = (wait_result(unpacks[w.file.sha256]), w.file.filename)
            for name, built_fut in builds.items():
                unpacked[name] = wait_result(built_fut)
            ok = True
        finally:
            # On failure, builds and unpacks not yet started are dropped; running ones are waited
            # for, and the extraction workers are killed first so that is at once.
            if not ok:
                workers.close(kill=True)
                building.interrupt()  # a backend may run for minutes: stop it now
            if unpacker is not None:
                unpacker.shutdown(wait=True, cancel_futures=True)
            workers.close()
            for fut in unpacks.values():  # those whose task was dropped: nobody will run them
                fut.cancel()
            builder.shutdown(wait=True, cancel_futures=True)
            if installer is not None:  # every install was submitted by now (the callbacks ran)
                installer.shutdown(wait=True, cancel_futures=not ok)
    if installer is not None:
        errors = [exc for f in installs if not f.cancelled() and (exc := f.exception()) is not None]
        if errors:
            raise errors[0]
        return

    _drop_state(venv)
    for old in (*plan.remove, *(o for o, _ in plan.replace)):
        ctx.debug(f"removing {old.name}=={old.version}")
        _uninstall(venv, interp, old.name)
    if len(news) <= 1:
        for new in news:
            _install(*unpacked[new.name], new, project, venv, interp, opts, plans=plans)
        return
    # Installing is linking files: system calls that release the GIL, so a few threads
    # overlap them. Each dist writes its own files and its own journal entry.
    with ThreadPoolExecutor(max_workers=min(_per_core(), len(news)), thread_name_prefix="pypm-install") as ex:
        futures = [ex.submit(_install, *unpacked[n.name], n, project, venv, interp, opts, plans=plans) for n in news]
        errors = [exc for f in futures if (exc := f.exception()) is not None]
    if errors:
        raise errors[0]


class _HoldBack:
    """`on_fetched` for a sync one network download dominates: wheels that land while that
    download is under way are not unpacked until it has landed too.

    Why: a download thread needs the GIL again for every TLS record (16 kB). With unpack and
    install threads busy in Python, each record waited for the GIL, and mypy's 12.6 MB (the
    canary's critical path: download, then its own unpacking) took 0.13-0.16 s to arrive
    inside a cold sync, against 0.02 s alone. Held back, the small wheels are unpacked
    beside mypy's own unpacking instead (tmpfs, alternating runs, medians: 0.344 -> 0.328 s
    over 12, 0.366 -> 0.335 s over 20). Not for a local file (torch from find-links: copying
    needs no GIL per piece, and holding back cost 50 ms), nor when no download has half the
    bytes (the web stack, GIL-bound throughout: unpacking nothing until the end was slower).
    Only for downloads in this process: those of pypm.fetchchild's process share no GIL with
    the unpacking, and nothing waits for them."""

    def __init__(self, start: Any, network_sizes: dict[str, int], *, total: int) -> None:
        import threading

        self._start = start
        big = max(network_sizes, key=network_sizes.__getitem__, default=None)
        self._waiting_for = big if big is not None and 2 * network_sizes[big] >= total > 0 else None
        self._held: list[tuple[str, Any]] = []
        self._guard = threading.Lock()

    def __call__(self, sha: str, path: Any) -> None:
        with self._guard:
            if self._waiting_for is not None and sha != self._waiting_for:
                self._held.append((sha, path))
                return
            self._waiting_for = None
            ready, self._held = [(sha, path), *self._held], []
        for args in ready:  # the dominant wheel first: unpack threads take the biggest anyway
            self._start(*args)


def _per_core() -> int:
    """Unpack threads, and install threads when nothing else runs beside them (the installs of a
    fresh venv overlap the unpacking and use one: see _apply): one per core, at most four. Each
    thread's system calls hand the GIL over, and with more threads than cores those hand-offs
    (futex waits) were a fifth of a cold sync's CPU (web stack, 2 cores, tmpfs: 0.87 s with
    2 unpack + 2 install threads, 1.05 s with 4 + 4); replacing every package of a venv
    (`sync --reinstall`) took 0.65-0.66 s with 2 install threads against 0.65-0.69 s with 8."""
    return min(4, os.cpu_count() or 1)


def _build_packages(lock: Any, pkg: Any, interp: Any) -> list[Any]:
    """The locked packages that make up `pkg`'s build environment for `interp` (pypm.build)."""
    from .build import build_packages_of

    return build_packages_of(lock, pkg, interp.markers)


def _build_network(project: Any, w: Any) -> bool:
    """The lock's `build-network` for this package (issue 5); the project also by [tool.pypm.build]."""
    if w.package is not None and w.package.build_network:
        return True
    if w.kind in ("editable", "directory"):
        from .build import network_allowed

        return network_allowed(project, w.name)
    return False


def _git_checkout(pkg: Any, opts: SyncOptions, tmp: Path) -> Path:
    """A private copy (under `tmp`) of the checkout of a git dependency's locked commit (from the
    cache, or fetched): the build writes into its source tree (setuptools' build/ and .egg-info),
    and the cache's checkout is shared by every build of that commit."""
    from .config import cache_dir
    from .gitsource import checkout, parse_lock_source, private_copy

    ref, commit = parse_lock_source(pkg.git, f"pypm.lock: {pkg.name}")
    return private_copy(checkout(ref, commit, cache_dir(), offline=opts.offline, what=pkg.name), tmp)


def _local_dir(project: Any, pkg: Any) -> Path:
    """The directory an editable or directory install is built from: the project's, or a path
    dependency's (its lock entry's path, relative to the project)."""
    rel = getattr(pkg, "local_directory", None) if pkg is not None else None
    return Path(os.path.normpath(project.root / rel)) if rel else project.root


def _local_directories(packages: Any, root: Path) -> dict[str, str]:
    from .pathdeps import check_usable, directories

    check_usable(packages, root)
    return directories(packages, root)


# --------------------------------------------------------------------------- the primitives (pypm.venv,
# pypm.cache, pypm.installer); every call into them is here, so their API meets this module in one place.

def _venv_matches(venv: Path, interp: Any) -> bool:
    from .venv import venv_matches

    return venv_matches(venv, interp)


def _ensure_venv(ctx: Any, venv: Path, interp: Any) -> bool:
    from .venv import ensure_venv

    layout, created = ensure_venv(venv, interp, keep_marker=True)
    if created:
        ctx.info(f"Created {venv} ({interp.describe()})")
        # Each package's directories in a block group of their own (pypm.fsalloc): the venv this
        # one replaces was often deleted moments ago, and every inode it freed beside the new
        # one would be skipped, one look-up each, by every mkdir and file pypm makes there.
        from .fsalloc import spread_subdirs

        for d in {layout.purelib, layout.platlib}:
            spread_subdirs(d)
    return created


def _layout(venv: Path, interp: Any) -> Any:
    from .venv import VenvLayout

    return VenvLayout.for_interpreter(venv, interp)


def _installed(venv: Path, interp: Any) -> dict[str, Any]:
    """{canonical name: plan.Installed} for every distribution in the venv, completeness checked."""
    from .installer import installed_distributions
    from .plan import Installed

    out: dict[str, Any] = {}
    for name, d in installed_distributions(_layout(venv, interp)).items():
        complete = d.complete and d.dist_info is not None and _files_present(d.dist_info)
        out[name] = Installed(name, d.version, d.source_sha256, complete=complete)
    return out


def _files_present(dist_info: Path) -> bool:
    return files_present(dist_info)


def _install(tree: Path, filename: str, w: Any, project: Any, venv: Path, interp: Any, opts: SyncOptions,
             building: bool = False, plans: dict[str, Any] | None = None) -> None:
    # `building`: the venv is this sync's own and still half-built (removed whole on failure):
    # no per-dist journal needed
    from .installer import install_wheel

    direct_url = None
    if w.kind in ("editable", "directory"):  # PEP 610/660: record where the project lives
        direct_url = {"url": _local_dir(project, w.package).as_uri(),
                      "dir_info": {"editable": True} if w.kind == "editable" else {}}
    elif w.kind == "git":  # PEP 610: the repository and the commit
        from .gitsource import parse_lock_source

        ref, commit = parse_lock_source(w.package.git, "pypm.lock")
        direct_url = {"url": ref.url, "vcs_info": {"vcs": "git", "commit_id": commit,
                                                   **({"requested_revision": ref.rev} if ref.rev else {})},
                      **({"subdirectory": ref.subdirectory} if ref.subdirectory else {})}
    elif w.package is not None and w.file is not None and ("url" in w.package.source or "path" in w.package.source):
        # PEP 610: a wheel or sdist named by URL or path, not a release from an index
        direct_url = {"url": w.file.url, "archive_info": {"hashes": {"sha256": w.file.sha256}}}
    install_wheel(_layout(venv, interp), tree, wheel_filename=filename, wheel_sha256=w.token,
                  link_mode=opts.link_mode, direct_url=direct_url, compile_bytecode=opts.compile,
                  journal=not building, plans=plans)


def _uninstall(venv: Path, interp: Any, name: str) -> None:
    from .installer import uninstall

    uninstall(_layout(venv, interp), name)
