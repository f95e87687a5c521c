"""End-to-end tests of sandboxed source builds (issue 5): `pypm sync` of sdists and `pypm build`.

Real sdists (tests/support/dists.py) served by a real index on 127.0.0.1, real setuptools
from the canary fixtures, gcc, and the real namespace sandbox.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import pytest

from tests.e2e.test_sync import assert_venv_exact, installed, site_packages, write_lock, write_project

SDIST_EPOCH = 1577836800  # tests/support/dists.py stamps every sdist member with this mtime


def setuptools_wheel() -> Path:
    from tests.support.fixtures import canary_wheels_dir

    d = canary_wheels_dir()
    found = sorted(d.glob("setuptools-*-py3-none-any.whl")) if d else []
    if not found:
        pytest.skip("no setuptools wheel among the canary fixtures: run `python3 scripts/fetch_fixtures.py` once")
    return found[-1]


def built_wheels(cache: Path, name: str) -> list[Path]:
    """Wheels of `name` that builds stored in the cache (content-addressed under wheels/)."""
    return sorted(cache.glob(f"wheels/*/*/{name}-*.whl"))


def snapshot(root: Path, skip: tuple[Path, ...] = ()) -> dict[str, tuple[int, int, str]]:
    """{path: (mode, size, sha256)} of everything under root (symlinks not followed), minus `skip`."""
    out: dict[str, tuple[int, int, str]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        d = Path(dirpath)
        dirnames[:] = [n for n in dirnames if d / n not in skip]
        for n in dirnames + filenames:
            p = d / n
            if p in skip:
                continue
            st = p.lstat()
            digest = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() and not p.is_symlink() else ""
            out[str(p)] = (st.st_mode, st.st_size if digest else 0, digest)
    return out


# A wheel writer for in-tree test backends (stdlib only: they run in an empty build env).
MINI_WHEEL = r'''
import base64, hashlib, os, zipfile


def write_wheel(directory, name, files):
    def h(data):
        return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    di = name + "-1.0.dist-info"
    files = dict(files)
    files[di + "/METADATA"] = ("Metadata-Version: 2.1\nName: " + name + "\nVersion: 1.0\n").encode()
    files[di + "/WHEEL"] = b"Wheel-Version: 1.0\nGenerator: t\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    record = "".join(p + "," + h(d) + "," + str(len(d)) + "\n" for p, d in files.items()) + di + "/RECORD,,\n"
    filename = name + "-1.0-py3-none-any.whl"
    with zipfile.ZipFile(os.path.join(directory, filename), "w") as z:
        for p, d in files.items():
            z.writestr(p, d)
        z.writestr(di + "/RECORD", record)
    return filename
'''


# --------------------------------------------------------------------------- builds that work

def test_pure_and_c_sdists_build_in_the_sandbox_reproducibly(pypm, dists, index_server, tmp_path) -> None:
    st = setuptools_wheel()
    pure = dists.sdist("purelib", "1.0")
    cext = dists.sdist("cext", "1.0", c_extension=True)
    server = index_server([dists.dir, st])
    wheels: dict[str, list[Path]] = {}
    for run in ("one", "two"):  # two projects in two places, two caches: the same bytes
        project = write_project(tmp_path / run / "proj", deps=["purelib", "cext"])
        write_lock(project, server, [st], sdists=[pure, cext], main=["purelib", "cext"],
                   build_edges={"purelib": ["setuptools"], "cext": ["setuptools"]})
        cache = tmp_path / run / "cache"
        r = pypm("sync", "--frozen", cwd=project, env={"PYPM_CACHE_DIR": str(cache)}, timeout=300)
        assert r.returncode == 0, r.stderr
        assert_venv_exact(project / ".venv", {"purelib": "1.0", "cext": "1.0"})  # setuptools only in the build env
        out = subprocess.run([str(project / ".venv" / "bin" / "python"), "-c",
                              "import purelib; from cext._speedups import add; print(purelib.__version__, add(2, 3))"],
                             capture_output=True, text=True)
        assert out.stdout.split() == ["1.0", "5"], out.stderr
        for name in ("purelib", "cext"):
            [w] = built_wheels(cache, name)
            wheels.setdefault(name, []).append(w)
    for name, (a, b) in wheels.items():
        assert a.name == b.name
        assert a.read_bytes() == b.read_bytes(), f"{name}: two builds of one sdist differ"
    # SOURCE_DATE_EPOCH came from the sdist: every member of the wheel carries its date
    with zipfile.ZipFile(wheels["cext"][0]) as zf:
        dates = {i.date_time for i in zf.infolist()}
        assert dates == {time.gmtime(SDIST_EPOCH)[:6]}, dates
        assert any(n.endswith(".so") for n in zf.namelist())


def test_second_sync_never_rebuilds(pypm, dists, index_server, tmp_path) -> None:
    st = setuptools_wheel()
    sd = dists.sdist("purelib", "1.0")
    server = index_server([dists.dir, st])
    project = write_project(tmp_path / "p", deps=["purelib"])
    write_lock(project, server, [st], sdists=[sd], main=["purelib"], build_edges={"purelib": ["setuptools"]})
    pypm("sync", "--frozen", cwd=project, check=True)
    # No build can happen now: its build dependency is gone from the cache and the index is down.
    for w in pypm.cache_dir.glob("wheels/*/*/setuptools-*.whl"):
        w.unlink()
    for d in pypm.cache_dir.glob("unpacked/*/*"):
        if any(d.glob("setuptools-*.dist-info")):
            subprocess.run(["rm", "-rf", str(d)], check=True)
    server.stop()
    subprocess.run(["rm", "-rf", str(project / ".venv")], check=True)
    r = pypm("-v", "sync", "--frozen", "--offline", cwd=project)
    assert r.returncode == 0, r.stderr
    assert "using the wheel built earlier for purelib==1.0" in r.stderr, r.stderr
    assert_venv_exact(project / ".venv", {"purelib": "1.0"})


# --------------------------------------------------------------------------- a hostile sdist

HOSTILE_BACKEND = r'''
"""A build backend that tries to get out of its sandbox, records what happened, and builds."""
import base64, hashlib, json, os, socket, subprocess, sys, zipfile

SECRET, HOME, PORT, TOKEN, PROJECT = {secret!r}, {home!r}, {port}, {token!r}, {project!r}


def attempt(fn):
    try:
        return "succeeded: " + repr(fn())[:200]
    except BaseException as e:
        return "failed: " + type(e).__name__ + ": " + str(e)[:200]


def _read_secret():
    with open(SECRET) as f:
        return f.read()


def _write(path):
    def go():
        with open(path, "w") as f:
            f.write("pwned")
        return path
    return go


def _connect():
    s = socket.create_connection(("127.0.0.1", PORT), timeout=3)
    s.sendall(b"pwned")
    s.close()
    return "connected"


def _spawn():
    # Double fork into a new session: it would outlive a plain subprocess-based build.
    code = "import os, sys, time; os.setsid(); time.sleep(30)"
    p = subprocess.Popen([sys.executable, "-c", code, TOKEN], start_new_session=True,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return p.pid


def _poison_build_env():
    import buildhelper
    with open(buildhelper.__file__, "a") as f:
        f.write("\nPOISONED = True\n")
    return buildhelper.__file__


def _h(data):
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    results = {{
        "read-secret": attempt(_read_secret),
        "write-home": attempt(_write(os.path.join(HOME, "pwned-home"))),
        "write-project": attempt(_write(os.path.join(PROJECT, "pwned-project"))),
        "connect": attempt(_connect),
        "spawn": attempt(_spawn),
        "poison-build-env": attempt(_poison_build_env),
        "env": sorted(os.environ),
        "uid": os.getuid(),
        "cwd": os.getcwd(),
    }}
    files = {{"hostile/__init__.py": b"", "hostile/results.json": json.dumps(results).encode()}}
    di = "hostile-1.0.dist-info"
    files[di + "/METADATA"] = b"Metadata-Version: 2.1\nName: hostile\nVersion: 1.0\n"
    files[di + "/WHEEL"] = b"Wheel-Version: 1.0\nGenerator: t\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    record = "".join(p + "," + _h(d) + "," + str(len(d)) + "\n" for p, d in files.items()) + di + "/RECORD,,\n"
    name = "hostile-1.0-py3-none-any.whl"
    with zipfile.ZipFile(os.path.join(wheel_directory, name), "w") as z:
        for p, d in files.items():
            z.writestr(p, d)
        z.writestr(di + "/RECORD", record)
    print("hostile build done")
    return name
'''


def _pids_with(token: str) -> list[int]:
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if token.encode() in (d / "cmdline").read_bytes():
                    out.append(int(d.name))
            except OSError:
                pass
    return out


def test_hostile_sdist_is_contained(pypm, dists, index_server, tmp_path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("TOPSECRET-7f3a\n")
    project = tmp_path / "p"
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(5)
    listener.settimeout(0.2)
    accepted: list[bytes] = []
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                continue
            accepted.append(conn.recv(100))
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    token = f"pypm-hostile-{os.getpid()}-{time.monotonic_ns()}"
    backend = HOSTILE_BACKEND.format(secret=str(secret), home=str(pypm.home), port=listener.getsockname()[1],
                                     token=token, project=str(project))
    sd = dists.sdist("hostile", "1.0", build_requires=(), extra_files={
        "pyproject.toml": '[build-system]\nrequires = ["buildhelper"]\nbuild-backend = "_backend"\n'
                          'backend-path = ["."]\n',
        "_backend.py": backend,
    })
    helper = dists.wheel("buildhelper", "1.0", modules={"buildhelper/__init__.py": "X = 1\n"})
    server = index_server()
    write_project(project, deps=["hostile"])
    write_lock(project, server, [helper], sdists=[sd], main=["hostile"], build_edges={"hostile": ["buildhelper"]})
    # Warm the cache with the build dependency so its unpacked tree can be checked before and after.
    before = snapshot(tmp_path, skip=(project / ".venv", pypm.cache_dir, tmp_path / "dists"))
    try:
        r = pypm("sync", "--frozen", cwd=project, timeout=120)
        alive = _pids_with(token)
    finally:
        stop.set()
        thread.join()
        listener.close()
    assert r.returncode == 0, r.stderr  # the build's own result: it built, and said so
    results = json.loads((site_packages(project / ".venv") / "hostile" / "results.json").read_text())
    for attempt in ("read-secret", "write-home", "write-project", "connect", "poison-build-env"):
        assert results[attempt].startswith("failed: "), (attempt, results[attempt])
    assert "TOPSECRET" not in json.dumps(results)
    # the spawned process ran, and did not outlive the build (the PID namespace died with it)
    assert results["spawn"].startswith("succeeded: "), results["spawn"]
    assert alive == [], f"processes of the build outlived it: {alive}"
    assert accepted == [], accepted
    # a clean environment: nothing of the host's (the test's HOME, PATH entries, PYPM_*) leaked in
    assert "PYPM_CACHE_DIR" not in results["env"] and "SOURCE_DATE_EPOCH" in results["env"]
    assert results["cwd"] == "/build/src/hostile-1.0"
    # checked from outside: the home, the project (but .venv), the secret are as they were
    after = snapshot(tmp_path, skip=(project / ".venv", pypm.cache_dir, tmp_path / "dists"))
    assert after == before
    for p in pypm.cache_dir.glob("unpacked/*/*/buildhelper/__init__.py"):
        assert p.read_text() == "X = 1\n", "the build changed the cache through its build env"
    assert installed(project / ".venv") == {"hostile": "1.0"}


# --------------------------------------------------------------------------- failures

def test_build_failure_shows_output_and_name_and_leaves_the_venv(pypm, dists, index_server, tmp_path) -> None:
    good = dists.wheel("alpha", "1.0")
    bad = dists.sdist("broken", "1.0", build_requires=(), extra_files={
        "pyproject.toml": '[build-system]\nrequires = []\nbuild-backend = "_backend"\nbackend-path = ["."]\n',
        "_backend.py": "import sys\n\ndef build_wheel(d, c=None, m=None):\n"
                       "    print('checking for the frobnicator... not found', file=sys.stderr)\n"
                       "    raise SystemExit(3)\n",
    })
    server = index_server()
    project = write_project(tmp_path / "p", deps=["alpha"])
    write_lock(project, server, [good], main=["alpha"])
    pypm("sync", "--frozen", cwd=project, check=True)
    venv_before = snapshot(project / ".venv")
    write_project(project, deps=["alpha", "broken"])
    write_lock(project, server, [good], sdists=[bad], main=["alpha", "broken"])
    r = pypm("sync", "--frozen", cwd=project)
    assert r.returncode == 10, r.stderr
    assert "broken==1.0" in r.stderr and "checking for the frobnicator... not found" in r.stderr, r.stderr
    assert "exited with status 3" in r.stderr and "Traceback" not in r.stderr.split("error:")[0]
    assert snapshot(project / ".venv") == venv_before


def test_build_limits_hold_for_the_backend(pypm, dists, index_server, tmp_path) -> None:
    """`[tool.pypm.build] limits`: the backend of an sdist runs with them (its failure output shows them)."""
    limited = dists.sdist("limited", "1.0", build_requires=(), extra_files={
        "pyproject.toml": '[build-system]\nrequires = []\nbuild-backend = "_backend"\nbackend-path = ["."]\n',
        "_backend.py": "import os, resource, sys\n\ndef build_wheel(d, c=None, m=None):\n"
                       "    st = os.statvfs('/tmp')\n"
                       "    print('limits', resource.getrlimit(resource.RLIMIT_NOFILE), st.f_blocks * st.f_frsize,"
                       " file=sys.stderr)\n"
                       "    raise SystemExit(3)\n",
    })
    server = index_server()
    project = write_project(tmp_path / "p", deps=["limited"],
                            tool='\n[tool.pypm.build]\nlimits = { open-files = 64, tmp-size = "16M" }\n')
    write_lock(project, server, [], sdists=[limited], main=["limited"])
    r = pypm("sync", "--frozen", cwd=project)
    assert r.returncode == 10 and f"limits (64, 64) {16 << 20}" in r.stderr, r.stderr
    path = project / "pyproject.toml"
    path.write_text(path.read_text().replace("open-files = 64", "open-files = 0"))
    r = pypm("sync", "--frozen", cwd=project)
    assert r.returncode != 0 and "`tool.pypm.build.limits.open-files` 0 is below 1" in r.stderr, r.stderr


def test_missing_build_dependency_hash_is_refused(pypm, dists, index_server, tmp_path) -> None:
    helper = dists.wheel("buildhelper", "1.0")
    sd = dists.sdist("needsbuild", "1.0", build_requires=("buildhelper",))
    server = index_server()
    project = write_project(tmp_path / "p", deps=["needsbuild"])
    write_lock(project, server, [helper], sdists=[sd], main=["needsbuild"],
               build_edges={"needsbuild": ["buildhelper"]}, sha={"buildhelper": ""})
    r = pypm("sync", "--frozen", cwd=project)
    assert r.returncode == 3, r.stderr
    assert "buildhelper==1.0" in r.stderr and "pypm lock --refresh" in r.stderr, r.stderr
    assert not (project / ".venv").exists()
    assert server.requests_for("/files/") == []  # refused before anything was fetched


# --------------------------------------------------------------------------- build-network

def test_build_network_is_opt_in_per_package_and_recorded_in_the_lock(pypm, dists, index_server, tmp_path) -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(5)
    port = listener.getsockname()[1]
    backend = (f"import socket\n{MINI_WHEEL}\n"
               "def build_wheel(d, c=None, m=None):\n"
               f"    socket.create_connection(('127.0.0.1', {port}), timeout=3).close()\n"
               "    return write_wheel(d, 'fetcher', {'fetcher/__init__.py': b''})\n")
    dists.sdist("fetcher", "1.0", build_requires=(), extra_files={
        "pyproject.toml": '[build-system]\nrequires = []\nbuild-backend = "_backend"\nbackend-path = ["."]\n',
        "_backend.py": backend,
    })
    server = index_server()
    project = write_project(tmp_path / "p", deps=["fetcher"], tool=f'index-url = "{server.url}"\n')
    try:
        r = pypm("sync", cwd=project)
        assert r.returncode == 10 and "fetcher==1.0" in r.stderr, r.stderr
        assert "ConnectionRefusedError" in r.stderr or "Network is unreachable" in r.stderr, r.stderr
        assert "build-network" not in (project / "pypm.lock").read_text()
        with open(project / "pyproject.toml", "a") as f:
            f.write('\n[tool.pypm.build]\nnetwork = ["fetcher"]\n')
        r = pypm("sync", cwd=project)
        assert r.returncode == 0, r.stderr
        listener.settimeout(5)
        conn, _ = listener.accept()  # the build reached the host's 127.0.0.1
        conn.close()
    finally:
        listener.close()
    from pypm.lockfile import loads

    lock = loads((project / "pypm.lock").read_text())
    assert {p.name: p.build_network for p in lock.packages} == {"app": False, "fetcher": True}
    assert "build-network = true" in (project / "pypm.lock").read_text()


# --------------------------------------------------------------------------- pypm build

def test_pypm_build_makes_sdist_and_wheel_of_the_project(pypm, dists, index_server, tmp_path) -> None:
    st = setuptools_wheel()
    server = index_server([st])
    project = tmp_path / "proj"
    (project / "src" / "proj").mkdir(parents=True)
    (project / "src" / "proj" / "__init__.py").write_text("VALUE = 42\n")
    (project / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools>=68"]\nbuild-backend = "setuptools.build_meta"\n\n'
        '[project]\nname = "proj"\nversion = "2.0"\nrequires-python = ">=3.11"\n\n'
        f'[tool.pypm]\nindex-url = "{server.url}"\npython = "{sys.executable}"\n')
    r = pypm("build", cwd=project, timeout=300)
    assert r.returncode == 0, r.stderr
    made = sorted(p.name for p in (project / "dist").iterdir())
    assert made == ["proj-2.0-py3-none-any.whl", "proj-2.0.tar.gz"], made
    with zipfile.ZipFile(project / "dist" / "proj-2.0-py3-none-any.whl") as zf:
        assert zf.read("proj/__init__.py") == b"VALUE = 42\n"
    r = pypm("build", "--wheel", "-o", "out", cwd=project, timeout=300)
    assert r.returncode == 0, r.stderr
    assert [p.name for p in (project / "out").iterdir()] == ["proj-2.0-py3-none-any.whl"]
    assert "setuptools" in (project / "pypm.lock").read_text()  # the build env came from the lock


def test_pypm_build_refuses_unlocked_build_dependencies(pypm, dists, index_server, tmp_path) -> None:
    st = setuptools_wheel()  # it requires Python >= 3.10, the project allows 3.9: cannot be locked
    server = index_server([st])
    project = tmp_path / "proj"
    project.mkdir()
    (project / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools>=68"]\nbuild-backend = "setuptools.build_meta"\n\n'
        '[project]\nname = "proj"\nversion = "2.0"\nrequires-python = ">=3.9"\n\n'
        f'[tool.pypm]\nindex-url = "{server.url}"\npython = "{sys.executable}"\n')
    r = pypm("build", cwd=project)
    assert r.returncode == 3, r.stderr
    assert "pins no build dependencies for the project proj (setuptools>=68)" in r.stderr, r.stderr
    assert "hint:" in r.stderr and not (project / "dist").exists()


# --------------------------------------------------------------------------- get_requires_for_build_* at lock time

def test_lock_records_what_an_sdist_backend_asks_for(pypm, dists, index_server, tmp_path) -> None:
    backend = (f"{MINI_WHEEL}\n"
               "def get_requires_for_build_wheel(config_settings=None):\n"
               "    return ['buildextra>=1']\n"
               "def build_wheel(d, c=None, m=None):\n"
               "    import buildhelper, buildextra  # both must be in the build env\n"
               "    return write_wheel(d, 'asks', {'asks/__init__.py': b'EXTRA = %r\\n' % buildextra.X})\n")
    dists.sdist("asks", "1.0", build_requires=(), extra_files={
        "pyproject.toml": '[build-system]\nrequires = ["buildhelper"]\nbuild-backend = "_backend"\n'
                          'backend-path = ["."]\n',
        "_backend.py": backend,
    })
    dists.wheel("buildhelper", "1.0")
    dists.wheel("buildextra", "2.0", modules={"buildextra/__init__.py": "X = 'two'\n"})
    server = index_server()
    project = write_project(tmp_path / "p", deps=["asks"], tool=f'index-url = "{server.url}"\n')
    r = pypm("lock", cwd=project)
    assert r.returncode == 0, r.stderr
    from pypm.lockfile import loads

    lock = loads((project / "pypm.lock").read_text())
    [asks] = [p for p in lock.packages if p.name == "asks"]
    assert sorted((d.name, d.version) for d in asks.build_dependencies) == [("buildextra", "2.0"), ("buildhelper", "1.0")]
    r = pypm("sync", "--locked", cwd=project)
    assert r.returncode == 0, r.stderr
    assert installed(project / ".venv") == {"asks": "1.0"}
    assert (site_packages(project / ".venv") / "asks" / "__init__.py").read_text() == "EXTRA = 'two'\n"
