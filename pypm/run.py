"""`pypm run` and `pypm shell`: make sure .venv is synced, then run a command in it.

The hot path is a synced project: compare `.venv/.pypm/state.json` with the hashes of
pyproject.toml and pypm.lock and start the command. That path imports no HTTP client,
resolver, rich or index module (checked with `python -X importtime`).
"""

from __future__ import annotations

import argparse
import os
import signal
from pathlib import Path
from typing import Any, Sequence

from .errors import PypmError, SandboxError, UsageError

__all__ = ["run_command", "run_shell", "venv_environment", "spawn_and_wait", "CommandNotFound"]

# Signals a terminal or a supervisor sends to stop a job; the child must see them too.
FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)


class CommandNotFound(PypmError):
    """The command given to `pypm run` does not exist (exit 127, as a shell would)."""

    exit_code = 127


def venv_environment(venv: Path, base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment an activated venv gives: VIRTUAL_ENV, its bin/ first on PATH, no PYTHONHOME."""
    env = dict(os.environ if base is None else base)
    env["VIRTUAL_ENV"] = str(venv)
    bindir = str(venv / "bin")
    parts = [p for p in env.get("PATH", os.defpath).split(os.pathsep) if p and p != bindir]
    env["PATH"] = os.pathsep.join([bindir, *parts])
    env.pop("PYTHONHOME", None)
    env.pop("__PYVENV_LAUNCHER__", None)
    return env


def _which(cmd: str, path: str) -> str | None:
    import shutil

    return shutil.which(cmd, path=path)


def _terminal_sent_it() -> bool:
    # Ctrl-C on a terminal goes to the whole foreground process group, child included:
    # forwarding it again would deliver it twice (two KeyboardInterrupts in a Python child).
    try:
        return os.isatty(0) and os.tcgetpgrp(0) == os.getpgrp()
    except OSError:
        return False


def spawn_and_wait(argv: Sequence[str], env: dict[str, str], cwd: str | None = None) -> int:
    """Run argv as a child, forward stop signals to it, return its exit status (128+N if killed)."""
    import subprocess

    exe = argv[0]
    if os.sep not in exe:
        found = _which(exe, env.get("PATH", ""))
        if found is None:
            raise CommandNotFound(f"command not found: {exe}",
                                  hint="install the package that provides it (add it to pyproject.toml and "
                                  "`pypm sync`), or check the spelling")
        exe = found
    pending: list[int] = []  # signals that arrived before the child existed
    proc: subprocess.Popen[bytes] | None = None

    def forward(signum: int, _frame: Any) -> None:
        if proc is None:
            pending.append(signum)
            return
        if proc.returncode is not None:
            return
        if signum == signal.SIGINT and _terminal_sent_it():
            return
        try:
            proc.send_signal(signum)
        except ProcessLookupError:
            pass

    old = {s: signal.signal(s, forward) for s in FORWARDED}
    try:
        try:
            proc = subprocess.Popen([exe, *argv[1:]], env=env, cwd=cwd, restore_signals=True)
        except PermissionError as e:
            raise CommandNotFound(f"cannot execute {exe}: {e.strerror}", hint="check the file's mode (chmod +x)") from None
        except OSError as e:
            raise CommandNotFound(f"cannot execute {exe}: {e.strerror}") from None
        for s in pending:  # delivered before Popen returned: the child must still see them
            forward(s, None)
        rc = proc.wait()  # PEP 475: retried after each forwarded signal's handler runs
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    return 128 + (-rc) if rc < 0 else rc


# --------------------------------------------------------------------------- fast path

def _fast_venv(ctx: Any, args: argparse.Namespace) -> tuple[Path, Path, Any] | None:
    """(project root, venv, state's tool knobs) when the venv is known to match the project;
    None means: sync first."""
    from .selection import Selection
    from .venvstate import STATE_REL, expected_state, read_state

    root = _project_root(ctx.directory)
    if root is None:
        return None  # the slow path reports the missing pyproject.toml properly
    venv = root / ".venv"
    state = read_state(venv)
    if state is None:
        return None
    try:
        sel = Selection.from_flags(extras=args.extra, all_extras=args.all_extras, no_dev=args.no_dev,
                                   groups=args.group, only_groups=args.only_group,
                                   no_install_project=args.no_install_project)
    except PypmError:
        return None
    want = expected_state(root, sel, python_flag=args.python, frozen=args.frozen)
    if want is None or not _state_matches(state, want, frozen=args.frozen):
        return None
    if not (venv / "bin" / "python").exists():
        return None
    ctx.debug(f"{venv / STATE_REL} matches pyproject.toml and pypm.lock: not syncing")
    return root, venv, state.get("tool")


def _project_root(start: Path) -> Path | None:
    # pypm.project.find_project_root without importing the project model (~15 ms on this path).
    start = start.resolve()
    for d in (start, *start.parents):
        if (d / "pyproject.toml").is_file():
            return d
    return None


def _state_matches(state: dict[str, Any], want: dict[str, Any], *, frozen: bool) -> bool:
    keys = ("version", "pyproject-sha256", "lock-sha256", "selection", "python-flag")
    if any(state.get(k) != want.get(k) for k in keys):
        return False
    # A venv synced from a lock that was not checked (--frozen) only satisfies --frozen runs.
    return frozen or not state.get("frozen", False)


def _prepare(ctx: Any, args: argparse.Namespace) -> tuple[Path, Path, Any, dict[str, Any]]:
    """Sync if needed; returns (project root, venv, Project or None when not loaded, tool knobs)."""
    from .venvstate import tool_knobs

    if not args.no_sync:
        fast = _fast_venv(ctx, args)
        if fast is not None:
            root, venv, knobs = fast
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

    opts = SyncOptions.from_args(args)
    venv = ensure_synced(ctx, project, opts)
    return project.root, venv, project, tool_knobs(project)


def _execute(ctx: Any, args: argparse.Namespace, argv: list[str]) -> int:
    root, venv, project, knobs = _prepare(ctx, args)
    if knobs.get("trusted-keys"):  # issue 7: refuse a lock not signed by a trusted key (nothing to do when unset)
        from .signing import require_signed_lock

        require_signed_lock(root / "pypm.lock", knobs["trusted-keys"], base_dir=root)
    sandboxed = not args.no_sandbox and knobs.get("sandbox-enabled", True) is not False
    plugins_on = bool(knobs.get("plugins"))
    if plugins_on and project is None:  # the sandbox reads only [tool.pypm.sandbox] itself
        project = ctx.project()
    env = venv_environment(venv)
    if plugins_on:
        from . import plugins

        plugins.fire(project, "pre-run", venv=str(venv))
    if sandboxed:
        try:
            from .sandboxing import run_sandboxed
        except ImportError:
            raise SandboxError("the sandbox is not available in this build of pypm",
                               hint="pass --no-sandbox to run directly on the host") from None
        rc = run_sandboxed(ctx, project, venv, argv, env, args)
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
    return _execute(ctx, args, argv)


def run_shell(ctx: Any, args: argparse.Namespace) -> int:
    """`pypm shell`: an interactive shell ($SHELL, else /bin/sh) in the project's environment."""
    shell = os.environ.get("SHELL") or "/bin/sh"
    if not Path(shell).exists():
        shell = "/bin/sh"
    return _execute(ctx, args, [shell, "-i"])
