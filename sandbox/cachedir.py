"""Where pypm's cache lives, and which of its files may be trusted: one answer for the sandbox, the launcher and pypm.

A leaf module (only `os`): the launcher reads it on every `pypm run` before anything else is
imported, and `sandbox` must not import `pypm`.
"""

from __future__ import annotations

import os

__all__ = ["default_cache_dir", "ours"]


def default_cache_dir() -> str:
    """$PYPM_CACHE_DIR, else $XDG_CACHE_HOME/pypm, else ~/.cache/pypm (pypm.config.cache_dir on Linux)."""
    env = os.environ.get("PYPM_CACHE_DIR")
    if env:
        # resolved: the sandbox, the launcher and pypm must name the same directory whatever
        # the working directory of the process asking is
        return os.path.realpath(os.path.expanduser(env))
    xdg = os.environ.get("XDG_CACHE_HOME")
    return os.path.join(xdg, "pypm") if xdg else os.path.join(os.path.expanduser("~"), ".cache", "pypm")


def ours(st: os.stat_result) -> bool:
    """Whether a cache file or directory can be trusted for what it decides (a helper binary run
    outside the sandbox, a seccomp program, a recorded run plan): this user owns it and nobody
    else can write it. A cache on a shared disk, or a directory another user made first, fails."""
    return st.st_uid == os.getuid() and not st.st_mode & 0o022
