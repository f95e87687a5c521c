"""A sync's downloads in a forked child process.

Why a process: in one process the download threads share the GIL with the unpacking and the
installs. Every TLS record a download thread reads (16 kB) needs the GIL back, so the biggest
download of a cold sync arrived several times slower than it would alone, and the unpacking that
follows it started late (docs/performance.md). A child has a GIL of its own.

Why fork, not a fresh interpreter: a fresh one has to start and import pypm again (72-82 ms under
load, measured), after which its first request left later than the in-process one. A fork
already has pypm's modules; it imports the HTTP stack (httpx, ~25 ms) and makes the TLS context
on the second core while this process reads the lock and plans, so that work is no longer on
the way to the first request. The fork is made before the sync starts any thread (forking a
process with running threads can copy a lock some other thread holds); with any other thread
running, there is no child and the sync downloads in-process, as it did before.

What the child does is exactly what `Cache.fetch_many` does in-process (every file checked
against the lock's sha256 and size before it is renamed into the cache); it reports each
verified file as it lands, so that this process unpacks it at once. The protocol is
pypm.framing's (length-prefixed pickles) over two pipes; both ends are this module.

Failure handling:
- a child that cannot be forked: downloads in-process (a debug note);
- a child that dies without an answer: what it had not reported is downloaded in-process (the
  same code; the files it verified are found in the cache);
- an error in the child (a hash mismatch, an unreachable index): raised in this process as if it
  were its own, hint included;
- Ctrl-C: the child ignores SIGINT; this process kills it as it unwinds. Downloads cut short
  keep their `.part` files, which the next run resumes, as in-process;
- this process killed (kill -9): the child reads end-of-file on its job pipe and exits at once.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

__all__ = ["FetchChild", "fork_early"]

_early: "FetchChild | None" = None  # forked by fork_early, taken by the sync


def fork_early(argv: list[str]) -> None:
    """Fork the download process at once for a `pypm sync` that the fast paths did not finish
    (pypm.__main__): it then gets ready while this process loads the CLI, the project and the
    lock (~90 ms on the canary). Not for a sync that cannot download: --offline, --dry-run,
    --help, PYPM_OFFLINE set to a yes, PYPM_FETCH_PROCESS=0. (The entry point has checked that
    every on/off variable is a yes or a no: fastpath.flags_readable.)"""
    from .config import env_flag

    global _early
    if _early is not None or any(a in ("--offline", "--dry-run", "-h", "--help") for a in argv):
        return
    if env_flag("PYPM_OFFLINE") or not enabled():
        return
    # What both processes import, imported once, here, before the fork: the cache and the framing
    # (hashlib, json, the lock model, dataclasses and inspect, concurrent.futures and logging,
    # pickle) and tempfile (shutil, random, bz2, lzma). The sync imports them all anyway; in the
    # child they cost ~20 ms of CPU more, while it and this process (and the child's TLS thread)
    # share two cores. The fork comes ~18 ms later, and the child is ready no later. The web
    # stack's cold sync, tmpfs, A B A B, medians of 20: 0.553 -> 0.537 s, 0.958 -> 0.934 s of CPU.
    import tempfile  # noqa: F401

    from . import cache, framing  # noqa: F401

    _early = FetchChild.start()


def enabled() -> bool:
    """PYPM_FETCH_PROCESS=0 (or false, no, off) keeps a sync's downloads in-process, as they were
    before this module (a tuning and debugging switch); unset, empty or a yes: a process of their
    own. Any other value is refused (UsageError, as for every yes/no variable: config.env_flag)
    rather than read as one or the other."""
    from .config import env_flag

    return env_flag("PYPM_FETCH_PROCESS", default=True)


class FetchChild:
    """A forked download process, waiting for its one job. `start` forks it; `fetch_many` hands
    it the files and returns when they are all in the cache; `close` always (it reaps it)."""

    def __init__(self, pid: int, job_w: int, out_r: int) -> None:
        self.pid = pid
        self._job_w: int | None = job_w
        self._out_r: int | None = out_r
        self._answered = False  # it sent its last message: it is exiting, so close() waits for it

    @classmethod
    def start(cls, debug: Callable[[str], None] | None = None) -> "FetchChild | None":
        """Fork the child, or None when that is not safe (another thread runs) or fails."""
        import threading

        if threading.active_count() != 1:
            return None
        job_r, job_w = os.pipe()
        out_r, out_w = os.pipe()
        try:
            pid = os.fork()
        except OSError as e:
            for fd in (job_r, job_w, out_r, out_w):
                os.close(fd)
            if debug is not None:
                debug(f"cannot start the download process ({e.strerror}); downloading in-process")
            return None
        if pid == 0:  # the child: never returns into the caller's stack (its cleanups are the parent's)
            code = 70
            try:
                os.close(job_w)
                os.close(out_r)
                code = _child(job_r, out_w)
            finally:
                os._exit(code)
        os.close(job_r)
        os.close(out_w)
        return cls(pid, job_w, out_r)

    @classmethod
    def take(cls) -> "FetchChild | None":
        """The child `fork_early` made, if any (once: the caller owns it from then on)."""
        global _early
        child, _early = _early, None
        return child

    def fetch_many(self, cache: Any, items: list[tuple[str, Any]], *, progress: bool | None,
                   on_fetched: Callable[[str, Path], None], debug: Callable[[str], None]) -> dict[str, Path]:
        """`cache.fetch_many(items, progress=..., on_fetched=...)`, done by the child; what it
        cannot finish is done here."""
        import pickle

        from .credentials import snapshot
        from .framing import recv, send
        from .plugins import quiet

        assert self._job_w is not None and self._out_r is not None, "one job per child"
        out: dict[str, Path] = {}
        msg: Any = None
        try:
            # With the index credentials this process was given (pypm.credentials): the child was
            # forked before the command line and the project were read.
            send(self._job_w, (str(cache.root), str(cache.base_dir), items, progress, quiet(), snapshot()))
        except OSError as e:  # it is gone already
            debug(f"cannot hand the downloads to process {self.pid} ({e})")
        else:
            while True:
                try:
                    msg = recv(self._out_r)
                except (OSError, EOFError, pickle.UnpicklingError) as e:
                    debug(f"the download process stopped answering ({e})")
                    msg = None
                if msg is None or msg[0] != "fetched":
                    break
                out[msg[1]] = Path(msg[2])
                on_fetched(msg[1], Path(msg[2]))
        if msg is not None:
            self._answered = True
            cache.events.extend(msg[-1])
            if msg[0] == "error":  # the child's failure (a hash mismatch, no network) is this sync's
                raise msg[1]
            return out
        debug(f"the download process {self._how()}; downloading the rest in-process")
        self.close()
        rest = [(p, e) for p, e in items if e.sha256 not in out]
        out.update(cache.fetch_many(rest, progress=progress, on_fetched=on_fetched))
        return out

    def _how(self) -> str:
        """Why it stopped answering, for the debug note: its exit status when it has exited."""
        import time

        # Its output closes as it exits, a moment before it can be reaped: wait up to a second.
        deadline = time.monotonic() + 1.0
        while True:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:
                return "is gone"
            if pid or time.monotonic() > deadline:
                break
            time.sleep(0.005)
        if pid == 0:
            return "closed its output"
        self.pid = 0  # reaped
        sig = os.WTERMSIG(status) if os.WIFSIGNALED(status) else 0
        return f"exited with signal {sig}" if sig else f"exited with status {os.waitstatus_to_exitcode(status)}"

    def close(self) -> None:
        """End the child and reap it: one that answered is exiting and is waited for; any other
        (still getting ready, or at work for an abandoned sync) is killed. Its job pipe closes
        first, so a child that is not killed in time exits on its own."""
        import signal

        for attr in ("_job_w", "_out_r"):
            fd = getattr(self, attr)
            if fd is not None:
                setattr(self, attr, None)
                os.close(fd)
        if self.pid:
            pid, self.pid = self.pid, 0
            try:
                if not self._answered:
                    os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            except (ChildProcessError, ProcessLookupError):
                pass  # reaped already


def _child(job_r: int, out_w: int) -> int:
    """The child's life: get ready, wait for the job, download, report, exit (status 0: it
    answered, whatever the answer)."""
    import gc
    import signal
    import sys

    # No cyclic garbage collection in this short-lived process (it ends with os._exit): the
    # collector ran ~45 times while it imported the HTTP stack and downloaded (5-7 ms of its CPU,
    # ~5 ms of them before its first request). What its downloads leave in cycles is freed
    # with the process.
    gc.disable()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle (it kills us)
    # SIGTERM ends this process outright, whatever handler the parent had when it forked
    # (errors.terminate_as_interrupt): the parent, which handles it, kills this one anyway.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    # Nothing of the child's goes to stdout, and a reader of pypm's stdout (`pypm sync | tee`)
    # must see it end with pypm, not with this process. stderr stays: the progress bars.
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 1)
    os.close(null)
    # Ready before the job comes: the HTTP stack imported and the TLS context made. The client
    # is made with the job, when -q is known (it may warn).
    from . import tls

    tls.start()
    from . import http  # noqa: F401
    from .cache import Cache
    from .framing import dumps_or, note_origin, recv, send, send_pickled

    job = recv(job_r)
    if job is None:
        return 0  # the sync needed no download (or ended before it knew)
    root, base_dir, items, progress, quiet, known = job
    from .credentials import restore
    from .plugins import set_quiet

    set_quiet(quiet)
    restore(known)
    cache = Cache(Path(root), offline=False, base_dir=Path(base_dir))
    import threading

    guard = threading.Lock()

    def watch() -> None:  # the parent gone (killed) or done: stop at once
        while os.read(job_r, 1 << 12):
            pass
        os._exit(0)

    threading.Thread(target=watch, name="pypm-fetch-watch", daemon=True).start()

    def fetched(sha: str, path: Path) -> None:
        with guard:
            send(out_w, ("fetched", sha, str(path)))

    try:
        cache.fetch_many(items, progress=progress, on_fetched=fetched)
        reply: tuple[Any, ...] = ("done", cache.events)
    except BaseException as e:  # handed to the parent, which raises it as its own
        reply = ("error", note_origin(e, "the download process"), cache.events)

    def fallback(err: Any = reply[1] if reply[0] == "error" else None) -> tuple[Any, ...]:
        from .errors import IndexError_

        return "error", IndexError_(f"downloading failed: {type(err).__name__}: {err}"), cache.events

    data = dumps_or(reply, fallback)
    with guard:
        send_pickled(out_w, data)
    sys.stderr.flush()
    return 0
