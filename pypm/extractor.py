"""Making store entries (extract, verify, tree, manifest) in child processes during a sync.

Why processes: a cold sync downloads, unpacks and installs at once. In one process those share
one GIL, and unpacking is the biggest part of it (the web stack: ~0.35 s of CPU for 72 wheels,
per-member Python work around isal and sha256). With threads, the downloads, the unpacking and
the installs took turns on the GIL, and a fifth of the CPU went on handing it over. A worker
process unpacks on a core of its own, so the parent's downloads and installs no longer wait
for it.

A sync starts at most one worker by default (`worker_count`), and an unpack thread that finds
it busy extracts in-process meanwhile instead of waiting: the worker takes about half of the
wheels, off this process's GIL, for ~20 MB of memory.

A worker is a fresh interpreter (`-I -S`, the parent's `sys.path`) that imports only what
extraction needs (~20 MB), not a fork of the parent: forking a process with running threads
is unsafe, and a fork's copied pages would count again in every worker's resident size.

What a worker does is exactly what `Cache.unpack` does in-process (`make_entry`): it writes a
`.tmp-*` directory that the parent, holding the entry's file lock, renames into place. Every
check runs in the worker as it would in the parent; its errors (pypm's with their hints) come
back pickled and are raised in the parent. The protocol is length-prefixed pickles over the
worker's stdin/stdout: both ends are this module, and nothing else can write to those pipes.

Failure handling:
- a worker that cannot start, or dies outside a shutdown, is not trusted again in this sync:
  its job and the rest run in-process (the same code, the same checks), with a debug note;
- Ctrl-C: workers ignore SIGINT (the parent's whole process group gets it); the parent kills
  them when it unwinds (`close(kill=True)`), so nothing extracts after pypm has given up;
- the parent killed outright (kill -9): a worker reads end-of-file after its current job and
  exits; the `.tmp-*` directory it may leave is removed by `pypm cache prune`, and a later sync
  uses another name (it has the parent's pid and thread in it).
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

from .wheelfile import PARALLEL_MIN_BYTES

__all__ = ["make_entry", "Workers", "worker_count", "IN_PROCESS_MIN_BYTES"]

# Wheels at least this big are unpacked in the parent, where `extract_verified` spreads a wheel
# of PARALLEL_MIN_BYTES or more (uncompressed; wheels shrink ~2-3x) over threads: mypy's 12.6 MB
# took 0.03-0.04 s longer alone in a worker, on the canary's critical path.
IN_PROCESS_MIN_BYTES = PARALLEL_MIN_BYTES // 2  # 8 MB


def make_entry(cache_root: str, wheel: str, tmp: str, final: str, filename: str, sha256: str, label: str) -> None:
    """Extract the (sha256-verified) `wheel` into the new directory `tmp`, checking every member
    against RECORD, and write the wheel's Merkle tree and the entry's install manifest. The
    caller renames `tmp` to `final` (the manifest is already named after `final`)."""
    from .wheelfile import extract_verified
    from .wheeltree import manifest_path, store, tree_of_extracted, write_manifest

    target = manifest_path(Path(final))
    if target is None:  # a caller's mistake, refused before anything is written (not a file named "None")
        raise ValueError(f"{final} is not a store entry (<cache>/unpacked/<sha256[:2]>/<sha256>)")
    manifest = extract_verified(Path(wheel), Path(tmp), label=label)
    # issue 7: the Merkle tree, from verified bytes
    tree = tree_of_extracted(Path(tmp), wheel_filename=filename, wheel_sha256=sha256, manifest=manifest)
    store(Path(cache_root), tree)
    manifest.update({"merkle-root": tree.root, "wheel-sha256": sha256})
    # Written before the entry appears: an entry without one is from an older pypm (the
    # installer derives it then), never a half-written one.
    write_manifest(target, manifest)


def worker_count(sizes: list[int]) -> int:
    """How many workers a sync that unpacks wheels of these sizes (bytes) starts.

    One when most of the bytes are in wheels below IN_PROCESS_MIN_BYTES (the web stack: 32 of
    43 MB), else none: a sync dominated by one big wheel (the torch set: 183 of 195 MB; the canary:
    mypy, 12.6 of 16 MB) is as fast without one, since that wheel's extraction threads want
    both cores, and the worker's ~20 MB would come on top of the sync's highest peak (torch
    measured 86 MB with one against 72 MB without). One, not one per core: the parent extracts
    too while the worker is busy (`Workers.make_entry`), and two workers cost ~40 MB for
    ~5 % more (docs/performance.md, "Fourth round"). `PYPM_EXTRACT_WORKERS` sets the number
    for every sync with two or more wheels; 0 unpacks in-process, as pypm did before."""
    small = [s for s in sizes if s < IN_PROCESS_MIN_BYTES]
    raw = os.environ.get("PYPM_EXTRACT_WORKERS", "")
    if raw.strip():
        n = int(raw) if raw.strip().isdigit() else -1
        if n < 0:
            from .errors import UsageError

            raise UsageError(f"PYPM_EXTRACT_WORKERS={raw!r} is not a number of processes",
                             hint="set it to how many worker processes unpack wheels (0: unpack in-process)")
        return min(n, len(small)) if len(sizes) >= 2 else 0
    return 1 if len(small) >= 2 and 2 * sum(small) > sum(sizes) else 0


# Jobs a worker holds at once: the one it runs and the next, already in its pipe. With one, the
# worker waited after every wheel for an unpack thread of the parent to read the reply and send
# the next job: a round trip through the parent's GIL, which the downloads' bookkeeping, the
# installs and the in-process extractions keep busy (0.3-1.3 ms a wheel, and 35 ms at a stretch
# while both unpack threads extracted big wheels in-process). The web stack's cold sync, tmpfs,
# A B A B, medians of 20: 0.559 s with one, 0.539 s with two, 0.586 s with three (the worker
# then takes wheels that the parent would have finished sooner).
DEPTH = 2


class _Dead(Exception):
    """A worker exited or its pipe broke outside a shutdown."""


class _Worker:
    def __init__(self) -> None:
        import subprocess
        import sys

        # The parent's import path, less the current directory (where `python -m pypm` puts it
        # first): the worker imports modules the parent may not have (zipfile, csv, ...), and a
        # project being synced must not be able to supply them. Kept only when pypm itself is
        # imported from there (its own source tree).
        here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        cwd = os.getcwd()
        path = [p for p in sys.path if os.path.abspath(p or ".") != cwd or os.path.abspath(p or ".") == here]
        # pypm's own directory first, when sys.path does not name it: an editable install
        # (setuptools' import-hook finder, loaded by a .pth that -S skips) finds pypm through
        # no entry of sys.path, and without this every worker exited 3 at once and each sync
        # unpacked in-process (as every e2e test's did, silently: the fallback is a debug note).
        if here not in (os.path.abspath(p or ".") for p in path):
            path.insert(0, here)
        # A worker that cannot import pypm exits with status 3 (the parent then extracts
        # in-process): no traceback for the user from a helper process.
        boot = (f"import sys\nsys.path[:] = {path!r}\n"
                "try:\n    from pypm.extractor import _serve\nexcept Exception:\n    sys.exit(3)\n_serve()\n")
        # -I: no environment variables or user site; -S: no site module (sys.path is the
        # parent's, .pth additions included). A session of its own: Ctrl-C at the terminal
        # reaches pypm alone, which kills its workers as it unwinds (even one still starting,
        # which could not ignore SIGINT yet). stderr is inherited: a worker's own crash report
        # reaches the user. close_fds (the default) keeps the parent's other pipes and sockets out.
        self.proc = subprocess.Popen([sys.executable, "-I", "-S", "-c", boot], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, start_new_session=True)
        self._send_lock = threading.Lock()
        self._turn = threading.Condition()
        self._sent = 0  # jobs sent; the next one's ticket
        self._read = 0  # replies read; whose turn it is

    def call(self, job: tuple[str, ...]) -> tuple[bool, Any]:
        """Send `job` and wait for its reply. Up to DEPTH threads may call at once: the worker
        answers its jobs in the order they were sent, so each caller reads the reply whose turn
        matches its ticket (the next job is already in the pipe when one ends: no round trip
        through this process's busy GIL between two jobs)."""
        try:
            reply = self._reply(self._send(job))
        except (BrokenPipeError, OSError, ValueError) as e:  # ValueError: a pipe closed by close()
            raise _Dead(f"{self._how()} ({e})") from None
        if reply is None:
            raise _Dead(self._how())
        ok, value = reply
        return ok, value

    def _send(self, job: tuple[str, ...]) -> int:
        """Send `job`; returns its ticket (the jobs' order in the pipe)."""
        from .framing import send

        with self._send_lock:
            send(self.proc.stdin.fileno(), job)  # type: ignore[union-attr]
            ticket = self._sent
            self._sent += 1
        return ticket

    def _reply(self, ticket: int) -> Any:
        """The reply to the job with `ticket`, once every earlier reply has been read (by its own
        caller: a thread that sent later may get here first)."""
        from .framing import recv

        with self._turn:
            while self._read != ticket:
                self._turn.wait()
            try:
                return recv(self.proc.stdout.fileno())  # type: ignore[union-attr]
            finally:
                self._read += 1  # also when the read failed: the next caller reads end-of-file
                self._turn.notify_all()

    def _how(self) -> str:
        code = self.proc.poll()
        if code is None:
            return "it closed its output"
        return f"it exited with signal {-code}" if code < 0 else f"it exited with status {code}"

    def close(self, kill: bool) -> None:
        if kill:
            self.proc.kill()
        for f in (self.proc.stdin, self.proc.stdout):
            try:
                f.close()  # type: ignore[union-attr]
            except OSError:
                pass  # its end is gone already
        self.proc.wait()  # end of input: it exits after its current job (there is none now)


class Workers:
    """Up to `count` worker processes, started at once and shared by a sync's unpack threads:
    each call takes a free place in one (a worker holds DEPTH jobs: the one it runs and the next
    in its pipe), or runs in the calling thread when all are taken. Use as a context manager, or
    call `close`."""

    def __init__(self, count: int, *, debug: Any = None, in_process: int = 0) -> None:
        import subprocess

        self._debug = debug
        # At most `in_process` extractions in this process at once (0: no limit). A sync gives
        # its unpack threads one more than its cores per worker, to keep each worker's pipe fed;
        # when those threads extract here instead (wheels too big for a worker, or a worker that
        # died), the extra ones would only add to the contention on this process's GIL and to its
        # memory, so they wait for a place.
        self._here = threading.BoundedSemaphore(in_process) if in_process > 0 else None
        self._guard = threading.Lock()
        self._closed = False
        self._all: list[_Worker] = []
        try:  # started now: they boot (~20 ms) while the first downloads are under way
            for _ in range(count):
                self._all.append(_Worker())
        except (OSError, ValueError, subprocess.SubprocessError) as e:  # no interpreter to start (frozen?)
            self._note(f"cannot start an extraction worker ({e}); unpacking in-process")
            for w in self._all:
                w.close(kill=True)
            self._all = []
        self._idle = [w for w in self._all for _ in range(DEPTH)]  # free places, DEPTH per worker
        self._broken = not self._all
        self.started = len(self._all)
        self.counts = {"worker": 0, "here": 0}  # wheels unpacked by a worker / in this process (--verbose)

    def __enter__(self) -> "Workers":
        return self

    def __exit__(self, kind: Any, *exc: object) -> None:
        self.close(kill=kind is not None)

    @property
    def usable(self) -> bool:
        return not self._broken and not self._closed

    def _note(self, msg: str) -> None:
        if self._debug is not None:
            self._debug(msg)

    def _take(self) -> _Worker | None:
        """An idle worker, or None: all busy (the caller extracts in-process meanwhile rather than
        wait), none usable, or closed."""
        with self._guard:
            if self._broken or self._closed or not self._idle:
                return None
            return self._idle.pop()

    def _give_back(self, w: _Worker) -> None:
        with self._guard:
            self._idle.append(w)

    def extract_here(self, *args: str) -> None:
        """`make_entry(*args)` in this process, once one of its `in_process` places is free."""
        from contextlib import nullcontext

        with self._here if self._here is not None else nullcontext():
            self._refuse_if_closed()  # after any wait: the sync may have been abandoned meanwhile
            make_entry(*args)
            with self._guard:
                self.counts["here"] += 1

    def _refuse_if_closed(self) -> None:
        if self._closed:
            from .cache import _Cancelled

            raise _Cancelled()  # the sync is being abandoned: do not start new work

    def make_entry(self, *args: str) -> None:
        """`make_entry(*args)` in a worker, or in this process when no worker can take it."""
        w = self._take()
        if w is None:
            self.extract_here(*args)
            return
        try:
            ok, value = w.call(args)
        except _Dead as e:
            with self._guard:
                closing = self._closed
                self._broken = True
            if closing:  # killed by close(kill=True): the sync is being abandoned
                from .cache import _Cancelled

                raise _Cancelled() from None
            self._note(f"the extraction worker stopped ({e}); unpacking in-process from now on")
            import shutil

            shutil.rmtree(args[2], ignore_errors=True)  # whatever it had extracted: start over
            self.extract_here(*args)
            return
        self._give_back(w)
        if not ok:
            raise value
        with self._guard:
            self.counts["worker"] += 1

    def close(self, kill: bool = False) -> None:
        """Stop every worker: at once (`kill`, an abandoned sync) or after its current job."""
        with self._guard:
            self._closed = True
            workers, self._all = self._all, []
        for w in workers:
            w.close(kill)
        if workers and not kill:
            self._note(f"unpacked {self.counts['worker']} wheels in the extraction worker, "
                       f"{self.counts['here']} in this process")


def _serve() -> None:
    """A worker's loop: one job at a time from stdin, its outcome to stdout, until end of input."""
    import gc
    import signal
    import sys

    from . import wheelfile
    from .framing import dumps_or, note_origin, recv, send_pickled

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle (it kills us)
    # One thread: the worker is the parallelism (wheels this small gain little from threads, and
    # each thread's malloc arena would add to the worker's memory).
    wheelfile.EXTRACT_THREADS = 1
    gc.disable()  # extraction makes no reference cycles worth collecting; the process is short-lived
    out_fd = os.dup(1)
    os.dup2(2, 1)  # anything printed by accident goes to stderr, never into the replies
    sys.stdout = sys.stderr

    while True:
        job = recv(0)
        if job is None:
            # End of input: the parent is done (or gone, maybe mid-request). Every reply is
            # written and nothing is left to clean up, so the interpreter's teardown is skipped:
            # the parent waits for this exit at the end of its unpacking (~5-10 ms less).
            sys.stderr.flush()
            os._exit(0)
        try:
            make_entry(*job)
            reply: tuple[bool, Any] = (True, None)
        except BaseException as e:  # handed to the parent, which raises it as its own
            reply = (False, note_origin(e, "the extraction worker"))

        def fallback(err: BaseException | None = reply[1], label: str = job[6]) -> tuple[bool, Any]:
            from .errors import InstallError

            return False, InstallError(f"{label}: unpacking failed: {type(err).__name__}: {err}")

        send_pickled(out_fd, dumps_or(reply, fallback))
