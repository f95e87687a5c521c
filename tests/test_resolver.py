"""The resolver core against an in-memory finder: markers, extras, groups, forks, conflicts, pins."""

from __future__ import annotations

from typing import Any, Iterable

import pytest

from pypm.errors import ResolutionError
from pypm.index import CoreMetadata, DistFile
from pypm.markers import Universe
from pypm.resolver import ResolveOptions, RootSpec, resolve


class MemFinder:
    """Releases as plain data: {name: {version: {"deps": [...], "rp": ..., "yanked": ..., "tags": [...]}}}."""

    def __init__(self, releases: dict[str, dict[str, dict[str, Any]]]) -> None:
        self.releases = releases
        self.metadata_calls: list[str] = []
        self.prefetched: list[str] = []

    def project_files(self, name: str) -> list[DistFile]:
        if name not in self.releases:
            from pypm.index import PackageNotFound

            raise PackageNotFound(f"Package `{name}` was not found in memory")
        out = []
        for v, info in self.releases[name].items():
            for tag in info.get("tags", ["py3-none-any"]):
                fn = f"{name.replace('-', '_')}-{v}-{tag}.whl"
                out.append(DistFile(name=name, version=v, filename=fn, url=f"mem://{fn}", kind="wheel",
                                    sha256="0" * 64, size=1, requires_python=info.get("file_rp", info.get("rp")),
                                    yanked=info.get("yanked"), metadata_sha256=None, has_metadata=True,
                                    upload_time=info.get("time"), source=("registry", "mem://")))
            if info.get("sdist"):
                fn = f"{name}-{v}.tar.gz"
                out.append(DistFile(name=name, version=v, filename=fn, url=f"mem://{fn}", kind="sdist",
                                    sha256="1" * 64, size=1, requires_python=info.get("rp"), yanked=None,
                                    metadata_sha256=None, has_metadata=False, upload_time=None,
                                    source=("registry", "mem://")))
        return out

    def metadata(self, f: DistFile) -> CoreMetadata:
        self.metadata_calls.append(f"{f.name}=={f.version}")
        info = self.releases[f.name][f.version]
        return CoreMetadata(name=f.name, version=f.version, requires_dist=tuple(info.get("deps", ())),
                            requires_python=info.get("rp"), provides_extra=())

    def prefetch(self, names: Iterable[str]) -> None:
        self.prefetched += list(names)

    def prefetch_metadata(self, files: Iterable[DistFile]) -> None:
        for f in files:
            self.prefetched.append(f.filename)


def root(deps=(), rp=">=3.9", optional=None, groups=None) -> RootSpec:
    return RootSpec(name="proj", requires_python=rp, dependencies=list(deps),
                    optional_dependencies=optional or {}, dependency_groups=groups or {})


def same(a: str | None, b: str | None) -> bool:
    u = Universe(">=3.9")
    return u.bits(a) == u.bits(b)


def pins(res) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for (n, v) in sorted(res.nodes):
        out.setdefault(n, []).append(v)
    return out


def test_conditional_dependency_keeps_its_marker_and_requires_python_prunes():
    f = MemFinder({"requests": {"2.32.3": {"deps": ["idna>=2.5"]}}, "idna": {"3.7": {}},
                   "tomli": {"2.0.1": {}}, "ancient": {"1.0": {}}})
    res = resolve(f, root(["requests==2.32.3", 'tomli>=2; python_version < "3.11"',
                           'ancient; python_version < "3.8"']))
    assert pins(res) == {"idna": ["3.7"], "requests": ["2.32.3"], "tomli": ["2.0.1"]}
    assert res.nodes[("tomli", "2.0.1")].marker == 'python_version < "3.11"'
    assert res.nodes[("idna", "3.7")].marker is None
    assert {(e.name, e.marker) for e in res.root_dependencies} == {("requests", None),
                                                                   ("tomli", 'python_version < "3.11"')}
    assert "ancient" not in f.prefetched  # false everywhere under requires-python: never even looked up
    assert res.forks == []


def test_markers_propagate_along_paths_and_are_or_of_paths():
    f = MemFinder({"a": {"1.0": {"deps": ['c; sys_platform == "win32"']}},
                   "b": {"1.0": {"deps": ['c; python_version < "3.10"']}},
                   "c": {"1.0": {"deps": ['d; sys_platform == "win32"']}}, "d": {"1.0": {}}})
    res = resolve(f, root(["a", 'b; sys_platform == "linux"']))
    assert same(res.nodes[("c", "1.0")].marker,
                'python_version < "3.10" and sys_platform == "linux" or sys_platform == "win32"')
    # d: c's edge is win32-only, and c is on win32 only through a.
    assert res.nodes[("d", "1.0")].marker == 'sys_platform == "win32"'


def test_extras_become_optional_dependencies_without_extra_markers():
    f = MemFinder({"a": {"1.0": {"deps": ["base-dep", 'b>=1; extra == "x"',
                                          'c; extra == "x" and sys_platform == "win32"']}},
                   "b": {"1.0": {}, "2.0": {}}, "c": {"1.0": {}}, "base-dep": {"1.0": {}}})
    res = resolve(f, root(["a[x]"]))
    a = res.nodes[("a", "1.0")]
    assert [(e.name, e.marker) for e in a.dependencies] == [("base-dep", None)]
    assert [(e.name, e.version, e.marker) for e in a.optional_dependencies["x"]] == \
        [("b", "2.0", None), ("c", "1.0", 'sys_platform == "win32"')]
    assert res.root_dependencies[0].extras == ("x",)
    assert res.nodes[("c", "1.0")].marker == 'sys_platform == "win32"'
    for n in res.nodes.values():
        for e in n.dependencies + [e for es in n.optional_dependencies.values() for e in es]:
            assert "extra" not in (e.marker or "")


def test_unrequested_extra_is_not_resolved():
    f = MemFinder({"a": {"1.0": {"deps": ['b; extra == "x"']}}})
    res = resolve(f, root(["a"]))
    assert pins(res) == {"a": ["1.0"]}


def test_groups_and_project_extras_are_recorded_per_package():
    f = MemFinder({"pytest": {"8.0.2": {"deps": ['colorama; sys_platform == "win32"']}},
                   "colorama": {"0.4.6": {}}, "torch": {"2.0": {}}, "req": {"1.0": {}}})
    res = resolve(f, root(["req"], optional={"heavy": ["torch"]}, groups={"dev": ["pytest==8.0.2"]}))
    assert res.nodes[("pytest", "8.0.2")].groups == {"dev"} and not res.nodes[("pytest", "8.0.2")].main
    assert res.nodes[("colorama", "0.4.6")].groups == {"dev"}
    assert res.nodes[("torch", "2.0")].extras == {"heavy"} and not res.nodes[("torch", "2.0")].main
    assert res.nodes[("req", "1.0")].main
    assert [e.name for e in res.root_groups["dev"]] == ["pytest"]
    assert [e.name for e in res.root_optional["heavy"]] == ["torch"]


def test_backtracking_finds_older_release():
    f = MemFinder({"a": {"1.0": {}, "2.0": {"deps": ["b<2"]}}, "b": {"1.0": {}, "2.0": {}}})
    res = resolve(f, root(["a", "b>=2"]))
    assert pins(res) == {"a": ["1.0"], "b": ["2.0"]}


def test_fork_on_disjoint_markers_gives_two_versions():
    f = MemFinder({"numpy": {"1.26.4": {"rp": ">=3.9"}, "2.1.0": {"rp": ">=3.10"}}})
    res = resolve(f, root(['numpy<2; python_version < "3.10"', 'numpy>=2; python_version >= "3.10"']))
    assert pins(res) == {"numpy": ["1.26.4", "2.1.0"]}
    assert res.nodes[("numpy", "1.26.4")].marker == 'python_version < "3.10"'
    assert res.nodes[("numpy", "2.1.0")].marker == 'python_version >= "3.10"'
    assert res.forks == ['python_version < "3.10"', 'python_version >= "3.10"']
    assert sorted((e.version, e.marker) for e in res.root_dependencies) == [
        ("1.26.4", 'python_version < "3.10"'), ("2.1.0", 'python_version >= "3.10"')]


def test_fork_per_platform_in_a_transitive_dependency():
    f = MemFinder({"a": {"1.0": {"deps": ['b==1.0; sys_platform == "win32"', 'b==2.0; sys_platform != "win32"']}},
                   "b": {"1.0": {}, "2.0": {"deps": ["c"]}}, "c": {"1.0": {}}})
    res = resolve(f, root(["a"]))
    assert pins(res) == {"a": ["1.0"], "b": ["1.0", "2.0"], "c": ["1.0"]}
    assert res.nodes[("c", "1.0")].marker == 'sys_platform != "win32"'
    deps = {(e.version, e.marker) for e in res.nodes[("a", "1.0")].dependencies}
    assert deps == {("1.0", 'sys_platform == "win32"'), ("2.0", 'sys_platform != "win32"')}


def test_release_requires_python_must_cover_the_branch():
    f = MemFinder({"b": {"2.0": {"rp": ">=3.9"}, "3.0": {"rp": ">=3.12"}}})
    assert pins(resolve(f, root(["b"]))) == {"b": ["2.0"]}
    # Metadata-only Requires-Python (the index gave none for the file) is honoured too.
    f = MemFinder({"b": {"2.0": {"rp": ">=3.9", "file_rp": None}, "3.0": {"rp": ">=3.12", "file_rp": None}}})
    assert pins(resolve(f, root(["b"]))) == {"b": ["2.0"]}
    # In a branch narrowed by a marker, the newer release fits.
    f = MemFinder({"b": {"2.0": {"rp": ">=3.9"}, "3.0": {"rp": ">=3.12"}}})
    assert pins(resolve(f, root(['b; python_version >= "3.12"']))) == {"b": ["3.0"]}


def test_yanked_only_when_pinned():
    f = MemFinder({"a": {"1.0": {}, "2.0": {"yanked": "broken"}}})
    assert pins(resolve(f, root(["a"]))) == {"a": ["1.0"]}
    assert pins(resolve(f, root(["a==2.0"]))) == {"a": ["2.0"]}


def test_prereleases():
    f = MemFinder({"a": {"1.0": {}, "2.0b1": {}}, "onlypre": {"1.0a1": {}}})
    assert pins(resolve(f, root(["a"]))) == {"a": ["1.0"]}
    assert pins(resolve(f, root(["a>=2.0b1"]))) == {"a": ["2.0b1"]}
    assert pins(resolve(f, root(["onlypre"]))) == {"onlypre": ["1.0a1"]}
    assert pins(resolve(f, root(["a"]), ResolveOptions(prerelease="allow")))["a"] == ["2.0b1"]
    with pytest.raises(ResolutionError):
        resolve(f, root(["onlypre"]), ResolveOptions(prerelease="disallow"))


def test_wheels_only_for_other_platforms_still_count_somewhere():
    f = MemFinder({"winonly": {"1.0": {"tags": ["cp311-cp311-win_amd64"]}},
                   "i686": {"1.0": {}, "2.0": {"tags": ["cp311-cp311-manylinux_2_17_i686"]}}})
    res = resolve(f, root(["winonly", "i686"]))
    assert pins(res) == {"i686": ["1.0"], "winonly": ["1.0"]}


def test_conflict_names_the_chain():
    f = MemFinder({"a": {"1.0": {"deps": ["b<2"]}}, "b": {"1.0": {}, "2.0": {}}})
    with pytest.raises(ResolutionError) as ei:
        resolve(f, root(["a==1.0", "b>=2"]))
    msg = str(ei.value)
    assert "proj depends on a==1.0; a 1.0 depends on b<2" in msg
    assert "proj depends on b>=2" in msg
    assert "versions of b available: 1.0, 2.0" in msg


def test_no_matching_version_lists_what_exists_and_why_excluded():
    f = MemFinder({"a": {"1.0": {}, "2.0": {"yanked": ""}, "3.0": {"rp": ">=3.13"}}})
    with pytest.raises(ResolutionError) as ei:
        resolve(f, root(["a>=2"]))
    msg = str(ei.value)
    assert "proj depends on a>=2" in msg and "2.0 is yanked" in msg and "3.0 requires Python >=3.13" in msg


def test_keeps_preferred_pins_and_upgrades_when_asked():
    f = MemFinder({"a": {"1.0": {}, "2.0": {}}, "b": {"1.0": {}, "2.0": {}}})
    prefs = {"a": ["1.0"], "b": ["1.0"]}
    assert pins(resolve(f, root(["a", "b"]), ResolveOptions(preferences=prefs))) == {"a": ["1.0"], "b": ["1.0"]}
    only_b = {"a": ["1.0"]}  # --upgrade-package b: b's pin is not a preference
    assert pins(resolve(f, root(["a", "b"]), ResolveOptions(preferences=only_b))) == {"a": ["1.0"], "b": ["2.0"]}
    # A preference that no longer satisfies the requirement is ignored.
    assert pins(resolve(f, root(["a>=2", "b"]), ResolveOptions(preferences=prefs)))["a"] == ["2.0"]


def test_project_extra_including_itself():
    f = MemFinder({"x": {"1.0": {}}, "y": {"1.0": {}}})
    res = resolve(f, root([], optional={"one": ["x"], "all": ["proj[one]", "y"]}))
    assert res.nodes[("x", "1.0")].extras == {"one", "all"}


def test_inexact_marker_is_kept_verbatim_on_the_edge():
    f = MemFinder({"a": {"1.0": {}}})
    res = resolve(f, root(['a; platform_release >= "5"']))
    assert res.root_dependencies[0].marker == 'platform_release >= "5"'


def test_no_binary_no_build_and_exclude_newer():
    from datetime import datetime, timezone

    f = MemFinder({"a": {"1.0": {"sdist": True}, "2.0": {}}, "b": {"1.0": {}, "2.0": {"sdist": True, "tags": []}}})
    assert pins(resolve(f, root(["a", "b"]), ResolveOptions(no_binary=True))) == {"a": ["1.0"], "b": ["2.0"]}
    assert pins(resolve(f, root(["a", "b"]), ResolveOptions(no_build=True))) == {"a": ["2.0"], "b": ["1.0"]}
    res = resolve(f, root(["a"]), ResolveOptions(no_build=True))
    assert [x.kind for x in res.nodes[("a", "2.0")].files] == ["wheel"]

    f = MemFinder({"a": {"1.0": {"time": "2024-01-01T00:00:00Z"}, "2.0": {"time": "2024-06-01T00:00:00Z"}}})
    cutoff = datetime(2024, 3, 1, tzinfo=timezone.utc)
    assert pins(resolve(f, root(["a"]), ResolveOptions(exclude_newer=cutoff))) == {"a": ["1.0"]}


def test_metadata_is_prefetched_per_round():
    f = MemFinder({"a": {"1.0": {"deps": ["b", "c"]}}, "b": {"1.0": {}}, "c": {"1.0": {}}})
    resolve(f, root(["a"]))
    assert {"b", "c"} <= set(f.prefetched)  # project pages of a's dependencies, together
    assert "b-1.0-py3-none-any.whl" in f.prefetched and "c-1.0-py3-none-any.whl" in f.prefetched


def test_unknown_package_error_passes_through():
    from pypm.index import PackageNotFound

    with pytest.raises(PackageNotFound):
        resolve(MemFinder({}), root(["nope"]))


def test_dependencies_inherit_the_scope_of_what_needs_them():
    # heavy is only needed on 3.11, so its dependency may require Python >= 3.10 (as torch's do).
    f = MemFinder({"heavy": {"1.0": {"deps": ["dep"]}}, "dep": {"1.0": {"rp": ">=3.10"}}})
    res = resolve(f, root(['heavy; python_version == "3.11"']))
    assert res.nodes[("dep", "1.0")].marker == 'python_version == "3.11"'


def test_a_package_needed_more_widely_later_is_pinned_again_for_the_wider_scope():
    f = MemFinder({"a": {"1.0": {"deps": ['foo; python_version < "3.10"']}},
                   "b": {"1.0": {"deps": ["zzz"]}}, "zzz": {"1.0": {"deps": ["foo"]}},
                   "foo": {"1.0": {"deps": ['bar; python_version >= "3.12"']}}, "bar": {"1.0": {}}})
    res = resolve(f, root(["a", "b"]))
    assert res.nodes[("foo", "1.0")].marker is None
    assert res.nodes[("bar", "1.0")].marker == 'python_version >= "3.12"'


def test_conflict_between_disjoint_requirements_of_different_packages_forks():
    f = MemFinder({"a": {"1.0": {"deps": ['c<2; sys_platform == "win32"']}},
                   "b": {"1.0": {"deps": ['c>=2; sys_platform != "win32"']}}, "c": {"1.0": {}, "2.0": {}}})
    res = resolve(f, root(["a", "b"]))
    assert pins(res) == {"a": ["1.0"], "b": ["1.0"], "c": ["1.0", "2.0"]}
    assert res.nodes[("c", "1.0")].marker == 'sys_platform == "win32"'
    assert res.nodes[("c", "2.0")].marker == 'sys_platform != "win32"'
    assert len(res.forks) == 2


def test_missing_transitive_package_says_which_chain_needs_it():
    from pypm.index import PackageNotFound

    f = MemFinder({"a": {"1.0": {"deps": ["b"]}}, "b": {"1.0": {"deps": ["ghost>=1"]}}})
    with pytest.raises(PackageNotFound) as ei:
        resolve(f, root(["a"]))
    assert "needed because proj depends on a; a 1.0 depends on b; b 1.0 depends on ghost>=1" in str(ei.value)


def test_options_that_exclude_every_file_are_named():
    f = MemFinder({"s": {"1.0": {"sdist": True, "tags": []}}})
    with pytest.raises(ResolutionError) as ei:
        resolve(f, root(["s"]), ResolveOptions(no_build=True))
    assert "1.0 (sdists refused by --no-build)" in str(ei.value)


class ReleasesFinder(MemFinder):
    """MemFinder serving releases grouped as IndexClient does, recording which releases' files were built."""

    def __init__(self, releases: dict[str, dict[str, dict[str, Any]]]) -> None:
        super().__init__(releases)
        self.built: set[str] = set()

    def project_releases(self, name: str) -> Any:
        from pypm.simpleapi import Releases

        finder = self

        class Recording(Releases):
            def files(self, version: str) -> list[DistFile]:
                finder.built.add(f"{self.name}=={version}")
                return super().files(version)

        rel = Recording(name)
        rel.add_files(self.project_files(name))
        return rel


def test_only_the_releases_the_resolver_visits_are_built():
    many: dict[str, dict[str, Any]] = {f"{i}.0": {} for i in range(1, 41)}
    world: dict[str, dict[str, dict[str, Any]]] = {"a": {**many, "40.0": {"deps": ["b<39"]}, "41.0rc1": {}}, "b": dict(many)}
    f = ReleasesFinder(world)
    res = resolve(f, root(["a"]))
    assert pins(res) == pins(resolve(MemFinder(world), root(["a"]))) == {"a": ["40.0"], "b": ["38.0"]}
    # Newest first, stopping at the first usable one: b 40.0 and 39.0 fail the specifier unbuilt.
    assert f.built == {"a==40.0", "b==38.0"}


@pytest.mark.parametrize("reqs", [["a>=2"], ["a==3.1"], ["a>=4"]])
def test_lazy_releases_explain_failures_as_before(reqs):
    world: dict[str, dict[str, dict[str, Any]]] = {"a": {"1.0": {}, "2.0": {"yanked": ""}, "3.0": {"rp": ">=3.13"}, "3.1": {"tags": ["cp27-cp27m-win32"]}}}
    msgs = []
    for finder in (MemFinder(world), ReleasesFinder(world)):
        with pytest.raises(ResolutionError) as ei:
            resolve(finder, root(reqs))
        msgs.append(str(ei.value))
    assert msgs[0] == msgs[1]
    if reqs == ["a>=2"]:
        assert "2.0 is yanked" in msgs[1] and "3.0 requires Python >=3.13" in msgs[1]
        assert "3.1 has no file for these platforms" in msgs[1]


class AheadFinder(ReleasesFinder):
    """ReleasesFinder with the index client's in_background, running each job at once (in order)."""

    def __init__(self, releases: dict[str, dict[str, dict[str, Any]]]) -> None:
        super().__init__(releases)
        self.pages: list[str] = []
        self.ahead_calls: list[str] = []

    def project_releases(self, name: str) -> Any:
        self.pages.append(name)
        return super().project_releases(name)

    def in_background(self, job: Any) -> None:
        self.ahead, outer = True, getattr(self, "ahead", False)
        try:
            job()
        finally:
            self.ahead = outer

    def metadata(self, f: DistFile) -> CoreMetadata:
        if getattr(self, "ahead", False):
            self.ahead_calls.append(f"{f.name}=={f.version}")
        return super().metadata(f)


def test_lookahead_fetches_the_likely_pins_and_their_dependencies_ahead():
    world: dict[str, dict[str, dict[str, Any]]] = {
        "a": {"1.0": {}, "2.0": {"deps": ["b[x]>=1", 'old; python_version < "3.8"', "c<2"]}, "3.0rc1": {}},
        "b": {"1.0": {"deps": ['d; extra == "x"', 'e; extra == "y"']}},
        "c": {"1.0": {}, "2.0": {}}, "d": {"1.0": {}}, "e": {"1.0": {}}, "old": {"1.0": {}},
    }
    f = AheadFinder(world)
    res = resolve(f, root(["a"]))
    assert pins(res) == pins(resolve(MemFinder(world), root(["a"])))
    # The look-ahead's guesses (newest final release, the requirement's range, its extras, markers
    # false everywhere skipped) are the resolver's picks: no metadata asked for beyond them.
    assert set(f.ahead_calls) == {"a==2.0", "b==1.0", "c==1.0", "d==1.0"}
    assert set(f.metadata_calls) == set(f.ahead_calls)
    assert "old" not in f.pages and "e" not in f.pages


def test_lookahead_errors_are_left_to_the_resolver():
    from pypm.index import PackageNotFound

    f = AheadFinder({"a": {"1.0": {"deps": ["ghost"]}}})
    with pytest.raises(PackageNotFound) as ei:
        resolve(f, root(["a"]))
    assert "needed because proj depends on a; a 1.0 depends on ghost" in str(ei.value)


def test_metadata_file_is_the_host_wheel_and_is_remembered_per_file_list() -> None:
    import os
    import sys

    from packaging.version import Version

    from pypm.resolver import Cand, _State

    py = f"cp{sys.version_info[0]}{sys.version_info[1]}"
    host_tag = f"{py}-{py}-manylinux_2_17_{os.uname().machine}"
    finder = MemFinder({"gamma": {"1.0": {"tags": [f"{py}-{py}-macosx_11_0_arm64", host_tag, "py3-none-any"]}}})
    for f in finder.project_files("gamma"):
        object.__setattr__(f, "has_metadata", False)
    files = tuple(finder.project_files("gamma"))
    state = _State(finder, Universe(">=3.0"), ResolveOptions())
    c = Cand("gamma", Version("1.0"), "", files)
    pick = state._metadata_file_of(c)
    if sys.platform == "linux":
        assert pick.filename.endswith(f"{host_tag}.whl")
    assert state._metadata_file_of(Cand("gamma", Version("1.0"), "", files)) is pick
    # Another list for the same release (another branch's files) is ranked afresh.
    others = tuple(f for f in files if f is not pick)
    assert state._metadata_file_of(Cand("gamma", Version("1.0"), "", others)) in others
