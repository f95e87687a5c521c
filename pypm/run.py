"""`pypm run` and `pypm shell`: make sure .venv is synced, then run a command in it.

The hot path is a synced project: compare `.venv/.pypm/state.json` with the hashes of
pyproject.toml and pypm.lock and start the command. `fast_main` takes that path straight
from the `pypm` entry point, before argparse and the CLI load; it imports no HTTP client,
resolver, rich, index module, argparse, pathlib or subprocess (`python -X importtime`).
"""

from __future__ import annotations

import os

# The C module behind `signal`: the same calls with plain ints, without `signal`'s enum
# classes (enum is ~2 ms of run's hot path, which otherwise loads neither enum nor re).
import _signal as signal

from .errors import PypmError, SandboxError, UsageError
from .fastpath import json_loads as _json_loads  # noqa: F401 (also venvstate's: one copy, in fastpath)
from .fastpath import sha256_file as _sha256_file

TYPE_CHECKING = False  # not from typing (~2 ms): annotations are strings here, and this is run's hot path
if TYPE_CHECKING:  # pragma: no cover
    import argparse
    from pathlib import Path
    from typing import Any, Callable, Sequence

    from .project import Project

__all__ = ["run_command", "run_shell", "venv_environment", "spawn_and_wait", "CommandNotFound", "fast_main"]

# Signals a terminal or a supervisor sends to stop a job; the child must see them too.
FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)


class CommandNotFound(PypmError):
    """The command given to `pypm run` does not exist (exit 127, as a shell would)."""

    exit_code = 127


def venv_environment(venv: Path | str, base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment an activated venv gives: VIRTUAL_ENV, its bin/ first on PATH, no PYTHONHOME."""
    env = dict(os.environ if base is None else base)
    env["VIRTUAL_ENV"] = str(venv)
    bindir = os.path.join(str(venv), "bin")
    parts = [p for p in env.get("PATH", os.defpath).split(os.pathsep) if p and p != bindir]
    env["PATH"] = os.pathsep.join([bindir, *parts])
    env.pop("PYTHONHOME", None)
    env.pop("__PYVENV_LAUNCHER__", None)
    return env


def _which(cmd: str, path: str) -> str | None:
    # shutil.which without importing shutil (fnmatch, re, bz2, lzma: ~5 ms on run's hot path).
    for d in path.split(os.pathsep):
        exe = os.path.join(d or os.curdir, cmd)
        if os.access(exe, os.X_OK) and not os.path.isdir(exe):
            return exe
    return None


def _terminal_sent_it() -> bool:
    # Ctrl-C on a terminal goes to the whole foreground process group, child included:
    # forwarding it again would deliver it twice (two KeyboardInterrupts in a Python child).
    try:
        return os.isatty(0) and os.tcgetpgrp(0) == os.getpgrp()
    except OSError:
        return False


def spawn_and_wait(argv: Sequence[str], env: dict[str, str]) -> int:
    """Run argv as a child, forward stop signals to it, return its exit status (128+N if killed)."""
    exe = argv[0]
    if os.sep not in exe:
        found = _which(exe, env.get("PATH", ""))
        if found is None:
            raise CommandNotFound(f"command not found: {exe}",
                                  hint="install the package that provides it (add it to pyproject.toml and "
                                  "`pypm sync`), or check the spelling")
        exe = found
    pending: list[int] = []  # signals that arrived before the child existed
    child: list[int] = []  # its pid, once spawned
    done = False

    def forward(signum: int, _frame: Any) -> None:
        if not child:
            pending.append(signum)
            return
        if done or (signum == signal.SIGINT and _terminal_sent_it()):
            return
        try:
            os.kill(child[0], signum)
        except ProcessLookupError:
            pass

    old = {s: signal.signal(s, forward) for s in FORWARDED}
    try:
        try:
            # posix_spawn rather than subprocess (~4 ms of imports on the hot path); setsigdef
            # is subprocess's restore_signals: Python ignores SIGPIPE/SIGXFSZ, the command must not.
            pid = os.posix_spawn(exe, [exe, *argv[1:]], env,
                                 setsigdef=(signal.SIGPIPE, signal.SIGXFSZ, *FORWARDED))
        except PermissionError as e:
            raise CommandNotFound(f"cannot execute {exe}: {e.strerror}", hint="check the file's mode (chmod +x)") from None
        except OSError as e:
            raise CommandNotFound(f"cannot execute {exe}: {e.strerror}") from None
        child.append(pid)
        for s in pending:  # delivered before the child existed: it must still see them
            forward(s, None)
        _, status = os.waitpid(pid, 0)  # PEP 475: retried after each forwarded signal's handler runs
        done = True
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    rc = os.waitstatus_to_exitcode(status)
    return 128 + (-rc) if rc < 0 else rc


# --------------------------------------------------------------------------- fast path

def _fast_venv(ctx: Any, args: argparse.Namespace, *, exact: bool = False,
               on_disk: bool = False) -> tuple[Path, Path, dict[str, Any]] | None:
    """(project root, venv, its state.json) when the venv is known to match the project;
    None means: sync first. `exact`: synced for this very selection (`pypm sync`, `run --exact`),
    not one that holds it (_selection_covers). `on_disk`: the venv is also as that sync left it
    (venvstate.synced_unchanged, O(directories): nothing installed or removed since), checked
    with the state read here."""
    from .selection import selection_of
    from .venvstate import STATE_REL, expected_state, read_state

    root = _project_root(ctx.directory)
    if root is None:
        return None  # the slow path reports the missing pyproject.toml properly
    venv = root / ".venv"
    state = read_state(venv)
    if state is None:
        return None
    try:
        sel = selection_of(args)
    except PypmError:
        return None
    want = expected_state(root, sel, python_flag=args.python, frozen=args.frozen)
    if want is None or not _state_matches(state, want, frozen=args.frozen, exact=exact):
        return None
    if not (venv / "bin" / "python").exists():
        return None
    if on_disk:
        from .venvstate import synced_unchanged

        if not synced_unchanged(root, venv, state):
            return None
    ctx.debug(f"{venv / STATE_REL} matches pyproject.toml and pypm.lock: not syncing")
    return root, venv, state


def _project_root(start: Path) -> Path | None:
    # pypm.project.find_project_root without importing the project model (~15 ms on this path);
    # another user's project above `start` is none (fastpath.find_root; the full path says why).
    from .fastpath import find_root

    found = find_root(str(start.resolve()))
    return type(start)(found) if found is not None else None  # (a Path: run.py imports pathlib lazily)


def _selection_covers(have: Any, want: dict[str, Any]) -> bool:
    """Whether a venv synced for the selection `have` (state.json's record) holds everything the
    selection `want` installs: the same, or more extras and groups (`pypm sync --all-extras`, then
    `pypm run`). `run` and `shell` then use it as it is, as `uv run` leaves what it does not need
    installed (`--exact`: only the same selection will do; a sync they make keeps the larger
    selection too: sync.keeping_held). A lock pins one version per package
    and environment whatever the selection, so the larger one installs the same versions. A
    workspace selection (--package, --all-packages) must be the same."""
    if have == want:
        return True
    if not isinstance(have, dict) or set(have) != set(want) or "packages" in want:
        return False
    for flag in ("main", "include-project"):
        if want.get(flag) and have.get(flag) is not True:
            return False
    for key in ("extras", "groups"):
        got, need = have.get(key), want.get(key)
        if not isinstance(got, list) or not isinstance(need, list):
            return False
        if not set(need) <= set(got) and not (key == "extras" and "*" in got):
            return False
    return True


def _state_matches(state: dict[str, Any], want: dict[str, Any], *, frozen: bool, exact: bool = False) -> bool:
    keys = ("version", "pyproject-sha256", "lock-sha256", "python-flag")
    if any(state.get(k) != want.get(k) for k in keys):
        return False
    held = state.get("selection")
    if exact:  # the same selection, and nothing more installed (sync.SyncOptions.keep)
        if held != want["selection"] or state.get("extraneous"):
            return False
    elif not _selection_covers(held, want["selection"]):
        return False
    if "path-tokens" in state:  # a path dependency's pyproject.toml changed: relock and sync
        from .fastpath import path_tokens_current

        if not path_tokens_current(state["path-tokens"]):
            return False
    # A venv synced from a lock that was not checked (--frozen) only satisfies --frozen runs.
    return frozen or not state.get("frozen", False)


def _prepare(ctx: Any, args: argparse.Namespace) -> tuple[Path, Path, Any, dict[str, Any]]:
    """Sync if needed; returns (project root, venv, Project or None when not loaded, tool knobs)."""
    from .venvstate import tool_knobs

    upgrade = getattr(args, "upgrade", False)
    if upgrade:
        clash = [flag for attr, flag in (("no_sync", "--no-sync"), ("locked", "--locked"), ("frozen", "--frozen"))
                 if getattr(args, attr, False)]
        if clash:
            raise UsageError(f"--upgrade locks again, which {clash[0]} forbids", hint="leave out one of the two")
    if not args.no_sync and not upgrade:
        exact = bool(getattr(args, "exact", False))
        # (--exact: also nothing installed since, by pip or by hand, as `pypm sync`'s no-op check)
        fast = _fast_venv(ctx, args, exact=exact, on_disk=exact)
        if fast is not None:
            root, venv, state = fast
            knobs = state.get("tool")
            if not isinstance(knobs, dict):  # a state file from before knobs were recorded
                project = ctx.project()
                return root, venv, project, tool_knobs(project)
            return root, venv, None, knobs
    project = ctx.project()
    venv = project.root / ".venv"
    if args.no_sync:
        if not (venv / "bin" / "python").exists():
            raise UsageError(f"{venv} does not exist and --no-sync was given", hint="run `pypm sync` first")
        return project.root, venv, project, tool_knobs(project)
    from .sync import SyncOptions, ensure_synced

    if not getattr(args, "no_sandbox", False) and project.tool.sandbox.enabled:
        from .toolrun import before_sandboxed_sync

        before_sandboxed_sync(ctx, args)  # flags checked, the helper's build started
    if upgrade:  # as `pypm lock --upgrade`, then the sync below installs what it chose
        from .locking import LockOptions, lock_project

        lock_project(ctx, project, LockOptions.from_args(args))
    opts = SyncOptions.from_args(args)
    if not getattr(args, "exact", False):
        # What .venv was synced for stays, and so do packages another installer put there, as
        # `uv run` leaves what it does not need (sync.keeping_held).
        from .sync import keeping_held

        opts = keeping_held(project, opts)
    venv = ensure_synced(ctx, project, opts)
    return project.root, venv, project, tool_knobs(project)


def _run_sandboxed() -> Callable[..., int]:
    """pypm.sandboxing.run_sandboxed, or a SandboxError when this build of pypm has no sandbox."""
    try:
        from .sandboxing import run_sandboxed
    except ImportError:
        raise SandboxError("the sandbox is not available in this build of pypm",
                           hint="pass --no-sandbox to run directly on the host") from None
    return run_sandboxed


def env_file_vars(ctx: Any, args: Any) -> dict[str, str]:
    """--env-file's variables (or PYPM_ENV_FILE's: fastpath.env_file_names; later files win), read once per command (kept on `args`; the
    sandbox's policy asks again, pypm.sandboxing): a missing file or a bad line fails the
    command before anything is synced. The command's environment keeps what it already has: they
    are set only where unset (as uv's --env-file)."""
    from .fastpath import env_file_names

    files, origin = env_file_names(getattr(args, "env_file", None) or [], bool(getattr(args, "no_env_file", False)))
    if not files:
        return {}
    kept: dict[str, str] | None = getattr(args, "env_file_vars", None)
    if kept is None:
        from .envfile import read_env_files

        kept = read_env_files([(os.path.join(str(ctx.directory), os.path.expanduser(f)), f) for f in files], origin)
        args.env_file_vars = kept
    return kept


_WITH_FLAGS = ("with_", "with_editable", "with_requirements")  # run's, layered over the venv (and a script's)


def _with_environment(ctx: Any, args: argparse.Namespace, venv: Path, project: Any, knobs: dict[str, Any],
                      sandboxed: bool) -> Any:
    """`run --with REQ...` in a project: an environment of its own for REQ (made, locked and
    synced as `pypm x --with` makes one, in the cache, keyed by the requirements, the project
    venv's interpreter and the project's sources), whose packages the command sees before the
    project's: its site-packages first on PYTHONPATH, its bin/ on PATH after the venv's (`python`
    stays the project's). Resolved on their own, as uv's --with: they may differ from the
    project's pins, and they win; its .pth files are read and its console scripts see the
    project's packages (_LAYER_HOOK). `knobs`: the venv's state's (or the project's) tool knobs,
    whose index settings key the environment. Returns (its venv, its site-packages)."""
    from .toolrun import layered_requirements, ready_environment, tool_dir
    from .venvstate import read_state

    requirements, editable = layered_requirements(ctx, args)
    state = read_state(venv) or {}
    index = knobs.get("index")
    if not isinstance(index, dict):  # knobs from a state.json from before it kept them
        from .venvstate import index_knobs

        index = index_knobs(project if project is not None else ctx.project())
    if not isinstance((state.get("tool") or {}).get("index"), dict):
        _keep_index_knobs(venv, index)  # for the next run's fast path
    env_args, floor = _with_args(state, str(venv), index, upgrade=bool(getattr(args, "upgrade", False)),
                                 offline=bool(getattr(args, "offline", False)))
    env_args.editable = editable
    overlay = ready_environment(ctx, tool_dir(requirements, env_args, kind="with", floor=floor), env_args,
                                sandboxed=sandboxed)
    site = _site_packages(str(overlay))
    if site is None:
        from .errors import InstallError

        raise InstallError(f"{overlay} has no site-packages", hint="remove it (`pypm cache clean`) and run again")
    _layer_hook(str(overlay))
    return overlay, site


def _with_args(state: dict[str, Any], venv: str, index: dict[str, Any], *, upgrade: bool = False,
               offline: bool = False) -> tuple[Any, str | None]:
    """(the options `run --with`'s environment is keyed and made by, its requires-python floor)
    from the venv's state and the project's index settings (venvstate.index_knobs): one place
    for the full path and the fast path, whose keys must agree. The interpreter is the venv's
    (its state's), and the floor its minor, so that tool_project need not query it (~13 ms)."""
    from types import SimpleNamespace

    interp = state.get("interpreter") or {}
    exe, version = interp.get("executable"), interp.get("version")
    floor = None
    if isinstance(exe, str) and os.path.exists(exe):
        if isinstance(version, str) and version.count(".") >= 1:
            floor = ">=" + ".".join(version.split(".")[:2])
    else:
        exe = os.path.realpath(os.path.join(venv, "bin", "python"))
    args = SimpleNamespace(python=exe, index_url=index.get("index-url"),
                           extra_index_url=list(index.get("extra-index-url") or []),
                           find_links=list(index.get("find-links") or []), index_strategy=index.get("index-strategy"),
                           upgrade=upgrade, offline=offline)
    return args, floor


def _site_packages(overlay: str) -> str | None:
    """The environment's site-packages directory, or None."""
    try:
        names = sorted(d for d in os.listdir(os.path.join(overlay, "lib")) if d.startswith("python"))
    except OSError:
        return None
    sites = [os.path.join(overlay, "lib", d, "site-packages") for d in names]
    return next((p for p in sites if os.path.isdir(p)), None)


def _keep_index_knobs(venv: Path, index: dict[str, Any]) -> None:
    """Add the project's index settings to a state.json written before it kept them (an older
    pypm's sync), so that the next `run --with` takes the fast path (_fast_with) without waiting
    for a sync that changes the venv. Only under the project's lock, with no sync at work, and
    only that key: the rest of the state is the last sync's."""
    from .sync import project_lock_nowait
    from .venvstate import read_state, write_state

    with project_lock_nowait(venv.parent) as held:
        state = read_state(venv) if held else None
        tool = state.get("tool") if state else None
        if state is None or not isinstance(tool, dict) or "index" in tool:
            return
        tool["index"] = index
        try:
            write_state(venv, state)
        except OSError:
            pass  # (a read-only venv: the full path each time, as before)


# The layer's hook, written into --with's environment (bound read-only in the sandbox, so it is
# there inside too) and first on PYTHONPATH: Python imports `sitecustomize` at the end of its
# start-up from wherever it is found first. PYTHONPATH alone puts the packages on sys.path but
# leaves two holes (uv met both; its `_uv_ephemeral_overlay.pth` serves the second):
#   - the environment's .pth files are not read: Python reads them only in its site directories
#     (an editable's path, pytest-cov's start-up hook, setuptools' distutils shim);
#   - a console script of the environment runs the environment's own python, which does not see
#     the project's packages.
# Written by hand, not a library's: it runs in every python the command starts.
_LAYER_HOOK = """\
# Written by pypm for `pypm run --with`: do not edit (it is written again when it differs).
import os as _os
import sys as _sys


def _pypm_layer():
    import site

    here = _os.path.dirname(_os.path.abspath(__file__))
    overlay = _os.path.realpath(_os.path.dirname(here))
    base = _os.environ.get("PYPM_WITH_BASE")
    prefix = _os.path.realpath(_sys.prefix)
    lib = "python%d.%d" % _sys.version_info[:2]
    known = {_os.path.normcase(_os.path.abspath(p)) for p in _sys.path if p}
    if base and prefix == _os.path.realpath(base):
        # the project's python: the environment's site-packages is already first on sys.path
        # (PYTHONPATH); read its .pth files as Python reads a site directory's
        site.addsitedir(_os.path.join(overlay, "lib", lib, "site-packages"), known)
    elif base and prefix == overlay:
        # the environment's own python (its console scripts): its packages first, then the project's
        site.addsitedir(_os.path.join(base, "lib", lib, "site-packages"), known)
    # Another python, or another sitecustomize: that one is imported as if this one were not here
    # (a Python build or the project may ship its own).
    import importlib.machinery
    import importlib.util

    rest = [p for p in _sys.path if _os.path.realpath(p or ".") != _os.path.realpath(here)]
    spec = importlib.machinery.PathFinder.find_spec("sitecustomize", rest)
    if spec is not None and spec.loader is not None:
        module = importlib.util.module_from_spec(spec)
        _sys.modules["sitecustomize"] = module
        spec.loader.exec_module(module)


_pypm_layer()
del _pypm_layer
"""
_LAYER_DIR = ".pypm-layer"


def _hook_path(overlay: str) -> str:
    return os.path.join(overlay, _LAYER_DIR, "sitecustomize.py")


def _hook_current(overlay: str) -> bool:
    try:
        with open(_hook_path(overlay), encoding="utf-8") as f:
            return f.read() == _LAYER_HOOK
    except OSError:
        return False


def _layer_hook(overlay: str) -> None:
    """--with's hook in `overlay` (see _LAYER_HOOK; `_layer` puts its directory on PYTHONPATH),
    written when it is missing or differs (atomically: a run beside it may be reading it)."""
    if _hook_current(overlay):
        return
    from pathlib import Path

    from .lockfile import write_atomic

    os.makedirs(os.path.join(overlay, _LAYER_DIR), exist_ok=True)
    write_atomic(Path(_hook_path(overlay)), _LAYER_HOOK)


def _layer(env: dict[str, str], venv: str, overlay: str, site: str) -> None:
    """`env` (the project venv's, activated) with --with's environment layered on: its hook and its
    packages first on PYTHONPATH, its commands on PATH after the venv's; PYPM_WITH_BASE names the
    project's venv for the hook (see _LAYER_HOOK)."""
    hook = os.path.join(overlay, _LAYER_DIR)
    env["PYTHONPATH"] = os.pathsep.join([hook, site, *([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])])
    env["PYPM_WITH_BASE"] = venv
    parts = env.get("PATH", "").split(os.pathsep)
    bindir = os.path.join(venv, "bin")
    at = parts.index(bindir) + 1 if bindir in parts else 0
    env["PATH"] = os.pathsep.join([*parts[:at], os.path.join(overlay, "bin"), *parts[at:]])


def _execute(ctx: Any, args: argparse.Namespace, argv: list[str]) -> int:
    file_vars = env_file_vars(ctx, args)
    root, venv, project, knobs = _prepare(ctx, args)
    if knobs.get("trusted-keys"):  # issue 7: refuse a lock not signed by a trusted key (nothing to do when unset)
        from .signing import require_signed_lock

        require_signed_lock(root / "pypm.lock", knobs["trusted-keys"], base_dir=root)
    sandboxed = not args.no_sandbox and knobs.get("sandbox-enabled", True) is not False
    if not sandboxed:
        # Said, not silently dropped: a --limit given for safety would otherwise look applied.
        given = [flag for attr, flag in _SANDBOX_ONLY if getattr(args, attr, None) is not None
                 and getattr(args, attr) != []]
        if given:
            why = "--no-sandbox" if args.no_sandbox else "[tool.pypm.sandbox] enabled = false"
            ctx.info(f"warning: {', '.join(given)} {'has' if len(given) == 1 else 'have'} no effect: the command runs "
                     f"without the sandbox ({why})")
    plugins_on = bool(knobs.get("plugins"))
    if plugins_on and project is None:  # the sandbox reads only [tool.pypm.sandbox] itself
        project = ctx.project()
    env = venv_environment(venv)
    for name, value in file_vars.items():  # (sandboxed: pypm.sandboxing sets them inside likewise)
        env.setdefault(name, value)
    overlay = None
    if any(getattr(args, flag, None) for flag in _WITH_FLAGS):
        made, site = _with_environment(ctx, args, venv, project, knobs, sandboxed)
        overlay = (str(made), str(site))  # (sandboxed: shown read-only, and layered inside likewise)
        _layer(env, str(venv), *overlay)
    if plugins_on:
        from . import plugins

        plugins.fire(project, "pre-run", venv=str(venv))
    if sandboxed:
        rc = _run_sandboxed()(ctx, project, venv, argv, env, args, overlay=overlay)
    else:
        rc = spawn_and_wait(argv, env)
    if plugins_on:
        from . import plugins

        plugins.fire(project, "post-run", venv=str(venv))
    return rc


def run_command(ctx: Any, args: argparse.Namespace) -> int:
    """`pypm run [flags] CMD ARGS...`: the command's exit status (128+N when killed by signal N)."""
    argv = list(args.cmd or [])
    if argv and argv[0] == "--":
        argv = argv[1:]
    if not argv:
        raise UsageError("`pypm run` needs a command", hint="e.g. `pypm run python -m my_lib.demo`")
    env_file_vars(ctx, args)  # (a bad --env-file fails before a script's environment is made too)
    script = os.path.join(ctx.directory, argv[0])  # (-C DIR: the command runs there)
    if argv[0].endswith(".py") and os.path.isfile(script):  # PEP 723: a script with its own dependencies
        from .script import run_script, script_metadata

        meta = script_metadata(script, deep=False)  # in full only when its environment is made
        if meta is not None:
            return run_script(ctx, args, [script, *argv[1:]], meta)
    from .launch import python_for_script

    return _execute(ctx, args, python_for_script(argv, str(ctx.directory)))


def run_shell(ctx: Any, args: argparse.Namespace) -> int:
    """`pypm shell`: an interactive shell ($SHELL, else /bin/sh) in the project's environment."""
    shell = os.environ.get("SHELL") or "/bin/sh"
    if not os.path.exists(shell):
        shell = "/bin/sh"
    return _execute(ctx, args, [shell, "-i"])


# --------------------------------------------------------------------------- the entry point's fast path

_FAST_FLAGS = frozenset({"--no-sandbox", "--frozen", "-q", "--quiet"})
_FAST_X_FLAGS = _FAST_FLAGS - {"--frozen"}  # `pypm x` has no --frozen
# The sandbox's flags with a value (cli._sandbox_flags), also taken on the fast path: the full CLI
# costs ~13 ms more (argparse, the project model), for flags pypm.sandboxing reads the same way
# from either. name -> (attribute, repeatable). Anything else, an abbreviation included, goes to
# the full CLI, which parses (and refuses) it as it always did.
_FAST_VALUED = {"--limit": ("limit", True), "--bind": ("bind", True), "--ro-bind": ("ro_bind", True),
                "--env": ("env", True), "--network": ("network", False), "--profile": ("profile", False)}
_FAST_PROJECT = {"--writable-project": True, "--read-only-project": False}
# ... and for `pypm x`, with its flags naming its environment's requirements (pypm.toolrun.fast_x
# takes their plain forms)
_FAST_X_VALUED = {**_FAST_VALUED, "--from": ("from_", False), "--with": ("with_", True)}
# ... and for `pypm run`, --with (its plain forms: fast_main's _fast_with)
_FAST_RUN_VALUED = {**_FAST_VALUED, "--with": ("with_", True)}
# ... and --env-file, for both (sandboxed or not: env_file_vars reads it the same way for either)
_FAST_ENV_FILE = {"--env-file": ("env_file", True)}
# The flags that only the sandbox applies: (attribute, flag) of each of the above.
_SANDBOX_ONLY = (*((attr, flag) for flag, (attr, _) in _FAST_VALUED.items()),
                 ("writable_project", "--writable-project/--read-only-project"))
_STATE_VERSION = 1  # venvstate.STATE_VERSION, without venvstate's hashlib/pathlib imports (a test keeps them equal)


class _FastContext:
    """What pypm.sandboxing needs of cli.Context, without importing the CLI (argparse)."""

    verbose = 0

    def __init__(self, directory: str, quiet: bool) -> None:
        self.directory = directory
        self.quiet = quiet

    def project(self) -> Project:  # only when state.json lacks the sandbox settings
        from .project import find_project_root, load_project

        return load_project(find_project_root(_path(self.directory)))

    def info(self, msg: str) -> None:
        pass

    def debug(self, msg: str) -> None:
        pass


class _FastArgs:
    """The parsed `pypm run` flags, for the code shared with the full CLI (getattr defaults)."""

    command = "run"
    print_sandbox = False

    def __init__(self, frozen: bool, values: dict[str, Any] | None = None) -> None:
        self.frozen = frozen
        self.writable_project: bool | None = None
        for attr, many in [*_FAST_VALUED.values(), *_FAST_ENV_FILE.values()]:  # argparse's defaults: [] for a repeatable flag
            setattr(self, attr, [] if many else None)
        self.no_env_file = False
        for k, v in (values or {}).items():
            setattr(self, k, v)


def sandbox_values(values: dict[str, Any]) -> bool:
    """Whether _fast_parse's `values` hold a flag only the sandbox applies (the dotenv flags and
    x's requirements are not)."""
    return any(attr not in ("env_file", "no_env_file", "from_", "with_") for attr in values)


def _path(p: str) -> Any:
    from pathlib import Path

    return Path(p)


def _fast_parse(argv: Sequence[str], values: dict[str, Any] | None = None,
                command: str = "run") -> tuple[set[str], list[str]] | None:
    """(flags, command) for `[-q] run [--no-sandbox|--frozen|-q]... [--] CMD ...`; None for
    anything else (the full CLI then parses it, abbreviations and errors included). The sandbox
    flags of _FAST_VALUED and _FAST_PROJECT, --env-file and --no-env-file go into `values`
    (attribute -> value, as argparse would set them) when it is given; without it they are
    "anything else". `command="x"`: the
    same for `pypm x` (pypm.toolrun.fast_x), which has no --frozen."""
    bare, valued = (_FAST_FLAGS, _FAST_RUN_VALUED) if command == "run" else (_FAST_X_FLAGS, _FAST_X_VALUED)
    valued = {**valued, **_FAST_ENV_FILE}
    i = 0
    flags: set[str] = set()
    while i < len(argv) and argv[i] in ("-q", "--quiet"):
        flags.add("-q")
        i += 1
    if i >= len(argv) or argv[i] != command:
        return None
    i += 1
    while i < len(argv):
        a = argv[i]
        if a == "--":
            i += 1
            break
        if not a.startswith("-"):
            break  # argparse.REMAINDER: the command and everything after it
        if values is not None and a == "--no-env-file":
            values["no_env_file"] = True
            i += 1
            continue
        if values is not None and a in _FAST_PROJECT:
            if values.get("writable_project", _FAST_PROJECT[a]) != _FAST_PROJECT[a]:
                return None  # both: argparse refuses them together
            values["writable_project"] = _FAST_PROJECT[a]
            i += 1
            continue
        name, eq, value = a.partition("=")
        if values is not None and name in valued:
            if not eq:
                if i + 1 >= len(argv):
                    return None
                i += 1
                value = argv[i]
            # What argparse would refuse or read otherwise: an empty value (cli._given), one that
            # looks like an option, a network it does not offer.
            if not value.strip() or value.startswith("-") or (name == "--network" and value not in ("none", "host")):
                return None
            attr, many = valued[name]
            if many:
                values.setdefault(attr, []).append(value)
            else:
                values[attr] = value
            i += 1
            continue
        if a not in bare:
            return None
        flags.add("-q" if a == "--quiet" else a)
        i += 1
    cmd = list(argv[i:])
    return (flags, cmd) if cmd else None


def _no_run_hooks(rec: Any) -> bool:
    """True when sync recorded (plugins.host.run_hook_record) that no enabled plugin implements
    pre-run or post-run, and every file that decided it is as it was then (a stat each): the
    command then runs without loading the plugin machinery (~30 ms on the canary)."""
    if not isinstance(rec, dict) or rec.get("run-hooks") != [] or not isinstance(rec.get("files"), list):
        return False
    if "pythonpath" in rec and rec["pythonpath"] != os.environ.get("PYTHONPATH"):
        return False
    for entry in rec["files"]:
        if not isinstance(entry, list) or len(entry) != 3 or not isinstance(entry[0], str):
            return False
        try:
            st = os.stat(entry[0])
            now = [entry[0], st.st_size, st.st_mtime_ns]
        except OSError:
            now = [entry[0], None, None]
        if now != entry:
            return False
    return True


def default_state_matches(root: str, *, frozen: bool = False, python_flag: str | None = None,
                          selection: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """`root/.venv`'s state.json when it records a sync of the default selection (or `selection`,
    as venvstate records one) from the current pyproject.toml and pypm.lock (`_fast_venv`'s check,
    without the selection and venvstate modules: ~9 ms of imports), else None. For run's fast
    path and `pypm x`/script environments."""
    from .fastpath import DEFAULT_SELECTION

    try:
        with open(os.path.join(root, ".venv", ".pypm", "state.json"), encoding="utf-8") as f:
            state = _json_loads(f.read())
    except (OSError, ValueError):
        return None
    if not isinstance(state, dict):
        return None
    want = {"version": _STATE_VERSION, "pyproject-sha256": _sha256_file(os.path.join(root, "pyproject.toml")),
            "lock-sha256": _sha256_file(os.path.join(root, "pypm.lock")),
            "selection": DEFAULT_SELECTION if selection is None else selection,
            "python-flag": python_flag}
    if want["lock-sha256"] is None or not _state_matches(state, want, frozen=frozen):
        return None
    return state


def member_selection(name: str) -> dict[str, Any]:
    """venvstate's record of `Selection.from_flags(packages=[name])` (what `pypm run` in a member's
    directory syncs), without the selection and venvstate modules; a test keeps them equal."""
    return {"main": False, "extras": [], "groups": ["dev"], "include-project": False, "packages": [name],
            "all-packages": False}


def _member_venv(member: str, frozen: bool) -> tuple[str, dict[str, Any]] | None:
    """(the workspace's root, its .venv's state) when `member` (a project without a .venv of its
    own) is a member of the workspace above it whose .venv was synced for it alone, as `pypm run`
    there does (`--package NAME`: venvstate's record of that selection), from the current files
    (default_state_matches, path-tokens included: the member's own pyproject.toml). The ancestor
    is found as every root is (fastpath.find_root: another user's is none)."""
    from .fastpath import find_root

    if os.path.lexists(os.path.join(member, ".venv")):
        return None
    root = find_root(os.path.dirname(member))  # the nearest project above: the workspace, if any
    if root is None or root == member:
        return None
    try:
        with open(os.path.join(root, ".venv", ".pypm", "state.json"), encoding="utf-8") as f:
            members = _json_loads(f.read()).get("workspace-members")
    except (OSError, ValueError, AttributeError):
        return None
    name = members.get(member) if isinstance(members, dict) else None
    if not isinstance(name, str):
        return None  # not (or not yet) synced as this workspace's member: the full path decides
    state = default_state_matches(root, frozen=frozen, selection=member_selection(name))
    return (root, state) if state is not None else None


def _with_files(overlay: str) -> list[str]:
    """The files that decide what `run --with`'s environment `overlay` (a venv) is and holds: its
    project's pyproject.toml (the requirements and the index) and pypm.lock, the venv's state
    and --with's hook. A plan of such a run checks them (pypm.launch)."""
    env_root = os.path.dirname(overlay)
    return [os.path.join(env_root, "pyproject.toml"), os.path.join(env_root, "pypm.lock"),
            os.path.join(overlay, ".pypm", "state.json"), _hook_path(overlay)]


def _fast_with(state: dict[str, Any], venv: str, tool: dict[str, Any], with_: list[str]) -> tuple[str, str] | None:
    """(environment, its site-packages) of `run --with`'s requirements, as _with_environment finds
    them, when they are in plain forms (`NAME`, `NAME==1.2.3`) and the environment is current and
    has its hook; else None (the full CLI makes, syncs or writes them). Writes nothing. The
    environment's key needs the project's index settings, which state.json keeps (tool_knobs)."""
    from .toolrun import _simple_requirement, found_environment

    requirements = [r for r in map(_simple_requirement, with_) if r is not None]
    index = tool.get("index")
    if len(requirements) != len(with_) or not isinstance(index, dict):
        return None  # other forms are parsed by packaging; a state.json from before the index was kept
    env_args, floor = _with_args(state, venv, index)
    found = found_environment(requirements, env_args, kind="with", floor=floor)
    site = _site_packages(found) if found is not None else None
    if found is None or site is None or not _hook_current(found):
        return None
    return found, site


def fast_main(argv: Sequence[str]) -> int | None:
    """`pypm run` on a synced project with no run hooks and no trusted keys, straight from the entry
    point: the same checks as `_fast_venv` and the same run as `_execute`. None: not handled, and
    nothing was done (the full CLI then does exactly what it would have)."""
    values: dict[str, Any] = {}
    parsed = _fast_parse(argv, values)
    if parsed is None:
        return None
    flags, cmd = parsed
    if "--no-sandbox" in flags and sandbox_values(values):
        return None  # sandbox flags without the sandbox: the full CLI says they have no effect
    from .launch import has_script_block

    with_ = values.pop("with_", None)
    if has_script_block(cmd[0]):  # PEP 723: the script's own environment, not the project's
        if with_:
            return None  # (added to the script's dependencies: the CLI's run_script)
        from .script import fast_script

        rc = fast_script(flags, values, cmd, list(argv))
        if rc is not None:
            return rc
    frozen = "--frozen" in flags
    from .fastpath import find_root

    try:
        start = os.getcwd()  # already free of symlinks, as Path.cwd().resolve()
    except OSError:
        return None
    root = find_root(start)
    if root is None:
        return None
    state = default_state_matches(root, frozen=frozen)
    if state is None:
        found = _member_venv(root, frozen)  # a workspace member's directory: the workspace's .venv
        if found is None:
            return None
        root, state = found
    venv = os.path.join(root, ".venv")
    tool = state.get("tool")
    if (not isinstance(tool, dict) or tool.get("trusted-keys")
            or (tool.get("plugins") and not _no_run_hooks(tool.get("plugin-run")))
            or not os.path.exists(os.path.join(venv, "bin", "python"))):
        return None  # run hooks and the signature check live in the full path
    env = venv_environment(venv)
    overlay = None
    if with_:  # --with's environment, when current: layered on as _execute layers it
        overlay = _fast_with(state, venv, tool, with_)
        if overlay is None:
            return None  # made, synced or its hook written first: the CLI does it
        _layer(env, venv, *overlay)
    from .launch import _split, python_for_script

    cmd = python_for_script(cmd, start)
    try:
        ctx, args = _FastContext(start, "-q" in flags), _FastArgs(frozen, values)
        if "--no-sandbox" in flags or tool.get("sandbox-enabled", True) is False:
            if sandbox_values(values):
                return None  # sandbox flags without the sandbox: the full CLI says they have no effect
            for var, value in env_file_vars(ctx, args).items():  # as _execute: only where unset
                env.setdefault(var, value)
            return spawn_and_wait(cmd, env)
        launchable = _split(argv)  # this run's flags as pypm.launch will see them next time
        # (--with's: the plan also checks its environment's files, which decided it and what it holds)
        vouch = [] if overlay is None else _with_files(overlay[0])
        return _run_sandboxed()(ctx, None, venv, cmd, env, args, known=(root, tool),
                                launch_flags=launchable[0] if launchable else None,
                                overlay=overlay, vouch=vouch)
    except (Exception, KeyboardInterrupt) as e:  # reported as cli.main reports it
        from .errors import report_failure

        return report_failure(e)
