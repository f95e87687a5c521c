"""An sdist whose PKG-INFO cannot be trusted (Metadata-Version older than 2.2, as most older
sdists on an index): its metadata comes from its build backend, run in the sandbox at lock time,
as pip and uv do. A real index on 127.0.0.1, real sdists built by an in-tree backend."""

from __future__ import annotations

import pytest

from tests.e2e.test_path_deps import lock_of, run_py, write_app, write_lib
from tests.e2e.test_sync import installed
from tests.e2e.test_url_deps import _sdist_of


def _sleepy_sdists(dists, tmp_path, body: str, *, metadata_version: str = "1.2") -> None:
    """sdists slowone (needs alpha) and slowtwo (needs beta), whose in-tree backend runs `body`
    first in build_wheel (the hook a metadata read falls back to without
    prepare_metadata_for_build_wheel); Metadata-Version 1.2: the lock asks the backend."""
    dists.wheel("alpha", "1.0")
    dists.wheel("beta", "2.0")
    for name, dep in (("slowone", "alpha"), ("slowtwo", "beta")):
        lib = write_lib(tmp_path / f"src-{name}", name, "1.0", deps=[dep], value=name)
        (lib / "_backend.py").write_text((lib / "_backend.py").read_text().replace(
            "def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):\n",
            "def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):\n"
            f"    {body}\n"))
        _sdist_of(lib, name, "1.0", [dep] if metadata_version >= "2.2" else [], dists.dir,
                  metadata_version=metadata_version)


def _hooks_seen(hook: bytes):
    """A watcher of this machine's processes running `hook` through pyproject_hooks (sandboxed
    builds are seen from the host): start() it, stop() it, then .spans: (first, last) seen per pid."""
    import os
    import threading
    import time

    class Watch:
        def __init__(self) -> None:
            self.spans: dict[int, tuple[float, float]] = {}
            self._done = threading.Event()
            self._thread = threading.Thread(target=self._run, daemon=True)

        def _run(self) -> None:
            while not self._done.is_set():
                now = time.monotonic()
                for pid in os.listdir("/proc"):
                    if not pid.isdigit():
                        continue
                    try:
                        with open(f"/proc/{pid}/cmdline", "rb") as f:
                            cmd = f.read()
                    except OSError:
                        continue
                    if b"_in_process" in cmd and hook in cmd.split(b"\0"):
                        self.spans[int(pid)] = (self.spans.get(int(pid), (now, now))[0], now)
                time.sleep(0.02)

        def start(self) -> None:
            self._thread.start()

        def stop(self) -> None:
            self._done.set()
            self._thread.join()

        def overlap(self) -> float:
            spans = sorted(self.spans.values())
            assert len(spans) >= 2, spans
            return min(spans[0][1], spans[1][1]) - max(spans[0][0], spans[1][0])

    return Watch()


def test_an_sdist_with_old_metadata_is_locked_from_its_backend_and_cached(pypm, dists, index_server, tmp_path):
    dists.wheel("alpha", "1.0")
    lib = write_lib(tmp_path / "src-old", "oldlib", "1.5", deps=["alpha>=1"], value="built from an old sdist")
    # a backend that warns (as setuptools does about old sdists): for the package's authors, kept in
    # the build's log, not printed on pypm's stderr
    (lib / "_backend.py").write_text((lib / "_backend.py").read_text().replace(
        "def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):\n",
        "def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):\n"
        "    import warnings; warnings.warn('deprecated: noise for the authors')\n"))
    # PKG-INFO 2.1, and it does not even list the dependency: only the backend's metadata does
    _sdist_of(lib, "oldlib", "1.5", [], dists.dir, metadata_version="2.1")
    index = index_server()
    app = write_app(tmp_path / "app", index.url, ["oldlib"])
    r = pypm("sync", cwd=app)
    assert r.returncode == 0, r.stderr
    assert "Reading the metadata of oldlib==1.5 (oldlib-1.5.tar.gz) from its build backend" in r.stderr
    assert "noise for the authors" not in r.stderr, r.stderr
    entry = lock_of(app)["oldlib"]
    assert entry.sdist is not None and [d.name for d in entry.dependencies] == ["alpha"]
    assert installed(app / ".venv") == {"oldlib": "1.5", "alpha": "1.0"}
    r = run_py(pypm, app, "import oldlib; print(oldlib.VALUE)")
    assert (r.returncode, r.stdout) == (0, "built from an old sdist\n"), r.stderr
    # locked again from scratch: the metadata is in the cache, the backend is not asked again
    (app / "pypm.lock").unlink()
    r = pypm("lock", cwd=app)
    assert r.returncode == 0 and "Reading the metadata" not in r.stderr, r.stderr
    assert [d.name for d in lock_of(app)["oldlib"].dependencies] == ["alpha"]
    # --no-build: nothing is built, so the sdist cannot be locked (the error says why)
    (app / "pypm.lock").unlink()
    r = pypm("lock", "--no-build", "--refresh", cwd=app)
    assert r.returncode != 0 and "Traceback" not in r.stderr, r.stderr


def test_a_backend_that_fails_to_give_metadata_is_a_clear_error(pypm, dists, index_server, tmp_path):
    dists.wheel("alpha", "1.0")
    lib = write_lib(tmp_path / "src-bad", "badlib", "2.0", deps=["alpha"])
    (lib / "_backend.py").write_text((lib / "_backend.py").read_text()
                                     + "\n\ndef prepare_metadata_for_build_wheel(d, config_settings=None):\n"
                                       "    raise SystemExit('no metadata for you')\n")
    _sdist_of(lib, "badlib", "2.0", [], dists.dir, metadata_version="1.2")
    index = index_server()
    app = write_app(tmp_path / "app", index.url, ["badlib"])
    r = pypm("lock", cwd=app)
    assert r.returncode != 0 and "Traceback" not in r.stderr.split("its output ends with")[0], r.stderr
    assert "building the metadata of badlib==2.0 (badlib-2.0.tar.gz) failed in the sandbox" in r.stderr, r.stderr
    assert "no metadata for you" in r.stderr and not (app / "pypm.lock").exists()


@pytest.mark.live
def test_live_an_old_sdist_only_release_is_locked_built_and_run(pypm, tmp_path):
    # docopt 0.6.2 exists only as an sdist whose PKG-INFO predates Metadata 2.2: its dependencies
    # (none) come from setuptools, run in the sandbox, with setuptools from the default index.
    import shutil

    app = tmp_path / "app"
    app.mkdir()
    (app / "pyproject.toml").write_text('[project]\nname = "app"\nversion = "1"\nrequires-python = ">=3.11"\n'
                                        'dependencies = ["docopt==0.6.2"]\n')
    r = pypm("sync", cwd=app, timeout=900)
    assert r.returncode == 0, r.stderr
    assert "Reading the metadata of docopt==0.6.2 (docopt-0.6.2.tar.gz) from its build backend" in r.stderr
    assert "BuildBackendWarning" not in r.stderr
    entry = lock_of(app)["docopt"]
    assert entry.sdist is not None and not entry.wheels and not entry.dependencies
    assert [d.name for d in entry.build_dependencies] == ["setuptools"]
    r = run_py(pypm, app, "import docopt; print(docopt.__version__)")
    assert (r.returncode, r.stdout) == (0, "0.6.2\n"), r.stderr
    shutil.rmtree(app)  # a lock against the default index never outlives the test


def test_the_look_ahead_reads_several_old_sdists_at_once(pypm, dists, index_server, tmp_path):
    """Two old sdists a project needs directly: the resolver's look-ahead starts both backends
    together (pypm.locking's metadata builds), seen from the host as two metadata hooks running
    at the same moment; each is built once, the lock is what one at a time gives, and no build
    leaves its temporary tree behind."""
    _sleepy_sdists(dists, tmp_path, "import time; time.sleep(2)")
    index = index_server()
    app = write_app(tmp_path / "app", index.url, ["slowone", "slowtwo"])
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    watch = _hooks_seen(b"prepare_metadata_for_build_wheel")
    watch.start()
    try:
        r = pypm("lock", cwd=app, env={"TMPDIR": str(scratch)})
    finally:
        watch.stop()
    assert r.returncode == 0, r.stderr
    for name in ("slowone", "slowtwo"):
        assert r.stderr.count(f"Reading the metadata of {name}==1.0") == 1, r.stderr
    lock = lock_of(app)
    assert [d.name for d in lock["slowone"].dependencies] == ["alpha"]
    assert [d.name for d in lock["slowtwo"].dependencies] == ["beta"]
    assert watch.overlap() > 0.5, f"the two metadata builds did not run together: {watch.spans}"
    assert list(scratch.iterdir()) == [], list(scratch.iterdir())


def test_sync_builds_two_sdists_at_once(pypm, dists, index_server, tmp_path):
    """A sync builds the wheels of sdists two at a time (on two cores), each in its sandbox."""
    _sleepy_sdists(dists, tmp_path, "import time; time.sleep(2)", metadata_version="2.2")
    index = index_server()
    app = write_app(tmp_path / "app", index.url, ["slowone", "slowtwo"])
    r = pypm("lock", cwd=app)
    assert r.returncode == 0 and "Reading the metadata" not in r.stderr, r.stderr  # (static metadata)
    watch = _hooks_seen(b"build_wheel")
    watch.start()
    try:
        r = pypm("sync", cwd=app)
    finally:
        watch.stop()
    assert r.returncode == 0, r.stderr
    assert installed(app / ".venv") == {"slowone": "1.0", "slowtwo": "1.0", "alpha": "1.0", "beta": "2.0"}
    r = run_py(pypm, app, "import slowone, slowtwo; print(slowone.VALUE, slowtwo.VALUE)")
    assert (r.returncode, r.stdout) == (0, "slowone slowtwo\n"), r.stderr
    assert watch.overlap() > 0.5, f"the two builds did not run together: {watch.spans}"


@pytest.mark.parametrize("command", ["lock", "sync"])
@pytest.mark.parametrize("how", ["terminal", "pypm-alone", "sigterm"])
def test_ctrl_c_stops_running_builds_at_once(pypm, dists, index_server, tmp_path, how, command):
    """Ctrl-C while two backends run (a lock's metadata reads, a sync's wheel builds; they would
    take minutes): exit 130 at once, no lock or venv, no temporary tree and no backend left
    running. From a terminal the SIGINT reaches the whole process group; sent to pypm alone,
    pypm interrupts its builds' sandboxes itself."""
    import os
    import signal
    import time

    marker = f"sleepy-{how}"
    _sleepy_sdists(dists, tmp_path, f"import time; open(os.path.join(wheel_directory, '{marker}'), 'w').close(); "
                   "time.sleep(120)", metadata_version="1.2" if command == "lock" else "2.2")
    index = index_server()
    app = write_app(tmp_path / "app", index.url, ["slowone", "slowtwo"])
    scratch = tmp_path / "tmp"
    scratch.mkdir()

    def running() -> int:  # backends past their marker (the tree changes while it is walked)
        try:
            return len(list(scratch.rglob(marker)))
        except OSError:
            return 0

    if command == "sync":
        assert pypm("lock", cwd=app).returncode == 0
    proc = pypm.popen(command, cwd=app, env={"TMPDIR": str(scratch)}, new_session=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and running() < 2 and proc.poll() is None:
        time.sleep(0.05)
    assert proc.poll() is None and running() == 2, "both backends should be running"
    started = time.monotonic()
    if how == "terminal":
        os.killpg(proc.pid, signal.SIGINT)
    else:  # (SIGTERM: a CI runner's timeout, `kill`; cleaned up as Ctrl-C is, exit 143)
        proc.send_signal(signal.SIGTERM if how == "sigterm" else signal.SIGINT)
    _, err = proc.communicate(timeout=100)
    took = time.monotonic() - started
    if how == "sigterm":
        assert proc.returncode == 143 and "terminated" in err, err
    else:
        assert proc.returncode == 130 and "interrupted" in err, err
    assert took < 30, f"pypm waited {took:.0f} s for the backends instead of stopping them"
    assert not (app / ("pypm.lock" if command == "lock" else ".venv")).exists()
    assert list(scratch.iterdir()) == [], list(scratch.rglob("*"))


def test_builds_at_once_share_a_build_dependency_from_the_index(pypm, dists, index_server, tmp_path):
    """Two old sdists whose backend is a package on the index (not in their tree): the two builds
    that run at once (the lock's metadata reads, then the sync's wheels) each install it into a
    build environment of their own from the one cache entry; both succeed, and the build
    dependency is locked for each."""
    from tests.e2e.test_path_deps import BACKEND

    dists.wheel("alpha", "1.0")
    dists.wheel("tinybackend", "1.0", modules={"tinybackend/__init__.py": BACKEND})
    for name in ("oldone", "oldtwo"):
        lib = write_lib(tmp_path / f"src-{name}", name, "1.0", deps=["alpha"], value=name)
        (lib / "_backend.py").unlink()
        text = (lib / "pyproject.toml").read_text()
        (lib / "pyproject.toml").write_text(text.replace(
            'requires = []\nbuild-backend = "_backend"\nbackend-path = ["."]', 'requires = ["tinybackend"]\n'
            'build-backend = "tinybackend"'))
        _sdist_of(lib, name, "1.0", [], dists.dir, metadata_version="1.2")
    index = index_server()
    app = write_app(tmp_path / "app", index.url, ["oldone", "oldtwo"])
    r = pypm("sync", cwd=app)
    assert r.returncode == 0, r.stderr
    assert r.stderr.count("Reading the metadata of old") == 2, r.stderr
    lock = lock_of(app)
    for name in ("oldone", "oldtwo"):
        assert [d.name for d in lock[name].dependencies] == ["alpha"]
        assert [d.name for d in lock[name].build_dependencies] == ["tinybackend"]
    assert installed(app / ".venv") == {"oldone": "1.0", "oldtwo": "1.0", "alpha": "1.0"}
    r = run_py(pypm, app, "import oldone, oldtwo; print(oldone.VALUE, oldtwo.VALUE)")
    assert (r.returncode, r.stdout) == (0, "oldone oldtwo\n"), r.stderr
