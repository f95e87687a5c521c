"""pypm.extractor: store entries made in a worker process are the ones made in-process; the
worker's refusals arrive as pypm's own errors; a dead worker, a Ctrl-C and a killed parent are
handled. Real child processes throughout."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import psutil
import pytest

from pypm import extractor
from pypm.errors import InstallError, IntegrityError, UsageError
from pypm.extractor import IN_PROCESS_MIN_BYTES, Workers, make_entry, worker_count
from pypm.wheeltree import manifest_path, tree_path
from tests.support.dists import build_wheel, sha256_file


def _job(cache: Path, wheel: Path, tag: str = "") -> tuple[str, ...]:
    sha = "0" * 64 if wheel.is_fifo() else sha256_file(wheel)
    fan = cache / "unpacked" / sha[:2]
    fan.mkdir(parents=True, exist_ok=True)
    return (str(cache), str(wheel), str(fan / f".tmp-{sha}-{tag}"), str(fan / sha), wheel.name, sha, wheel.name)


def _listing(d: Path) -> dict[str, bytes]:
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


@pytest.fixture
def no_parent_extraction(monkeypatch):
    """The parent's make_entry fails: what succeeds was done by a worker (its own, real module)."""
    calls: list[tuple[str, ...]] = []

    def refuse(*args: str) -> None:
        calls.append(args)
        raise AssertionError("extracted in the parent process")

    monkeypatch.setattr(extractor, "make_entry", refuse)
    return calls


def test_a_worker_makes_the_entry_the_parent_would(tmp_path, no_parent_extraction) -> None:
    w = build_wheel(tmp_path, "alpha", "1.0", modules={"alpha/__init__.py": "A = 1\n", "alpha/sub/x.py": "X = 2\n"},
                    data={"scripts/tool": b"#!python\nprint('tool')\n"},
                    entry_points={"console_scripts": {"al": "alpha:main"}})
    job = _job(tmp_path / "c1", w)
    with Workers(1) as workers:
        assert workers.usable
        workers.make_entry(*job)
    assert no_parent_extraction == []
    # the same work in this process, into another cache
    ref = _job(tmp_path / "c2", w)
    make_entry(*ref)  # imported before the fixture replaced the module's attribute: the real one
    a, b = Path(job[2]), Path(ref[2])
    assert _listing(a) == _listing(b) and _listing(a)
    ma, mb = manifest_path(Path(job[3])), manifest_path(Path(ref[3]))
    assert ma is not None and mb is not None
    assert json.loads(ma.read_bytes()) == json.loads(mb.read_bytes())
    assert tree_path(tmp_path / "c1", job[5]).read_bytes() == tree_path(tmp_path / "c2", ref[5]).read_bytes()


def test_an_entry_outside_the_store_layout_is_refused_before_anything_is_written(tmp_path, monkeypatch) -> None:
    """Where the manifest goes is derived from the entry's path; a path that is not
    <cache>/unpacked/<sha[:2]>/<sha> has no such place, and once made the manifest silently into
    a file named "None" in the current directory."""
    w = build_wheel(tmp_path, "alpha", "1.0")
    cache, sha = tmp_path / "c", sha256_file(w)
    (cache / "unpacked").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    tmp = cache / "unpacked" / f".tmp-{sha}"
    with pytest.raises(ValueError, match="is not a store entry"):
        make_entry(str(cache), str(w), str(tmp), str(cache / "unpacked" / sha), w.name, sha, w.name)
    assert not (tmp_path / "None").exists() and not tmp.exists()


@pytest.mark.parametrize("kind", ["bad-hash", "unsafe-path"])
def test_a_worker_refusal_is_raised_as_the_same_error(tmp_path, no_parent_extraction, kind) -> None:
    if kind == "bad-hash":
        w = build_wheel(tmp_path, "beta", "1.0", bad_record_hash_for="beta/__init__.py")
        expected: type[Exception] = IntegrityError
    else:
        w = build_wheel(tmp_path, "beta", "1.0", unsafe={"../evil.py": b"x = 1\n"})
        expected = InstallError
    job = _job(tmp_path / "c", w)
    with Workers(1) as workers:
        with pytest.raises(expected) as got:
            workers.make_entry(*job)
        assert workers.usable, "a refused wheel must not retire the worker"
    # what extract_verified says in-process, hint included
    with pytest.raises(expected) as ref:
        make_entry(*_job(tmp_path / "c2", w))
    assert str(got.value) == str(ref.value) and getattr(got.value, "hint") == getattr(ref.value, "hint")
    assert no_parent_extraction == []


def test_a_bug_in_the_worker_comes_back_with_the_worker_s_traceback(tmp_path, no_parent_extraction, capsys,
                                                                     monkeypatch) -> None:
    """An exception that is not pypm's own (a bug) is raised in the parent with a note holding the
    worker's traceback, which a pickled exception lacks; `PYPM_TRACEBACK=1` prints it with the
    parent's, as --verbose does, and never for pypm's own errors."""
    from pypm.errors import report_failure

    w = build_wheel(tmp_path, "alpha", "1.0")
    cache, sha = tmp_path / "c", sha256_file(w)
    (cache / "unpacked").mkdir(parents=True)
    job = (str(cache), str(w), str(cache / "unpacked" / f".tmp-{sha}"), str(cache / "elsewhere" / sha),
           w.name, sha, w.name)  # not a store entry's path: make_entry's ValueError
    with Workers(1) as workers:
        with pytest.raises(ValueError, match="is not a store entry") as got:
            workers.make_entry(*job)
    notes = getattr(got.value, "__notes__", [])
    assert len(notes) == 1 and notes[0].startswith("in the extraction worker:\nTraceback"), notes
    assert "in make_entry" in notes[0] and "ValueError: " in notes[0], notes[0]
    monkeypatch.delenv("PYPM_TRACEBACK", raising=False)
    assert report_failure(got.value) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.startswith("internal error: ValueError: "), err
    monkeypatch.setenv("PYPM_TRACEBACK", "1")
    assert report_failure(got.value) == 1
    err = capsys.readouterr().err
    assert "in the extraction worker:" in err and "internal error: ValueError: " in err, err
    assert report_failure(UsageError("bad flag", hint="fix it")) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.startswith("error: bad flag"), err


def _occupy(workers: Workers, cache: Path, tmp_path: Path, n: int) -> tuple[list[threading.Thread], list[Path]]:
    """Start `n` jobs on FIFOs that nobody writes yet: each holds a place in the worker (the first
    blocks it in open(); the next waits in its pipe). Returns the threads and the FIFOs."""
    threads, fifos = [], []
    for i in range(n):
        fifo = tmp_path / f"slow{i}.whl"
        os.mkfifo(fifo)
        t = threading.Thread(target=lambda f=fifo, tag=f"s{i}": _swallow(workers.make_entry, *_job(cache, f, tag)))
        t.start()
        deadline = time.monotonic() + 10
        while len(workers._idle) > extractor.DEPTH - i - 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        threads.append(t)
        fifos.append(fifo)
    return threads, fifos


def test_all_workers_busy_means_the_caller_extracts_meanwhile(tmp_path) -> None:
    """One worker with every place taken (the job it runs and the next in its pipe): the next
    wheel is extracted by the calling thread, not queued."""
    w = build_wheel(tmp_path, "gamma", "1.0")
    with Workers(1) as workers:
        blocked, _ = _occupy(workers, tmp_path / "c", tmp_path, extractor.DEPTH)
        assert not workers._idle, "the worker never took the first jobs"
        job = _job(tmp_path / "c", w, "b")
        workers.make_entry(*job)  # would hang if it waited for the busy worker
        assert (Path(job[2]) / "gamma" / "__init__.py").is_file()
        workers.close(kill=True)
        for t in blocked:
            t.join(10)
            assert not t.is_alive()


def test_a_worker_holds_its_next_job_and_each_caller_gets_its_own_answer(tmp_path, no_parent_extraction) -> None:
    """While the worker is blocked on one job, a second call is not extracted here but queued in
    the worker's pipe; the replies come back to the callers that sent the jobs: the blocked job's
    failure to the first, the second wheel's success to the second."""
    assert extractor.DEPTH == 2
    fifo = tmp_path / "slow.whl"
    os.mkfifo(fifo)
    w = build_wheel(tmp_path, "zeta", "1.0")
    outcome: dict[str, BaseException | None] = {}
    order: list[str] = []

    def call(label: str, job: tuple[str, ...]) -> None:
        try:
            workers.make_entry(*job)
            outcome[label] = None
        except BaseException as e:  # noqa: BLE001 - recorded for the assertions
            outcome[label] = e
        order.append(label)

    with Workers(1) as workers:
        first = threading.Thread(target=call, args=("first", _job(tmp_path / "c", fifo, "a")))
        first.start()
        while len(workers._idle) == 2:
            time.sleep(0.01)
        job = _job(tmp_path / "c", w, "b")
        second = threading.Thread(target=call, args=("second", job))
        second.start()
        while workers._idle:
            time.sleep(0.01)
        time.sleep(0.3)
        assert order == [] and not Path(job[2]).exists(), "the second job ran before the worker was free"
        with open(fifo, "wb"):  # the blocked job reads end-of-file: not a zip archive
            pass
        first.join(10)
        second.join(10)
        assert workers.usable and len(workers._idle) == 2
    assert order == ["first", "second"]
    assert isinstance(outcome["first"], Exception) and outcome["second"] is None, outcome
    assert (Path(job[2]) / "zeta" / "__init__.py").is_file()
    assert no_parent_extraction == []


def _swallow(fn, *args) -> None:  # noqa: ANN001
    try:
        fn(*args)
    except BaseException:  # noqa: BLE001 - the test looks at the worker, not at this job's outcome
        pass


def test_close_kill_cancels_the_job_in_flight_and_ends_the_worker(tmp_path) -> None:
    from pypm.cache import _Cancelled

    fifo = tmp_path / "slow.whl"
    os.mkfifo(fifo)
    workers = Workers(1)
    proc = workers._all[0].proc
    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            workers.make_entry(*_job(tmp_path / "c", fifo))
            outcome.append(None)
        except BaseException as e:  # noqa: BLE001 - recorded for the assertion
            outcome.append(e)

    t = threading.Thread(target=run)
    t.start()
    time.sleep(0.3)
    workers.close(kill=True)
    t.join(10)
    assert len(outcome) == 1 and isinstance(outcome[0], _Cancelled), outcome
    assert proc.poll() == -signal.SIGKILL
    with pytest.raises(_Cancelled):  # nothing new starts once the sync is being abandoned
        workers.make_entry(*_job(tmp_path / "c", build_wheel(tmp_path, "late", "1.0")))


def test_each_reply_goes_to_its_own_ticket_whoever_asks_first(tmp_path) -> None:
    """Two jobs in the worker's pipe, a refused wheel first and a good one second, and the second
    sender asks for its reply first (a thread can get to the read before an earlier sender): it
    waits for the first reply to be read by its owner and then gets its own. Read in arrival
    order instead, the second caller would get the first job's refusal."""
    bad = build_wheel(tmp_path, "eta", "1.0", bad_record_hash_for="eta/__init__.py")
    good = build_wheel(tmp_path, "theta", "1.0")
    with Workers(1) as workers:
        worker = workers._all[0]
        first = worker._send(_job(tmp_path / "c", bad, "a"))
        second = worker._send(_job(tmp_path / "c", good, "b"))
        got: dict[str, tuple[bool, object]] = {}
        later = threading.Thread(target=lambda: got.__setitem__("second", worker._reply(second)))
        later.start()
        later.join(0.5)
        assert later.is_alive() and "second" not in got, "the second caller read before the first"
        got["first"] = worker._reply(first)
        later.join(10)
        assert not later.is_alive()
    ok_first, err = got["first"]
    ok_second, _ = got["second"]
    assert ok_first is False and isinstance(err, IntegrityError), got
    assert ok_second is True, got


def test_close_kill_cancels_every_job_the_worker_holds(tmp_path) -> None:
    """The job the worker runs and the one waiting in its pipe both end as cancelled (neither
    caller hangs, neither extracts in this process instead), and the worker is killed."""
    from pypm.cache import _Cancelled

    workers = Workers(1)
    proc = workers._all[0].proc
    outcome: list[BaseException | None] = []

    def run(fifo: Path, tag: str) -> None:
        try:
            workers.make_entry(*_job(tmp_path / "c", fifo, tag))
            outcome.append(None)
        except BaseException as e:  # noqa: BLE001 - recorded for the assertion
            outcome.append(e)

    threads = []
    for i in range(extractor.DEPTH):
        fifo = tmp_path / f"slow{i}.whl"
        os.mkfifo(fifo)
        threads.append(threading.Thread(target=run, args=(fifo, f"k{i}")))
        threads[-1].start()
    deadline = time.monotonic() + 10
    while workers._idle and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not workers._idle, "the worker never took both jobs"
    workers.close(kill=True)
    for t in threads:
        t.join(10)
        assert not t.is_alive()
    assert len(outcome) == extractor.DEPTH and all(isinstance(o, _Cancelled) for o in outcome), outcome
    assert proc.poll() == -signal.SIGKILL


def test_a_dead_worker_is_replaced_by_in_process_extraction(tmp_path) -> None:
    notes: list[str] = []
    with Workers(1, debug=notes.append) as workers:
        proc = workers._all[0].proc
        proc.kill()
        proc.wait()
        w = build_wheel(tmp_path, "delta", "1.0")
        job = _job(tmp_path / "c", w)
        Path(job[2]).mkdir()  # as if the worker had died halfway through it
        (Path(job[2]) / "half").write_bytes(b"x")
        workers.make_entry(*job)
        assert not workers.usable
        assert sorted(p.name for p in Path(job[2]).iterdir()) == ["delta", "delta-1.0.dist-info"]
    assert any("extraction worker stopped" in n and "signal 9" in n for n in notes), notes


def test_in_process_extractions_keep_to_their_limit_when_the_worker_is_gone(tmp_path, monkeypatch) -> None:
    # A sync's unpack threads outnumber its cores by one per worker (to keep the worker's pipe
    # fed); with the worker dead, they all extract here, and only `in_process` may at once.
    real = extractor.make_entry
    lock = threading.Lock()
    now, most = [0], [0]

    def counting(*args: str) -> None:
        with lock:
            now[0] += 1
            most[0] = max(most[0], now[0])
        try:
            time.sleep(0.05)  # long enough for the other threads to arrive meanwhile
            real(*args)
        finally:
            with lock:
                now[0] -= 1

    monkeypatch.setattr(extractor, "make_entry", counting)
    wheels = [build_wheel(tmp_path, f"w{i}", "1.0") for i in range(6)]
    with Workers(1, in_process=2) as workers:
        proc = workers._all[0].proc
        proc.kill()
        proc.wait()
        jobs = [_job(tmp_path / "c", w) for w in wheels]
        threads = [threading.Thread(target=workers.make_entry, args=job) for job in jobs[:3]]
        threads += [threading.Thread(target=workers.extract_here, args=job) for job in jobs[3:]]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert all(Path(j[2], "w" + j[4][1], "__init__.py").is_file() for j in jobs)
    assert most[0] == 2, most


def test_no_in_process_extraction_starts_once_the_workers_are_closed(tmp_path) -> None:
    from pypm.cache import _Cancelled

    workers = Workers(0, in_process=1)
    workers.close(kill=True)
    job = _job(tmp_path / "c", build_wheel(tmp_path, "zeta", "1.0"))
    with pytest.raises(_Cancelled):
        workers.extract_here(*job)
    assert not Path(job[2]).exists()


def test_a_worker_that_cannot_start_means_in_process(tmp_path, monkeypatch) -> None:
    notes: list[str] = []
    monkeypatch.setattr(sys, "executable", str(tmp_path / "no-such-python"))
    workers = Workers(1, debug=notes.append)
    assert not workers.usable and notes and "cannot start an extraction worker" in notes[0]
    job = _job(tmp_path / "c", build_wheel(tmp_path, "eps", "1.0"))
    workers.make_entry(*job)
    assert Path(job[2], "eps", "__init__.py").is_file()
    workers.close()


def test_workers_end_when_the_parent_is_killed(tmp_path) -> None:
    """kill -9 of pypm: its worker reads end-of-file and exits by itself."""
    script = textwrap.dedent("""
        import sys, time
        from pypm.extractor import Workers
        w = Workers(1)
        print(w._all[0].proc.pid, flush=True)
        time.sleep(60)
    """)
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        worker = psutil.Process(int(parent.stdout.readline()))  # type: ignore[union-attr]
        assert "pypm.extractor" in " ".join(worker.cmdline())
        parent.kill()
        parent.wait()
        worker.wait(timeout=10)  # raises psutil.TimeoutExpired if it lingers
    finally:
        parent.kill()


def test_worker_count() -> None:
    small, big = 300_000, IN_PROCESS_MIN_BYTES
    assert worker_count([small] * 50 + [big]) == 1  # the web stack's shape: most bytes in small wheels
    assert worker_count([small] * 10 + [20 * big]) == 0  # torch's: one wheel is nearly everything
    assert worker_count([small, 2 * small, 3 * small, small]) == 1
    assert worker_count([small]) == 0 and worker_count([]) == 0  # one wheel is not worth a process
    assert worker_count([big, big]) == 0


def test_worker_count_setting(monkeypatch) -> None:
    monkeypatch.setenv("PYPM_EXTRACT_WORKERS", "0")
    assert worker_count([100] * 10) == 0
    monkeypatch.setenv("PYPM_EXTRACT_WORKERS", "3")
    assert worker_count([100] * 10) == 3 and worker_count([100, 100]) == 2 and worker_count([100]) == 0
    for bad in ("two", "-1"):
        monkeypatch.setenv("PYPM_EXTRACT_WORKERS", bad)
        with pytest.raises(UsageError) as e:
            worker_count([100] * 10)
        assert "PYPM_EXTRACT_WORKERS" in str(e.value) and e.value.hint


def test_the_worker_does_not_import_from_the_current_directory(tmp_path, monkeypatch) -> None:
    """`python -m pypm` puts the current directory (the project) first on sys.path; the worker
    leaves it out, so a project cannot plant a module (here `zipfile.py`) that the worker imports."""
    proj = tmp_path / "proj"
    proj.mkdir()
    marker = tmp_path / "planted-ran"
    (proj / "zipfile.py").write_text(f"open({str(marker)!r}, 'w').close()\nraise SystemExit(7)\n")
    monkeypatch.chdir(proj)
    monkeypatch.setattr(sys, "path", [str(proj), *sys.path])
    w = build_wheel(tmp_path, "zeta", "1.0")
    notes: list[str] = []
    with Workers(1, debug=notes.append) as workers:
        job = _job(tmp_path / "c", w)
        workers.make_entry(*job)
        assert workers.usable, notes  # the worker did the job (it would have died importing the plant)
    assert not marker.exists() and Path(job[2], "zeta", "__init__.py").is_file()
