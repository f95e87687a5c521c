"""pypm.selection: which locked packages a selection needs, in one environment or in all."""

from __future__ import annotations

import pytest

from pypm.errors import LockError
from pypm.lockfile import Dependency as D
from pypm.lockfile import Lock, LockedPackage
from pypm.selection import Selection, select_packages

LINUX_311 = {
    "python_version": "3.11", "python_full_version": "3.11.7", "sys_platform": "linux", "os_name": "posix",
    "platform_system": "Linux", "platform_machine": "x86_64", "implementation_name": "cpython",
    "platform_python_implementation": "CPython", "platform_release": "", "platform_version": "",
    "implementation_version": "3.11.7",
}
WIN_39 = {**LINUX_311, "python_version": "3.9", "python_full_version": "3.9.1", "sys_platform": "win32",
          "os_name": "nt", "platform_system": "Windows"}


def P(name: str, version: str = "1", **kw) -> LockedPackage:
    return LockedPackage(name=name, version=version, source={"registry": "http://127.0.0.1:1/simple/"}, **kw)


def sample() -> Lock:
    """app -> requests -> (idna, urllib3[socks] on win -> pysocks); tomli on < 3.11;
    extra heavy -> torch; groups dev -> pytest (-> pluggy), lint -> ruff; a cycle a <-> b."""
    root = LockedPackage(
        "App", "0.1", {"editable": "."},
        dependencies=[D("requests", "2"), D("tomli", "2", 'python_version < "3.11"'), D("a", "1")],
        optional_dependencies={"heavy": [D("torch", "2")], "empty": []},
        dependency_groups={"dev": [D("pytest", "8")], "lint": [D("ruff", "0.4")]},
    )
    return Lock(">=3.9", "sha256:", [
        root,
        P("requests", "2", dependencies=[D("idna", "3"), D("urllib3", "2", extras=("socks",))]),
        P("urllib3", "2", optional_dependencies={"socks": [D("pysocks", "1", 'sys_platform == "win32"')],
                                                  "brotli": [D("brotli", "1")]}),
        P("idna", "3"), P("pysocks", "1"), P("brotli", "1"),
        P("tomli", "2"), P("torch", "2"), P("pytest", "8", dependencies=[D("pluggy", "1")]), P("pluggy", "1"),
        P("ruff", "0.4"),
        P("a", "1", dependencies=[D("b", "1")]), P("b", "1", dependencies=[D("a", "1"), D("app", "0.1")]),
    ])


def names(pkgs: list[LockedPackage]) -> list[str]:
    return [p.name for p in pkgs]


MAIN = ["a", "b", "idna", "pysocks", "requests", "tomli", "urllib3"]


def test_from_flags() -> None:
    assert Selection.from_flags() == Selection(True, frozenset(), frozenset({"dev"}), True)
    assert Selection.from_flags(no_dev=True).groups == frozenset()
    assert Selection.from_flags(groups=["Lint_Tools"]).groups == frozenset({"dev", "lint-tools"})
    assert Selection.from_flags(extras=["Heavy"]).extras == frozenset({"heavy"})
    assert Selection.from_flags(all_extras=True, extras=["x"]).extras == frozenset({"*"})
    assert Selection.from_flags(no_install_project=True).include_project is False
    only = Selection.from_flags(only_groups=["lint"], extras=["heavy"], groups=["x"])
    assert only == Selection(False, frozenset(), frozenset({"lint"}), False)


def test_universal_walk_follows_every_edge_and_extras_of_dependencies() -> None:
    sel = Selection.from_flags(no_dev=True)
    # pysocks: reached through urllib3[socks]; brotli: an extra nobody asked for, left out.
    assert names(select_packages(sample(), sel)) == MAIN


def test_environment_evaluates_edge_markers() -> None:
    sel = Selection.from_flags(no_dev=True)
    assert names(select_packages(sample(), sel, LINUX_311)) == ["a", "b", "idna", "requests", "urllib3"]
    assert names(select_packages(sample(), sel, WIN_39)) == MAIN


def test_groups_and_extras() -> None:
    lock = sample()
    assert names(select_packages(lock, Selection.from_flags(), LINUX_311)) == [
        "a", "b", "idna", "pluggy", "pytest", "requests", "urllib3"]
    got = names(select_packages(lock, Selection.from_flags(extras=["heavy"], groups=["lint"]), LINUX_311))
    assert "torch" in got and "ruff" in got and "pytest" in got
    assert "torch" in names(select_packages(lock, Selection.from_flags(all_extras=True)))
    # An extra with no table (declared but empty) adds nothing and is no error.
    assert names(select_packages(lock, Selection.from_flags(extras=["empty"], no_dev=True))) == MAIN


def test_only_group_leaves_out_the_project_dependencies() -> None:
    assert names(select_packages(sample(), Selection.from_flags(only_groups=["dev"]))) == ["pluggy", "pytest"]
    assert names(select_packages(sample(), Selection.from_flags(only_groups=["lint", "dev"]))) == [
        "pluggy", "pytest", "ruff"]


def test_root_is_never_returned_even_when_reached_through_a_cycle() -> None:
    got = select_packages(sample(), Selection.from_flags(no_dev=True))
    assert all(not p.is_root for p in got)


def test_extra_requested_on_a_second_path_is_still_expanded() -> None:
    root = LockedPackage("r", "0", {"virtual": "."}, dependencies=[D("x", "1")],
                         dependency_groups={"dev": [D("y", "1")]})
    lock = Lock("", "", [
        root,
        P("x", "1", dependencies=[D("lib", "1")]),
        P("y", "1", dependencies=[D("lib", "1", extras=("fast",))]),
        P("lib", "1", optional_dependencies={"fast": [D("speedup", "1")]}),
        P("speedup", "1"),
    ])
    assert names(select_packages(lock, Selection())) == ["lib", "speedup", "x", "y"]
    assert names(select_packages(lock, Selection(groups=frozenset()))) == ["lib", "x"]


def test_self_dependency_with_extra_pulls_in_that_extra() -> None:
    # A dev group listing the project with an extra ("app[heavy]") installs the extra's packages.
    root = LockedPackage("app", "0.1", {"editable": "."}, dependencies=[D("idna", "3")],
                         optional_dependencies={"heavy": [D("torch", "2")]},
                         dependency_groups={"dev": [D("app", "0.1", extras=("heavy",))]})
    lock = Lock("", "", [root, P("idna", "3"), P("torch", "2")])
    assert names(select_packages(lock, Selection())) == ["idna", "torch"]
    assert names(select_packages(lock, Selection(groups=frozenset()))) == ["idna"]


def test_two_versions_under_disjoint_markers() -> None:
    root = LockedPackage("r", "0", {"virtual": "."}, dependencies=[
        D("numpy", "1.26", 'python_version < "3.10"'), D("numpy", "2.0", 'python_version >= "3.10"')])
    lock = Lock("", "", [root, P("numpy", "1.26"), P("numpy", "2.0")])
    assert [(p.name, p.version) for p in select_packages(lock, Selection())] == [("numpy", "1.26"), ("numpy", "2.0")]
    assert [p.version for p in select_packages(lock, Selection(), LINUX_311)] == ["2.0"]
    assert [p.version for p in select_packages(lock, Selection(), WIN_39)] == ["1.26"]


def test_names_are_matched_canonically() -> None:
    root = LockedPackage("r", "0", {"virtual": "."}, dependencies=[D("Foo_Bar", "1")])
    lock = Lock("", "", [root, P("foo.bar", "1")])
    assert names(select_packages(lock, Selection())) == ["foo.bar"]


def test_dangling_edge_and_missing_root_are_lock_errors() -> None:
    root = LockedPackage("r", "0", {"virtual": "."}, dependencies=[D("gone", "1")])
    with pytest.raises(LockError, match="gone==1") as e:
        select_packages(Lock("", "", [root]), Selection())
    assert "pypm lock" in (e.value.hint or "")
    with pytest.raises(LockError, match="no root package"):
        select_packages(Lock("", "", [P("x")]), Selection())


def test_an_invalid_edge_marker_is_a_lock_error() -> None:
    # Was packaging's InvalidMarker, reported as an internal error by `pypm sync`/`run`.
    root = LockedPackage("r", "0", {"virtual": "."}, dependencies=[D("x", "1", "os_name ==")])
    with pytest.raises(LockError, match=r"the edge to x==1 has an invalid marker 'os_name =='") as e:
        select_packages(Lock("", "", [root, P("x")]), Selection(), env=LINUX_311)
    assert "pypm lock" in (e.value.hint or "")
