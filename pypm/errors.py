"""The one error hierarchy of pypm: every failure a user can act on is a PypmError."""

from __future__ import annotations

__all__ = [
    "ExitCode",
    "PypmError",
    "UsageError",
    "ProjectError",
    "ResolutionError",
    "IndexError_",
    "IntegrityError",
    "LockError",
    "StaleLockError",
    "OutOfSync",
    "InstallError",
    "SandboxError",
    "PluginError",
    "BuildError",
    "VerifyError",
    "Terminated",
    "report_failure",
]


class ExitCode:
    """Exit codes of the `pypm` command; documented in `pypm --help` and docs/cli.md."""

    OK = 0
    FAILURE = 1  # a check said no: `lock --check` stale, `outdated` found updates, `verify` found changes
    USAGE = 2  # bad command line (argparse uses 2 too)
    PROJECT = 3  # pyproject.toml / pypm.lock / configuration is invalid
    RESOLUTION = 4  # no set of versions satisfies the requirements
    NETWORK = 5  # an index or file could not be fetched
    INTEGRITY = 6  # a hash, size or signature did not match
    INSTALL = 7  # the venv could not be built or changed
    SANDBOX = 8  # the sandbox could not be set up
    PLUGIN = 9  # a plugin failed or could not be loaded
    BUILD = 10  # a source build failed
    INTERRUPTED = 130  # Ctrl-C
    TERMINATED = 143  # SIGTERM (128+15)


class PypmError(Exception):
    """Base class. `str(err)` is the whole message the user sees; `hint` says what to do next."""

    exit_code: int = ExitCode.FAILURE

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message}\n  hint: {self.hint}"
        return self.message


class UsageError(PypmError):
    exit_code = ExitCode.USAGE


class ProjectError(PypmError):
    """pyproject.toml, pypm.lock or a configuration value is invalid."""

    exit_code = ExitCode.PROJECT


class LockError(ProjectError):
    """pypm.lock is malformed or cannot be used as it is."""


class StaleLockError(LockError):
    """pypm.lock does not match pyproject.toml (raised under --locked / --check)."""

    exit_code = ExitCode.FAILURE


class OutOfSync(PypmError):
    """`pypm sync --check`: .venv would change."""

    exit_code = ExitCode.FAILURE


class ResolutionError(PypmError):
    exit_code = ExitCode.RESOLUTION


class IndexError_(PypmError):
    """An index, find-links location or file URL could not be read."""

    exit_code = ExitCode.NETWORK


class IntegrityError(PypmError):
    """A hash, size or signature did not match what was expected."""

    exit_code = ExitCode.INTEGRITY


class InstallError(PypmError):
    exit_code = ExitCode.INSTALL


class SandboxError(PypmError):
    exit_code = ExitCode.SANDBOX


class PluginError(PypmError):
    exit_code = ExitCode.PLUGIN


class BuildError(PypmError):
    exit_code = ExitCode.BUILD


class VerifyError(PypmError):
    exit_code = ExitCode.FAILURE


class Terminated(KeyboardInterrupt):
    """SIGTERM (a CI runner's timeout, `kill`, a container stopping), raised in the main thread as
    Ctrl-C is, so that everything Ctrl-C cleans up (a half-built venv, temporary build trees, the
    running builds' sandboxes) is cleaned up the same way; the exit status is 143 (128+15)."""


def report_failure(exc: BaseException, *, verbose: int = 0) -> int:
    """Tell the user how a command failed and return its exit code (the CLI's one policy).

    A PypmError prints its message (and hint); Ctrl-C prints "interrupted" (130); a closed
    pipe is quiet; anything else is a bug in pypm, said plainly. Tracebacks only with -v (or,
    for a bug, PYPM_TRACEBACK=1).
    Used by `cli.main` and by the hot-path entry points that run before the CLI loads.
    """
    import sys

    if isinstance(exc, Terminated):
        print("terminated", file=sys.stderr)
        return ExitCode.TERMINATED
    if isinstance(exc, KeyboardInterrupt):
        print("interrupted", file=sys.stderr)
        return ExitCode.INTERRUPTED
    if isinstance(exc, BrokenPipeError):
        return ExitCode.FAILURE
    # PYPM_TRACEBACK=1: also the traceback of an internal error without -v (a bug seen once, in
    # CI, that a second run may not show again: the test suite sets it). Read here, when it is
    # needed, not by the entry points (no cost to a command that succeeds).
    import os

    from .fastpath import FLAG_YES

    internal = not isinstance(exc, PypmError)
    if verbose or (internal and os.environ.get("PYPM_TRACEBACK", "").strip().lower() in FLAG_YES):
        import traceback

        traceback.print_exception(exc)
    if isinstance(exc, PypmError):
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    print(f"internal error: {type(exc).__name__}: {exc}\n  hint: run again with --verbose for the traceback, "
          "and report it", file=sys.stderr)
    return ExitCode.FAILURE
