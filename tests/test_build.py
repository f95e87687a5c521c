"""Tests of pypm.build and pypm.build_sandbox: the build's policy, epochs, keys, network settings,
and `build_wheel` itself against the real sandbox (in-tree backends: no build dependency)."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from pypm.build import (BUILD_FORMAT, build_key, build_wheel, mark_build_network, network_allowed, project_epoch,
                        sdist_epoch)
from pypm.build_sandbox import ENV_INSIDE, MIN_EPOCH, OUT_INSIDE, BuildBox, _environment, make_policy
from pypm.errors import BuildError, ProjectError
from pypm.lockfile import FileEntry, LockedPackage


def _box(tmp_path: Path, **kw) -> BuildBox:
    for d in ("src", "env", "out"):
        (tmp_path / d).mkdir(exist_ok=True)
    return BuildBox(source=tmp_path / "src", source_inside="/build/src/pkg-1.0", env_dir=tmp_path / "env",
                    out_dir=tmp_path / "out", log_path=tmp_path / "log", **kw)


# --------------------------------------------------------------------------- the policy (pure)

def test_paths_map_into_the_fixed_layout(tmp_path: Path) -> None:
    box = _box(tmp_path)
    assert box.inside(str(tmp_path / "src")) == "/build/src/pkg-1.0"
    assert box.inside(str(tmp_path / "src" / "a" / "b")) == "/build/src/pkg-1.0/a/b"
    assert box.inside(str(tmp_path / "out" / "x.whl")) == f"{OUT_INSIDE}/x.whl"
    assert box.inside(str(tmp_path / "env")) == ENV_INSIDE
    assert box.inside(str(tmp_path / "srcfoo")) == str(tmp_path / "srcfoo")  # a sibling, not inside


def test_environment_is_fixed_and_clean(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYPM_TEST_SECRET", "leak")
    monkeypatch.setenv("LANG", "de_DE.UTF-8")
    box = _box(tmp_path, source_date_epoch=1600000000)
    extra = {"_PYPROJECT_HOOKS_BUILD_BACKEND": "be", "_PYPROJECT_HOOKS_BACKEND_PATH_JSON":
             f'["{tmp_path / "src"}", "{tmp_path / "src" / "tools"}"]'}
    env = dict(e.split("=", 1) for e in _environment(box, extra))
    assert env["SOURCE_DATE_EPOCH"] == "1600000000" and env["TZ"] == "UTC" and env["LC_ALL"] == "C.UTF-8"
    assert env["PYTHONHASHSEED"] == "0" and env["PATH"].startswith(f"{ENV_INSIDE}/bin:")
    assert env["_PYPROJECT_HOOKS_BACKEND_PATH_JSON"] == '["/build/src/pkg-1.0", "/build/src/pkg-1.0/tools"]'
    policy = make_policy(box, control_dir=str(tmp_path), script=__file__, cwd="/build/src/pkg-1.0", extra=extra)
    penv = policy.environ
    assert "PYPM_TEST_SECRET" not in penv and penv["LANG"] == "C.UTF-8"  # nothing of the host's
    assert penv["HOME"] == "/build/home" and penv["VIRTUAL_ENV"] == ENV_INSIDE


def test_policy_binds_only_the_build_trees_writable(tmp_path: Path) -> None:
    box = _box(tmp_path)
    policy = make_policy(box, control_dir=str(tmp_path / "ctl"), script=__file__, cwd="/build/src/pkg-1.0", extra={})
    writable = sorted((m.src, m.dst) for m in policy.mounts if m.kind == "bind" and m.writable)
    assert writable == sorted([(str(tmp_path / "src"), "/build/src/pkg-1.0"), (str(tmp_path / "out"), OUT_INSIDE),
                               (str(tmp_path / "ctl"), "/build/control")])
    ro = {m.dst: m.src for m in policy.mounts if m.kind == "bind" and not m.writable}
    assert ro[ENV_INSIDE] == str(tmp_path / "env")
    assert policy.network == "none" and "net" in policy.namespaces and policy.seccomp == "default"
    assert {m.dst for m in policy.mounts if m.kind == "tmpfs"} >= {"/tmp", "/build/home"}
    assert make_policy(_box(tmp_path, network=True), control_dir=str(tmp_path), script=__file__, cwd="/",
                       extra={}).network == "host"


# --------------------------------------------------------------------------- SOURCE_DATE_EPOCH

def _tar(path: Path, members: dict[str, int]) -> Path:
    with tarfile.open(path, "w:gz") as tf:
        for name, mtime in members.items():
            ti = tarfile.TarInfo(name)
            ti.size, ti.mtime = 1, mtime
            tf.addfile(ti, io.BytesIO(b"x"))
    return path


def test_sdist_epoch_is_pkg_info_mtime_else_newest_never_before_1980(tmp_path: Path) -> None:
    assert sdist_epoch(_tar(tmp_path / "a-1.tar.gz", {"a-1/setup.py": 1700000000, "a-1/PKG-INFO": 1600000000})) \
        == 1600000000
    assert sdist_epoch(_tar(tmp_path / "b-1.tar.gz", {"b-1/x.py": 1500000000, "b-1/y.py": 1600000001})) == 1600000001
    assert sdist_epoch(_tar(tmp_path / "c-1.tar.gz", {"c-1/PKG-INFO": 0})) == MIN_EPOCH
    with zipfile.ZipFile(tmp_path / "d-1.zip", "w") as zf:
        zf.writestr(zipfile.ZipInfo("d-1/PKG-INFO", (2001, 2, 3, 4, 5, 6)), "x")
    assert sdist_epoch(tmp_path / "d-1.zip") == 981173106
    (tmp_path / "bad-1.tar.gz").write_bytes(b"not a tar")
    with pytest.raises(BuildError, match="bad-1.tar.gz"):
        sdist_epoch(tmp_path / "bad-1.tar.gz")


def test_project_epoch_is_the_last_commit_time(tmp_path: Path) -> None:
    assert project_epoch(tmp_path) == MIN_EPOCH  # not a git work tree
    env = {**os.environ, "GIT_AUTHOR_DATE": "@1650000000 +0000", "GIT_COMMITTER_DATE": "@1650000000 +0000",
           "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@e", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@e",
           "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1"}
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True, env=env)
    (tmp_path / "f").write_text("x")
    subprocess.run(["git", "-C", str(tmp_path), "add", "f"], check=True, env=env)
    subprocess.run(["git", "-C", str(tmp_path), "commit", "-q", "-m", "m"], check=True, env=env)
    assert project_epoch(tmp_path) == 1650000000


# --------------------------------------------------------------------------- cache keys and network settings

def test_build_key_covers_every_input() -> None:
    base = ("sdist", "a" * 64, "cp311-cp311-linux_x86_64", "no-network", "b" * 64)
    keys = {build_key(*base)}
    for i in range(len(base)):
        changed = list(base)
        changed[i] = changed[i] + "x"
        keys.add(build_key(*changed))
    assert len(keys) == len(base) + 1
    assert build_key(*base) == build_key(*base) and BUILD_FORMAT


class _Tool:
    def __init__(self, build: dict) -> None:
        self.build = build


class _Project:
    def __init__(self, network: object, virtual: bool = False) -> None:
        self.tool = _Tool({"network": network})
        self.pyproject = Path("/p/pyproject.toml")
        self.is_virtual = virtual


def test_network_allowed_per_package_or_for_all() -> None:
    assert network_allowed(_Project(True), "x") and not network_allowed(_Project(False), "x")
    assert network_allowed(_Project(["My_Pkg"]), "my-pkg") and not network_allowed(_Project(["a"]), "b")
    with pytest.raises(ProjectError, match=r"\[tool.pypm.build\] network must be"):
        network_allowed(_Project("yes"), "x")


def test_mark_build_network_marks_only_buildable_listed_packages() -> None:
    sd = FileEntry("a-1.tar.gz", "http://i/a-1.tar.gz", "0" * 64, 1)
    whl = FileEntry("b-1-py3-none-any.whl", "http://i/b.whl", "1" * 64, 1)
    a = LockedPackage(name="a", version="1", source={"registry": "http://i/"}, sdist=sd)
    b = LockedPackage(name="b", version="1", source={"registry": "http://i/"}, wheels=[whl])
    root = LockedPackage(name="proj", version="0", source={"editable": "."})
    said: list[str] = []

    class Ctx:
        info = staticmethod(said.append)

    mark_build_network(Ctx, _Project(["a", "b", "ghost"]), [a, b, root])
    assert (a.build_network, b.build_network, root.build_network) == (True, False, False)
    assert len(said) == 1 and "ghost" in said[0]
    mark_build_network(Ctx, _Project(True), [a, b, root])
    assert (a.build_network, b.build_network, root.build_network) == (True, False, True)


# --------------------------------------------------------------------------- build_wheel in the real sandbox

BACKEND = r'''
import os, stat, zipfile

def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    if os.environ.get("FAIL_BUILD") or os.path.exists("fail"):
        print("the backend says: cannot continue")
        raise SystemExit(2)
    with open("made-by-build.txt", "w") as f:  # umask 022 inside: 0644
        f.write(os.environ["SOURCE_DATE_EPOCH"] + " " + os.getcwd() + " " + oct(stat.S_IMODE(os.stat(f.name).st_mode)))
    name = "tree-1.0-py3-none-any.whl"
    with zipfile.ZipFile(os.path.join(wheel_directory, name), "w") as z:
        z.write("made-by-build.txt", "tree/info.txt")
    return name
'''


@pytest.fixture(scope="module")
def interp():
    from pypm.interpreter import query_interpreter

    return query_interpreter(sys.executable)


def _tree(root: Path) -> Path:
    root.mkdir(parents=True)
    (root / "pyproject.toml").write_text('[build-system]\nrequires = []\nbuild-backend = "be"\nbackend-path = ["."]\n')
    (root / "be.py").write_text(BACKEND)
    return root


@pytest.fixture
def private_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """TMPDIR of our own, to see that a build leaves nothing in it (other processes share /tmp)."""
    import tempfile

    d = tmp_path / "tmpdir"
    d.mkdir()
    monkeypatch.setenv("TMPDIR", str(d))
    monkeypatch.setattr(tempfile, "tempdir", str(d))
    return d


def test_build_wheel_of_a_tree_runs_in_the_sandbox(tmp_path: Path, interp, private_tmp: Path) -> None:
    from pypm.cache import Cache

    src = _tree(tmp_path / "tree")
    with Cache(tmp_path / "cache") as cache:
        wheel = build_wheel(src, tmp_path / "dist", editable=False, build_packages=[], interpreter=interp,
                            cache=cache, source_date_epoch=1600000000)
    with zipfile.ZipFile(wheel) as zf:
        epoch, cwd, mode = zf.read("tree/info.txt").decode().split()
    # a source tree (the project) is seen at its real path; the epoch is passed in
    assert (epoch, cwd, mode) == ("1600000000", str(src.resolve()), "0o644")
    assert (src / "made-by-build.txt").is_file()  # the tree is writable
    assert list(private_tmp.iterdir()) == []  # the build env, the log, the sandbox root: all gone


def test_project_build_cannot_touch_its_venv_or_git(tmp_path: Path, interp, private_tmp: Path) -> None:
    from pypm.cache import Cache

    src = _tree(tmp_path / "proj")
    (src / ".venv").mkdir()
    (src / ".git").mkdir()
    (src / "be.py").write_text(BACKEND.replace("    if os.environ.get", """    for d in (".venv", ".git"):
        try:
            open(os.path.join(d, "pwned"), "w").close()
        except OSError as e:
            print(d, "refused:", e.strerror)
    if os.environ.get"""))
    with Cache(tmp_path / "cache") as cache:
        build_wheel(src, tmp_path / "dist", editable=False, build_packages=[], interpreter=interp, cache=cache)
    assert list((src / ".venv").iterdir()) == [] and list((src / ".git").iterdir()) == []
    assert (src / "made-by-build.txt").is_file()  # the rest of the tree stays writable


def test_build_wheel_runs_the_backend_with_the_limits(tmp_path: Path, interp, private_tmp: Path) -> None:
    from pypm.cache import Cache

    src = _tree(tmp_path / "tree")
    (src / "be.py").write_text(BACKEND.replace('    with open("made-by-build.txt", "w") as f:', """    import resource
    if resource.getrlimit(resource.RLIMIT_NOFILE) != (64, 64) or resource.getrlimit(resource.RLIMIT_CPU)[1] != 600:
        raise SystemExit("no limits: " + repr(resource.getrlimit(resource.RLIMIT_NOFILE)))
    with open("made-by-build.txt", "w") as f:"""))
    with Cache(tmp_path / "cache") as cache:
        build_wheel(src, tmp_path / "dist", editable=False, build_packages=[], interpreter=interp, cache=cache,
                    limits=(("cpu", 600), ("open-files", 64)))
        with pytest.raises(BuildError, match="no limits"):
            build_wheel(src, tmp_path / "dist2", editable=False, build_packages=[], interpreter=interp, cache=cache)


def test_build_wheel_failure_carries_the_output_and_cleans_up(tmp_path: Path, interp, private_tmp: Path) -> None:
    from pypm.cache import Cache

    src = _tree(tmp_path / "tree")
    (src / "fail").write_text("")
    with Cache(tmp_path / "cache") as cache, pytest.raises(BuildError) as ei:
        build_wheel(src, tmp_path / "dist", editable=False, build_packages=[], interpreter=interp, cache=cache,
                    label="tree==1.0")
    msg = str(ei.value)
    assert "tree==1.0" in msg and "the backend says: cannot continue" in msg and "status 2" in msg
    assert ei.value.exit_code == 10
    assert not (tmp_path / "dist").exists() or not list((tmp_path / "dist").iterdir())
    assert list(private_tmp.iterdir()) == []


def test_build_packages_follow_markers_and_extras() -> None:
    from pypm.build import build_packages_of
    from pypm.lockfile import Dependency, Lock

    def pkg(name: str, **kw) -> LockedPackage:
        return LockedPackage(name=name, version="1", source={"registry": "http://i/"},
                             wheels=[FileEntry(f"{name}-1-py3-none-any.whl", "http://i/x", "0" * 64, 1)], **kw)

    scm = pkg("scm", dependencies=[Dependency("tomli", "1", 'python_version < "3.11"'), Dependency("packaging", "1")],
              optional_dependencies={"toml": [Dependency("tomlkit", "1")]})
    root = LockedPackage(name="proj", version="0", source={"editable": "."},
                         build_dependencies=[Dependency("scm", "1", extras=("toml",)),
                                             Dependency("winonly", "1", 'sys_platform == "win32"')])
    lock = Lock(requires_python=">=3.9", content_hash="sha256:" + "0" * 64,
                packages=[root, scm, pkg("tomli"), pkg("packaging"), pkg("tomlkit"), pkg("winonly")])
    env = {"python_version": "3.11", "python_full_version": "3.11.7", "sys_platform": "linux",
           "platform_system": "Linux", "os_name": "posix", "platform_machine": "x86_64",
           "implementation_name": "cpython", "platform_python_implementation": "CPython",
           "platform_release": "", "platform_version": "", "implementation_version": "3.11.7"}
    assert [p.name for p in build_packages_of(lock, root, env)] == ["packaging", "scm", "tomlkit"]
    assert [p.name for p in build_packages_of(lock, root)] == ["packaging", "scm", "tomli", "tomlkit", "winonly"]
    broken = LockedPackage(name="proj", version="0", source={"editable": "."},
                           build_dependencies=[Dependency("ghost", "9")])
    with pytest.raises(Exception, match="ghost==9 as a build dependency of proj"):
        build_packages_of(lock, broken, env)
