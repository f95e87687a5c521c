"""Plugins: the hook call sites that lock, sync, build and run use (`fire`, `wheel_fetchers`).

This module imports nothing heavy: when `[tool.pypm] plugins` is empty, `fire` returns
at once, so a project without plugins pays nothing. Discovery and loading live in
`pypm.plugins.host`.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable

if TYPE_CHECKING:  # pragma: no cover
    from ..project import Project

__all__ = ["STAGES", "PackageInfo", "fire", "wheel_fetchers", "list_command", "set_quiet", "quiet", "warn_once"]

# The life-cycle stages, in the order a `pypm run` after a fresh clone meets them.
STAGES = ("pre-lock", "post-lock", "pre-sync", "post-sync", "pre-build", "post-build", "pre-run", "post-run")

Fetcher = Callable[[str, str, Path], bool]

# `pypm -q`, set once by the CLI's Context. Process-wide rather than a parameter of `fire`,
# because hooks are fired from deep inside lock/sync/build/run (and the fetchers from the
# cache), none of which otherwise needs to know how loud the command is.
_quiet = False
_warned_lock = threading.Lock()


def set_quiet(flag: bool) -> None:
    """Plugin messages (`ctx.report`) are kept but not printed while `flag` is true."""
    global _quiet
    _quiet = bool(flag)


def quiet() -> bool:
    return _quiet


_warned: set[str] = set()


def warn_once(msg: str) -> None:
    """`warning: msg` on stderr, once per process (several clients, on several threads, may meet
    the same thing), and never with -q: for code that has no command context to ask (the HTTP
    clients, pypm.credentials)."""
    import sys

    with _warned_lock:
        if msg in _warned or _quiet:
            return
        _warned.add(msg)
    print(f"warning: {msg}", file=sys.stderr)


@dataclass(frozen=True)
class PackageInfo:
    """One package of the plan, as every plugin sees it."""

    name: str
    version: str
    wheel_path: str | None  # the verified wheel in the cache; None when not (yet) known
    sha256: str


def fire(project: "Project", stage: str, *, venv: str | Path | None = None, lock_path: str | Path | None = None,
         interpreter: str | Path | None = None, packages: Iterable[PackageInfo] = ()) -> None:
    """Run every enabled plugin's hook for `stage`; raise PluginError on the first failure."""
    if not project.tool.plugins:
        return
    from .host import fire_stage

    fire_stage(project, stage, venv=venv, lock_path=lock_path, interpreter=interpreter, packages=tuple(packages))


def wheel_fetchers(project: "Project") -> list[Fetcher]:
    """Callables `(sha256, filename, dest) -> bool` that the cache tries before the index.

    A fetcher writes the file to `dest` and returns True, or returns False (nothing
    written) when it does not have it. The caller verifies what was written.
    """
    if not project.tool.plugins:
        return []
    from .host import fetchers

    return fetchers(project)


def list_command(ctx: Any, args: Any) -> int:
    """`pypm plugins`: what is enabled, what is found, where from, which hooks each implements."""
    from .host import list_plugins

    return list_plugins(ctx, args)
