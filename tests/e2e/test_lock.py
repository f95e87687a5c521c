"""End-to-end `pypm lock`: a real index on 127.0.0.1 serving real wheels and sdists, a real subprocess."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from pypm.lockfile import LockedPackage, loads

HEX64 = re.compile(r"^[0-9a-f]{64}$")


def write_project(root: Path, deps: list[str], *, groups: dict[str, list[str]] | None = None,
                  extras: dict[str, list[str]] | None = None, build: bool = True,
                  requires_python: str = ">=3.9") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    lines = []
    if build:
        lines += ["[build-system]", 'requires = ["setuptools>=68"]', 'build-backend = "setuptools.build_meta"', ""]
    lines += ["[project]", 'name = "proj"', 'version = "0.1.0"', f'requires-python = "{requires_python}"',
              "dependencies = [" + ", ".join(repr(d) for d in deps) + "]", ""]
    if extras:
        lines.append("[project.optional-dependencies]")
        lines += [f"{k} = [" + ", ".join(repr(d) for d in v) + "]" for k, v in extras.items()]
        lines.append("")
    if groups:
        lines.append("[dependency-groups]")
        lines += [f"{k} = [" + ", ".join(repr(d) for d in v) + "]" for k, v in groups.items()]
    # repr() of a str with double quotes inside gives single quotes: a TOML literal string.
    (root / "pyproject.toml").write_text("\n".join(lines) + "\n")
    return root


def pkgs(lock_text: str) -> dict[str, list[LockedPackage]]:
    out: dict[str, list[LockedPackage]] = {}
    for p in loads(lock_text).packages:
        out.setdefault(p.name, []).append(p)
    return out


def one(lock_text: str, name: str) -> LockedPackage:
    found = pkgs(lock_text)[name]
    assert len(found) == 1, found
    return found[0]


@pytest.fixture
def world(dists, index_server, tmp_path):
    """A small universe of real distributions covering markers, extras, groups, yanked, requires-python."""
    d = dists
    d.wheel("app", "1.0", requires_dist=["lib>=1", 'tomli>=2; python_version < "3.11"',
                                         'winonly; sys_platform == "win32"', 'ancient; python_version < "3.8"',
                                         'speedups; extra == "fast"'], provides_extra=["fast"])
    d.wheel("lib", "1.0")
    d.wheel("lib", "1.5")  # yanked below
    d.wheel("lib", "2.0", requires_python=">=3.12")  # excludes part of the project's Pythons
    d.wheel("tomli", "2.0.1")
    d.wheel("winonly", "1.0", tag="cp311-cp311-win_amd64")
    d.wheel("speedups", "1.0")
    d.wheel("pin-a", "1.0")
    d.wheel("pin-a", "2.0", requires_dist=["pin-b<1"])  # pin-b has no such version: backtrack to 1.0
    d.wheel("pin-b", "1.0")
    d.sdist("srconly", "1.0", build_requires=("setuptools>=68",))
    d.wheel("setuptools", "70.0")
    d.wheel("devtool", "3.0", requires_dist=['colorama; sys_platform == "win32"'])
    d.wheel("colorama", "0.4.6")
    server = index_server(yanked={"lib-1.5-py3-none-any.whl": "broken"})
    project = write_project(tmp_path / "proj", ["app[fast]", "pin-a", "srconly"], groups={"dev": ["devtool"]})
    return d, server, project


def test_lock_is_correct_deterministic_and_upgrades_only_what_is_asked(pypm, world):
    d, server, project = world
    r = pypm("lock", "--index-url", server.url, cwd=project)
    assert r.returncode == 0, r.stderr
    assert re.search(r"Resolved \d+ packages in [\d.]+s", r.stderr)
    text = (project / "pypm.lock").read_text()
    assert "extra ==" not in text and "127.0.0.1" in text
    p = pkgs(text)
    assert {n: [x.version for x in v] for n, v in p.items()} == {
        "proj": ["0.1.0"], "app": ["1.0"], "lib": ["1.0"], "tomli": ["2.0.1"], "winonly": ["1.0"],
        "speedups": ["1.0"], "pin-a": ["1.0"], "srconly": ["1.0"], "setuptools": ["70.0"],
        "devtool": ["3.0"], "colorama": ["0.4.6"]}
    assert one(text, "tomli").marker == 'python_version < "3.11"'
    assert one(text, "winonly").marker == 'sys_platform == "win32"'
    assert one(text, "colorama").marker == 'sys_platform == "win32"' and one(text, "colorama").groups == ["dev"]
    devtool = one(text, "devtool")
    assert devtool.groups == ["dev"] and not devtool.main
    app = one(text, "app")
    assert app.main and [x.name for x in app.optional_dependencies["fast"]] == ["speedups"]
    root = one(text, "proj")
    assert root.source == {"editable": "."}
    assert [(x.name, x.extras) for x in root.dependencies if x.name == "app"] == [("app", ("fast",))]
    assert [x.name for x in root.build_dependencies] == ["setuptools"]
    assert [x.name for x in one(text, "srconly").build_dependencies] == ["setuptools"]
    for pkg in loads(text).packages:
        for f in pkg.files():
            assert HEX64.match(f.sha256) and f.size and f.size > 0, (pkg.name, f)
    assert one(text, "srconly").sdist is not None
    # PEP 658 metadata files were used: no wheel was downloaded to read its METADATA. (The one
    # exception is srconly's build env: setuptools is fetched to ask its backend, in the sandbox,
    # what else it needs to build -- issue 5.)
    wheel_gets = [path for method, path, _ in server.requests if path.endswith(".whl") and method == "GET"]
    assert wheel_gets in ([], ["/files/setuptools-70.0-py3-none-any.whl"]), wheel_gets

    # Second run: nothing to do, byte-identical; --refresh re-resolves to the same bytes too.
    server.clear_requests()
    r = pypm("lock", "--index-url", server.url, cwd=project)
    assert r.returncode == 0 and (project / "pypm.lock").read_text() == text
    assert server.requests == []  # the fast path touched no network
    r = pypm("lock", "--refresh", "--index-url", server.url, cwd=project)
    assert r.returncode == 0, r.stderr
    assert (project / "pypm.lock").read_text() == text
    assert pypm("lock", "--check", "--index-url", server.url, cwd=project).returncode == 0
    r = pypm("lock", "--check", cwd=project)  # bare, as in CI: the lock's own options apply
    assert r.returncode == 0 and "up to date" in r.stderr, r.stderr

    # New releases appear: a plain lock keeps the pins; --upgrade-package moves only that one.
    server.add(d.wheel("lib", "1.2"), d.wheel("tomli", "2.0.2"))
    assert pypm("lock", "--index-url", server.url, cwd=project).returncode == 0
    assert (project / "pypm.lock").read_text() == text
    r = pypm("lock", "--upgrade-package", "lib", "--upgrade-package", "libb", "--index-url", server.url, cwd=project)
    assert r.returncode == 0, r.stderr
    assert "warning: --upgrade-package libb: no such package in pypm.lock" in r.stderr, r.stderr  # a typo is named
    text2 = (project / "pypm.lock").read_text()
    assert one(text2, "lib").version == "1.2" and one(text2, "tomli").version == "2.0.1"
    r = pypm("lock", "--upgrade", "--index-url", server.url, cwd=project)
    assert r.returncode == 0, r.stderr
    assert one((project / "pypm.lock").read_text(), "tomli").version == "2.0.2"

    # pyproject.toml changes: --check says stale (exit 1) and writes nothing.
    before = (project / "pypm.lock").read_bytes()
    write_project(project, ["app[fast]", "pin-a", "srconly", "colorama"], groups={"dev": ["devtool"]})
    r = pypm("lock", "--check", "--index-url", server.url, cwd=project)
    assert r.returncode == 1 and "out of date" in r.stderr and "pypm lock" in r.stderr
    assert (project / "pypm.lock").read_bytes() == before
    (project / "pypm.lock").unlink()
    r = pypm("lock", "--check", "--index-url", server.url, cwd=project)
    assert r.returncode == 1 and "does not exist" in r.stderr
    assert not (project / "pypm.lock").exists()


def test_fast_path_imports_no_network_or_resolver(pypm, dists, index_server, tmp_path):
    dists.wheel("lib", "1.0")
    server = index_server()
    project = write_project(tmp_path / "p", ["lib"], build=False)
    assert pypm("lock", "--index-url", server.url, cwd=project).returncode == 0
    r = pypm("lock", "--index-url", server.url, cwd=project, env={"PYTHONPROFILEIMPORTTIME": "1"})
    assert r.returncode == 0, r.stderr
    imported = {line.split("|")[-1].strip() for line in r.stderr.splitlines() if line.startswith("import time:")}
    assert "pypm.locking" in imported
    assert not imported & {"httpx", "resolvelib", "pypm.index", "pypm.resolver", "rich"}, imported
    assert one((project / "pypm.lock").read_text(), "proj").source == {"virtual": "."}


def test_fork_on_python_version_locks_two_versions(pypm, dists, index_server, tmp_path):
    dists.wheel("num", "1.26.4", requires_python=">=3.9")
    dists.wheel("num", "2.1.0", requires_python=">=3.10")
    server = index_server()
    project = write_project(tmp_path / "p", ['num<2; python_version < "3.10"', 'num>=2; python_version >= "3.10"'],
                            build=False)
    r = pypm("lock", "--index-url", server.url, cwd=project)
    assert r.returncode == 0, r.stderr
    text = (project / "pypm.lock").read_text()
    lock = loads(text)
    assert lock.resolution_markers == ['python_version < "3.10"', 'python_version >= "3.10"']
    nums = {p.version: p.marker for p in lock.by_name("num")}
    assert nums == {"1.26.4": 'python_version < "3.10"', "2.1.0": 'python_version >= "3.10"'}
    # Sync's walk picks one of them per Python.
    from pypm.selection import Selection, select_packages

    for py, want in (("3.9", "1.26.4"), ("3.12", "2.1.0")):
        env = {"python_version": py, "python_full_version": py + ".0", "sys_platform": "linux"}
        assert [p.version for p in select_packages(lock, Selection(), env)] == [want]
    assert pypm("lock", "--index-url", server.url, cwd=project).returncode == 0
    assert (project / "pypm.lock").read_text() == text


@pytest.fixture
def locked_project(pypm, dists, index_server, tmp_path):
    dists.wheel("a", "1.0", requires_dist=["b<2"])
    dists.wheel("b", "1.0")
    dists.wheel("b", "2.0")
    server = index_server()
    project = write_project(tmp_path / "p", ["a"], build=False)
    r = pypm("lock", "--index-url", server.url, cwd=project)
    assert r.returncode == 0, r.stderr
    return server, project, (project / "pypm.lock").read_bytes()


def _fails(pypm, project, server_url, code, *needles, env=None):
    r = pypm("lock", "--index-url", server_url, cwd=project, env=env)
    assert r.returncode == code, (r.returncode, r.stderr)
    assert "Traceback" not in r.stderr
    assert r.stderr.startswith("error: "), r.stderr
    for n in needles:
        assert n in r.stderr, (n, r.stderr)
    return r.stderr


def test_bad_input_gives_one_clear_error_and_leaves_the_lock_alone(pypm, locked_project, tmp_path):
    server, project, before = locked_project
    pyproject = project / "pyproject.toml"
    good = pyproject.read_text()
    assert "['a']" in good

    pyproject.write_text(good.replace('name = "proj"', 'name = "proj'))
    err = _fails(pypm, project, server.url, 3, "pyproject.toml:", "invalid TOML")
    assert re.search(r"pyproject\.toml:\d+:\d+:", err)

    pyproject.write_text(good.replace("['a']", "['a >>> 1']"))
    _fails(pypm, project, server.url, 3, "'a >>> 1'", "PEP 508")

    pyproject.write_text(good.replace("['a']", "['nosuchpkg']"))
    _fails(pypm, project, server.url, 5, "nosuchpkg", server.url.rstrip("/"))

    pyproject.write_text(good.replace("['a']", "['a==1.0', 'b>=2']"))
    _fails(pypm, project, server.url, 4, "proj depends on a==1.0; a 1.0 depends on b<2", "proj depends on b>=2")

    pyproject.write_text(good.replace("['a']", "['a', 'b']"))  # stale, so lock must resolve
    dead = "http://127.0.0.1:9/simple/"
    _fails(pypm, project, dead, 5, "127.0.0.1:9", "connect")

    server.corrupt_metadata("b-2.0-py3-none-any.whl")
    server.corrupt_metadata("b-1.0-py3-none-any.whl")
    # A cold cache, so the metadata is fetched (a warm one holds the verified copy already).
    _fails(pypm, project, server.url, 6, "b-", "hash", env={"PYPM_CACHE_DIR": str(tmp_path / "cold-cache")})
    assert (project / "pypm.lock").read_bytes() == before
    assert not [p for p in project.iterdir() if p.name.startswith(".pypm.lock.")]  # no temp file left


def test_a_lock_that_is_not_utf8_is_replaced_not_an_internal_error(pypm, locked_project):
    """The old lock is ignored with a warning and re-written (comparing it with the new text
    was a UnicodeDecodeError, reported as an internal error by `pypm lock`, `sync` and `run`)."""
    server, project, before = locked_project
    (project / "pypm.lock").write_bytes(before + b"# \xff\n")
    r = pypm("lock", "--index-url", server.url, cwd=project)
    assert r.returncode == 0 and "Traceback" not in r.stderr and "internal error" not in r.stderr, r.stderr
    assert "is not UTF-8 text" in r.stderr  # the warning that it was ignored
    assert (project / "pypm.lock").read_bytes() == before


def test_a_source_url_that_cannot_be_parsed_is_named(pypm, locked_project, tmp_path):
    """An index or find-links URL urllib cannot split (was an internal ValueError/InvalidURL)."""
    server, project, before = locked_project
    for flag, url in (("--find-links", "http://[::1"), ("--index-url", "http://127.0.0.1:abc/simple/")):
        r = pypm("lock", "--index-url", server.url, flag, url, cwd=project)
        assert r.returncode == 2 and r.stderr.startswith(f"error: {url!r} is not a valid URL"), r.stderr
        assert "Traceback" not in r.stderr and "PYPM_INDEX_URL" in r.stderr
    assert (project / "pypm.lock").read_bytes() == before
    fresh = write_project(tmp_path / "fresh", ["a"], build=False)  # no recorded index: the variable counts
    r = pypm("lock", cwd=fresh, env={"PYPM_INDEX_URL": "http://[::1"})
    assert r.returncode == 2 and "'http://[::1' is not a valid URL" in r.stderr, r.stderr
    assert not (fresh / "pypm.lock").exists()


def test_canary_locks_against_the_local_canary_index(pypm, canary_project):
    r = pypm("lock", cwd=canary_project, timeout=600)
    assert r.returncode == 0, r.stderr
    text = (canary_project / "pypm.lock").read_text()
    _check_canary(text)


def _check_canary(text: str) -> None:
    lock = loads(text)
    names = {p.name: p for p in lock.packages}
    for n in ("requests", "urllib3", "idna", "certifi", "charset-normalizer"):
        assert names[n].main, n
    assert names["requests"].version == "2.32.3"
    assert names["tomli"].marker is not None and "python_version" in names["tomli"].marker
    for n in ("black", "pytest", "mypy"):
        assert names[n].groups == ["dev"] and not names[n].main, n
    for p in lock.packages:
        for f in p.files():
            assert HEX64.match(f.sha256) and f.size, (p.name, f.filename)


@pytest.mark.live
def test_live_canary_lock(pypm, tmp_path):
    from tests.conftest import copy_example

    project = copy_example(tmp_path / "my-lib")
    r = pypm("lock", cwd=project, timeout=900)
    assert r.returncode == 0, r.stderr
    _check_canary((project / "pypm.lock").read_text())
    shutil.rmtree(project)  # a lock against the default index never outlives the test


class _Ctx:
    quiet, verbose = True, 0

    def __init__(self) -> None:
        self.said: list[str] = []

    def info(self, msg: str) -> None:
        self.said.append(msg)

    debug = info


def test_ensure_lock_for_sync_and_run(dists, index_server, tmp_path, monkeypatch):
    from pypm.errors import LockError, StaleLockError
    from pypm.locking import ensure_lock
    from pypm.project import load_project

    dists.wheel("lib", "1.0")
    server = index_server()
    monkeypatch.setenv("PYPM_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("PYPM_INDEX_URL", server.url)
    root = write_project(tmp_path / "p", ["lib"], build=False)
    project = load_project(root)
    with pytest.raises(LockError):
        ensure_lock(_Ctx(), project, locked=False, frozen=True, offline=False)
    with pytest.raises(StaleLockError) as ei:
        ensure_lock(_Ctx(), project, locked=True, frozen=False, offline=False)
    assert "--locked" in str(ei.value) and not (root / "pypm.lock").exists()
    lock = ensure_lock(_Ctx(), project, locked=False, frozen=False, offline=False)  # creates it
    assert [p.name for p in lock.packages if not p.is_root] == ["lib"]
    server.clear_requests()
    again = ensure_lock(_Ctx(), project, locked=True, frozen=False, offline=True)
    assert again.content_hash == lock.content_hash and server.requests == []
    root.joinpath("pyproject.toml").write_text(root.joinpath("pyproject.toml").read_text().replace("['lib']", "[]"))
    with pytest.raises(StaleLockError):
        ensure_lock(_Ctx(), load_project(root), locked=True, frozen=False, offline=False)
    # --frozen uses the lock as it is, stale or not.
    assert ensure_lock(_Ctx(), load_project(root), locked=False, frozen=True, offline=True).content_hash == \
        lock.content_hash


def test_options_given_on_the_command_line_are_kept_for_sync(pypm, dists, index_server, tmp_path, monkeypatch):
    from pypm.locking import ensure_lock
    from pypm.project import load_project

    dists.wheel("lib", "1.0")
    server = index_server()
    root = write_project(tmp_path / "p", ["lib"], build=False)
    assert pypm("lock", "--index-url", server.url, "--prerelease", "allow", cwd=root).returncode == 0
    before = (root / "pypm.lock").read_bytes()
    monkeypatch.setenv("PYPM_INDEX_URL", "http://127.0.0.1:9/simple/")  # would fail if used
    lock = ensure_lock(_Ctx(), load_project(root), locked=True, frozen=False, offline=True)
    assert lock.options == {"index-url": server.url, "prerelease": "allow"}
    assert (root / "pypm.lock").read_bytes() == before


def test_find_links_files_are_hashed_and_sized(pypm, dists, index_server, tmp_path):
    import hashlib

    fl = tmp_path / "wheelhouse"
    fl.mkdir()
    w = dists.wheel("local-only", "1.0")
    shutil.move(str(w), fl / w.name)
    dists.wheel("lib", "1.0")
    server = index_server()
    root = write_project(tmp_path / "p", ["lib", "local-only"], build=False)
    r = pypm("lock", "--index-url", server.url, "--find-links", str(fl), cwd=root)
    assert r.returncode == 0, r.stderr
    lo = one((root / "pypm.lock").read_text(), "local-only")
    data = (fl / w.name).read_bytes()
    assert lo.source == {"find-links": str(fl)}
    assert lo.wheels[0].sha256 == hashlib.sha256(data).hexdigest() and lo.wheels[0].size == len(data)


def test_sdist_without_pyproject_gets_the_pep517_default(tmp_path):
    import io
    import tarfile

    from pypm.lockfile import FileEntry
    from pypm.locking import _sdist_build_requires

    def sdist(name: str, files: dict[str, bytes]) -> Path:
        path = tmp_path / f"{name}-1.0.tar.gz"
        with tarfile.open(path, "w:gz") as tf:
            for arc, data in files.items():
                info = tarfile.TarInfo(f"{name}-1.0/{arc}")
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
        return path

    def pkg(path: Path) -> LockedPackage:
        return LockedPackage(name="x", version="1.0", source={"registry": ""},
                             sdist=FileEntry(path.name, path.as_uri(), "0" * 64, 1))

    old = sdist("old", {"setup.py": b"from setuptools import setup; setup()"})
    assert _sdist_build_requires(None, pkg(old)) == ("setuptools>=40.8.0",)
    new = sdist("new", {"pyproject.toml": b'[build-system]\nrequires = ["flit_core>=3.2"]\n'})
    assert _sdist_build_requires(None, pkg(new)) == ("flit_core>=3.2",)


def test_lock_from_pylock_keeps_its_pins(pypm, dists, index_server, tmp_path):
    dists.wheel("lib", "1.0")
    server = index_server()
    root = write_project(tmp_path / "p", ["lib"], build=False)
    assert pypm("lock", "--index-url", server.url, cwd=root).returncode == 0
    r = pypm("export", "--format", "pylock.toml", "-o", "pylock.toml", cwd=root)
    assert r.returncode == 0, r.stderr
    (root / "pypm.lock").unlink()
    server.add(dists.wheel("lib", "2.0"))
    r = pypm("lock", "--from", "pylock.toml", "--index-url", server.url, cwd=root)
    assert r.returncode == 0, r.stderr
    assert one((root / "pypm.lock").read_text(), "lib").version == "1.0"
    r = pypm("lock", "--upgrade", "--index-url", server.url, cwd=root)
    assert one((root / "pypm.lock").read_text(), "lib").version == "2.0"


def test_build_requirements_the_index_lacks_are_a_warning_not_a_failure(pypm, dists, index_server, tmp_path):
    dists.wheel("lib", "1.0")
    server = index_server()
    root = write_project(tmp_path / "p", ["lib"], build=True)  # setuptools>=68: not on this index
    r = pypm("lock", "--index-url", server.url, cwd=root)
    assert r.returncode == 0, r.stderr
    assert "warning: the build dependencies of proj (setuptools>=68) were not locked" in r.stderr
    assert "setuptools" in r.stderr and "was not found" in r.stderr
    lock = loads((root / "pypm.lock").read_text())
    root_pkg = lock.root()
    assert root_pkg is not None
    assert root_pkg.build_dependencies == [] and [p.name for p in lock.packages] == ["proj", "lib"]


def test_html_index_gives_the_same_answers(pypm, dists, index_server, tmp_path):
    dists.wheel("lib", "1.0")
    dists.wheel("lib", "1.5")
    dists.wheel("lib", "2.0", requires_python=">=3.12")
    server = index_server(json=False, pep658=False, yanked={"lib-1.5-py3-none-any.whl": ""})
    root = write_project(tmp_path / "p", ["lib"], build=False)
    r = pypm("lock", "--index-url", server.url, cwd=root)
    assert r.returncode == 0, r.stderr
    assert one((root / "pypm.lock").read_text(), "lib").version == "1.0"
    root.joinpath("pyproject.toml").write_text(root.joinpath("pyproject.toml").read_text().replace(
        "['lib']", "['lib==1.5']"))
    r = pypm("lock", "--index-url", server.url, cwd=root)
    assert r.returncode == 0, r.stderr
    assert one((root / "pypm.lock").read_text(), "lib").version == "1.5"  # yanked, but pinned with ==


# --- issue 8: the no-op `pypm lock` answered from the entry point (locking.fast_lock) ----------------

def _imports(stderr: str) -> set[str]:
    return {line.split("|")[-1].strip() for line in stderr.splitlines() if line.startswith("import time:")}


def _said(stderr: str) -> str:
    # What the user sees, with the timing (which differs run to run) blanked.
    lines = [line for line in stderr.splitlines() if not line.startswith("import time:")]
    return re.sub(r"in \d+\.\d+s", "in Ns", "\n".join(lines))


def _full(pypm, project, *args, env=None):
    """`pypm ARGS` through the full CLI (pypm.cli.main), never the entry point's fast path."""
    import subprocess
    import sys

    code = "import sys; from pypm.cli import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.run([sys.executable, "-c", code, *args], cwd=project, env={**pypm.env, **(env or {})},
                          capture_output=True, text=True, timeout=120)


def _fast_and_full(pypm, project, *args, env=None):
    """Run `pypm ARGS` (the entry point's fast path may answer), then the same through the full
    CLI; -> (fast result, took the fast path?, full result)."""
    fast = pypm(*args, cwd=project, env={"PYTHONPROFILEIMPORTTIME": "1", **(env or {})})
    took = "pypm.cli" not in _imports(fast.stderr)
    return fast, took, _full(pypm, project, *args, env=env)


def _same(fast, full) -> None:
    assert (fast.returncode, _said(fast.stderr)) == (full.returncode, _said(full.stderr)), (fast.stderr, full.stderr)


def test_noop_lock_takes_the_fast_path_and_says_what_the_full_command_says(pypm, locked_project):
    server, project, before = locked_project
    for args in (("lock",), ("lock", "--check"), ("-q", "lock"), ("lock", "-q", "--check")):
        fast, took, full = _fast_and_full(pypm, project, *args)
        assert took, (args, fast.stderr)
        _same(fast, full)
        assert fast.returncode == 0
    fast = pypm("lock", cwd=project, env={"PYTHONPROFILEIMPORTTIME": "1"})
    imported = _imports(fast.stderr)
    # Neither the CLI nor a TOML parse of the lock, nor the network stack.
    assert not imported & {"pypm.cli", "argparse", "httpx", "resolvelib", "rich", "pypm.index"}, imported
    assert _said(fast.stderr) == "Resolved 2 packages in Ns (pypm.lock is up to date)"
    assert pypm("-q", "lock", cwd=project).stderr == ""
    assert (project / "pypm.lock").read_bytes() == before
    # The lock was made with --index-url (recorded in it); PYPM_INDEX_URL points at a closed port, so a
    # fast path that hashed the default index instead would call the lock stale.
    assert "index-url" in loads(before.decode()).options


def test_a_noop_lock_seen_before_is_answered_from_its_record_alone(pypm, locked_project, tmp_path):
    """The second no-op of a kind (`lock`, `lock --check`) reads two files, pypm.locking unloaded;
    any byte of pyproject.toml changed, another directory, or the other kind: the first path."""
    import shutil

    server, project, before = locked_project
    lean = {"pypm.locking", "pypm.lockfile", "packaging", "dataclasses", "pypm.project"}
    # The lock just written (`pypm lock --index-url`, full) was recorded current for both kinds
    for args in (("lock",), ("lock", "--check"), ("-q", "lock")):
        fast, took, full = _fast_and_full(pypm, project, *args)
        assert took and not _imports(fast.stderr) & lean, _imports(fast.stderr) & lean
        _same(fast, full)
    assert (project / "pypm.lock").read_bytes() == before
    # Without that record (a lock made by an older pypm, a record from before): the first no-op
    # decides in full and records it, the second reads the record alone.
    for f in (pypm.cache_dir / "lock-seen").rglob("*.json"):
        f.unlink()
    assert pypm("sync", "--frozen", cwd=project).returncode == 0  # (reads the lock: records it as valid, no more)
    first = pypm("lock", "--check", cwd=project, env={"PYTHONPROFILEIMPORTTIME": "1"})
    assert first.returncode == 0 and "pypm.locking" in _imports(first.stderr), first.stderr
    second = pypm("lock", "--check", cwd=project, env={"PYTHONPROFILEIMPORTTIME": "1"})
    assert second.returncode == 0 and not _imports(second.stderr) & lean, second.stderr
    # A comment in pyproject.toml: not an input, but other bytes; decided again, and recorded again
    (project / "pyproject.toml").write_text((project / "pyproject.toml").read_text() + "# a comment\n")
    r = pypm("lock", "--check", cwd=project, env={"PYTHONPROFILEIMPORTTIME": "1"})
    assert r.returncode == 0 and "pypm.locking" in _imports(r.stderr), r.stderr
    r = pypm("lock", "--check", cwd=project, env={"PYTHONPROFILEIMPORTTIME": "1"})
    assert r.returncode == 0 and "pypm.locking" not in _imports(r.stderr), r.stderr
    # The same two files in another directory: decided there first
    other = tmp_path / "copy"
    shutil.copytree(project, other)
    r = pypm("lock", "--check", cwd=other, env={"PYTHONPROFILEIMPORTTIME": "1"})
    assert r.returncode == 0 and "pypm.locking" in _imports(r.stderr), r.stderr
    # A stale lock is never answered from an old record: the requirements changed
    (project / "pyproject.toml").write_text((project / "pyproject.toml").read_text().replace("['a']", "['a', 'b']"))
    fast, took, full = _fast_and_full(pypm, project, "lock", "--check")
    assert fast.returncode == 1 and "out of date" in fast.stderr
    _same(fast, full)


def test_a_noop_lock_whose_index_comes_from_the_environment_is_decided_every_time(pypm, dists, index_server, tmp_path):
    """No index in the lock or the project: the environment decides it, so the two files alone
    cannot say the lock is current, and a new PYPM_INDEX_URL makes it stale."""
    dists.wheel("a", "1.0")
    server = index_server()
    project = write_project(tmp_path / "p", ["a"], build=False)
    env = {"PYPM_INDEX_URL": server.url, "PYTHONPROFILEIMPORTTIME": "1"}
    assert pypm("lock", cwd=project, env=env).returncode == 0
    for _ in range(2):
        r = pypm("lock", "--check", cwd=project, env=env)
        assert r.returncode == 0 and "pypm.locking" in _imports(r.stderr), r.stderr
    r = pypm("lock", "--check", cwd=project, env={**env, "PYPM_INDEX_URL": server.url + "other/"})
    assert r.returncode == 1 and "out of date" in r.stderr, r.stderr


def test_noop_lock_fast_path_decides_as_the_full_command(pypm, locked_project, tmp_path):
    server, project, before = locked_project
    lock = project / "pypm.lock"
    pyproject = project / "pyproject.toml"
    good = pyproject.read_text()

    # Stale: pyproject.toml's requirements changed.
    pyproject.write_text(good.replace("['a']", "['a', 'b']"))
    fast, took, full = _fast_and_full(pypm, project, "lock", "--check")
    assert not took and fast.returncode == 1 and "out of date" in fast.stderr
    _same(fast, full)

    # Changed sources: [tool.pypm] index-url now names another index.
    # (`--check` keeps the index the lock records; a bare `lock` re-locks against the project's.)
    pyproject.write_text(good + '\n[tool.pypm]\nindex-url = "http://127.0.0.1:9/simple/"\n')
    fast, took, full = _fast_and_full(pypm, project, "lock", "--check")
    assert took and fast.returncode == 0
    _same(fast, full)
    fast, took, full = _fast_and_full(pypm, project, "lock", env={"PYPM_OFFLINE": "1"})  # fails fast
    assert not took and fast.returncode == 5 and "127.0.0.1:9" in fast.stderr
    _same(fast, full)
    assert lock.read_bytes() == before
    pyproject.write_text(good)

    # Version of the project is not a resolution input, but a bad one is still an error (exit 3).
    pyproject.write_text(good.replace('version = "0.1.0"', 'version = "not a version"'))
    fast, took, full = _fast_and_full(pypm, project, "lock", "--check")
    assert not took and fast.returncode == 3 and "error: " in fast.stderr
    _same(fast, full)
    pyproject.write_text(good)

    # Changed options: a lock made with --prerelease allow is current for `--check` (which applies the
    # recorded options) but not for a bare `lock` (which keeps only the recorded sources) -- as before.
    assert pypm("lock", "--index-url", server.url, "--prerelease", "allow", cwd=project).returncode == 0
    fast, took, full = _fast_and_full(pypm, project, "lock", "--check")
    assert took and fast.returncode == 0
    _same(fast, full)
    r = pypm("lock", cwd=project, env={"PYTHONPROFILEIMPORTTIME": "1"})
    assert r.returncode == 0 and "pypm.cli" in _imports(r.stderr), r.stderr  # re-locked by the full path
    assert "prerelease" not in loads(lock.read_text()).options

    # Missing lock.
    saved = lock.read_bytes()
    lock.unlink()
    fast, took, full = _fast_and_full(pypm, project, "lock", "--check")
    assert not took and fast.returncode == 1 and "does not exist" in fast.stderr
    _same(fast, full)

    # Written by another version of the lock format (a header the fast path would otherwise accept).
    lock.write_bytes(saved.replace(b"version = 1\n", b"version = 2\n", 1))
    fast, took, full = _fast_and_full(pypm, project, "lock", "--check")
    assert not took and fast.returncode == 1 and "version 2 is not supported" in fast.stderr
    _same(fast, full)

    # Header intact, body corrupt: the full command ignores the lock (with a warning) and re-locks.
    corrupt = saved + b"\n[[package]]\nname = 7\n"
    lock.write_bytes(corrupt)
    fast, took, full = _fast_and_full(pypm, project, "lock", "--check")
    assert not took and fast.returncode == 1 and "cannot be read" in fast.stderr
    _same(fast, full)
    r = pypm("lock", "--index-url", server.url, cwd=project)  # (the index it records was in the bad lock)
    assert r.returncode == 0 and "warning: ignoring the existing pypm.lock" in r.stderr, r.stderr
    assert b"name = 7" not in lock.read_bytes()

    # A garbled record of a lock pypm has read: the fast path steps aside, nothing else changes.
    for f in (pypm.cache_dir / "lock-seen").rglob("*.json"):
        f.write_text("{")
    fast, took, full = _fast_and_full(pypm, project, "lock", "--check")
    assert not took and fast.returncode == 0
    _same(fast, full)
    fast, took, _ = _fast_and_full(pypm, project, "lock", "--check")
    assert took  # the full path recorded it again
    # Flags the fast path does not know go to the CLI: --refresh re-fetches, -C elsewhere, a typo is a usage error.
    r = pypm("lock", "--check", "--nonsense", cwd=project)
    assert r.returncode == 2 and "--nonsense" in r.stderr


@pytest.mark.live
@pytest.mark.parametrize("kind", ["--lib", "--package"])
def test_live_init_lib_and_package_with_hatchling_sync_run_and_build(pypm, tmp_path, kind):
    """`pypm init --lib|--package` (hatchling, from the default index) is synced, run and built as
    made: hatchling's editable build asks for `editables`, which the lock asks its backend for
    (before, such a project's sync stopped: "also needs editables")."""
    project = tmp_path / "greet-kit"
    r = pypm("init", kind, str(project))
    assert r.returncode == 0, r.stderr
    r = pypm("sync", cwd=project, timeout=900)
    assert r.returncode == 0 and " + greet-kit==0.1.0 (editable)" in r.stderr, r.stderr
    assert "editables" in {p.name for p in loads((project / "pypm.lock").read_text()).packages}
    if kind == "--lib":
        r = pypm("run", "--", "python", "-c", "import greet_kit; print(greet_kit.hello())", cwd=project)
    else:
        r = pypm("run", "greet-kit", cwd=project)
    assert (r.returncode, r.stdout) == (0, "Hello from greet-kit!\n"), r.stderr
    r = pypm("build", cwd=project, timeout=900)
    assert r.returncode == 0 and (project / "dist" / "greet_kit-0.1.0-py3-none-any.whl").is_file(), r.stderr
    shutil.rmtree(project)  # a lock against the default index never outlives the test
