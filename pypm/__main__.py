"""`python -m pypm` is `pypm`; `main` is also the `pypm` command (bin/pypm): run's fast path, else the CLI."""

import os
import sys


def main() -> int:
    """The process entry point (it may end the process itself: never call it in-process)."""
    argv = tool_run_as_x(sys.argv[1:])
    if any(k.startswith("PYPM_") for k in os.environ):  # (fastpath is not imported on a run's exec path)
        from .fastpath import flags_readable

        if not flags_readable():  # PYPM_OFFLINE=maybe: the CLI says what is wrong (exit 2)
            from .cli import main as cli_main

            return cli_main(argv)
    if "run" in argv[:2]:  # `pypm run ...` or `pypm -q run ...`: before argparse and the CLI load
        from .launch import launch

        launch(argv)  # exec's the sandbox helper when a recorded plan still holds (pypm.launch)
        from .run import fast_main

        rc = fast_main(argv)
        if rc is not None:
            _exit(rc)
    elif "x" in argv[:2] and _is_command(argv, "x"):  # `pypm x TOOL` with its environment current, likewise
        from .launch import launch

        launch(argv)  # the tool's plan (keyed by the directory and TOOL): pypm.launch
        from .toolrun import fast_x

        rc = fast_x(argv)
        if rc is not None:
            _exit(rc)
    if "sync" in argv[:2]:  # a no-op `pypm sync`, likewise (venvstate.fast_sync)
        from .venvstate import fast_sync

        rc = fast_sync(argv)
        if rc is None:  # no .venv yet: rebuilt from the store when a recipe matches (syncrecipe)
            from .syncrecipe import fast_fresh_sync

            rc = fast_fresh_sync(argv)
        if rc is not None:
            _exit(rc)
        # A full sync follows, which most likely downloads: its download process is forked now,
        # before this one starts any thread, and gets ready while the CLI and the lock load.
        from .fetchchild import fork_early

        full_sync = _is_command(argv, "sync")
        if full_sync:
            # No cyclic garbage collection from here on, as in the sync itself (pypm.sync:
            # _sync_locked): ~30 collections while the CLI, the project and the lock load
            # (~3 ms), on the way to the first download. The process ends after the command.
            import gc

            gc.disable()
        fork_early(argv)
        if full_sync:
            # As for a full lock below: the venv, its state and the recipe are written by now
            # and the download process is reaped; the teardown only freed objects (~5 ms).
            return _run_without_teardown(argv)
    if "lock" in argv[:2]:  # a no-op `pypm lock` / `pypm lock --check`, likewise (locking.fast_lock)
        from .fastpath import noop_lock

        rc = noop_lock(argv)  # from its record alone, when that can tell (no pypm.locking loaded)
        if rc is not None:
            _exit(rc)
        from .locking import fast_lock

        rc = fast_lock(argv)
        if rc is not None:
            _exit(rc)
        if _is_command(argv, "lock"):
            # A full lock has written its lock and flushed its cache by now; the interpreter's
            # teardown only freed its ~100 MB of index data object by object (L: ~0.06-0.1 s).
            return _run_without_teardown(argv)
    from .cli import main as cli_main

    return cli_main(argv)


def tool_run_as_x(argv: list[str]) -> list[str]:
    """`pypm tool run ARGS...` is `pypm x ARGS...`, as `uv tool run` is uvx: rewritten before
    anything else looks at the command line, so it takes x's fast path and launcher plan too."""
    i = 1 if argv[:1] in (["-q"], ["--quiet"]) else 0
    if argv[i:i + 2] == ["tool", "run"]:
        return [*argv[:i], "x", *argv[i + 2:]]
    return argv


def _is_command(argv: list[str], name: str) -> bool:
    """`pypm NAME ...` or `pypm -q NAME ...` (not, say, `pypm add NAME`)."""
    return argv[0] == name or (argv[0] in ("-q", "--quiet") and argv[1:2] == [name])


def _run_without_teardown(argv: list[str]) -> int:
    """The CLI's command, then the end of the process without the interpreter's teardown, unless
    a thread that is not a daemon still runs (a plugin's, say: the interpreter waits for it, so
    this returns the exit status to exit normally). Functions registered with atexit (a
    plugin's) run first."""
    from .cli import main as cli_main

    rc = cli_main(argv)
    import threading

    if any(t.is_alive() and not t.daemon for t in threading.enumerate() if t is not threading.main_thread()):
        return rc
    import atexit

    atexit._run_exitfuncs()
    _exit(rc)
    return rc  # not reached


def _exit(rc: int) -> None:
    # The command has finished and nothing of ours is left to clean up (the sandbox removed
    # its temporary root): skip the interpreter's teardown, a few ms with the sandbox loaded.
    for f in (sys.stdout, sys.stderr):
        try:
            f.flush()
        except (OSError, ValueError, AttributeError):  # AttributeError: None, started with the fd closed
            pass
    os._exit(rc)


if __name__ == "__main__":
    sys.exit(main())
