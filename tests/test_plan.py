"""Unit tests of pypm.plan: wheel choice by tag priority, the diff, and the printed plan."""

from __future__ import annotations

import pytest
from packaging import tags as ptags

from pypm.errors import InstallError, LockError
from pypm.lockfile import FileEntry, LockedPackage
from pypm.plan import KEEP_ALL, KEEP_FOREIGN, KEEP_NONE, Installed, Wanted, choose_file, format_plan, make_plan, refuse_unhashed

H = "a" * 64
LINUX = ["manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64", "linux_x86_64"]
CP311 = list(ptags.cpython_tags((3, 11), platforms=LINUX)) + list(ptags.compatible_tags((3, 11), "cp311", LINUX))
CP39 = list(ptags.cpython_tags((3, 9), platforms=LINUX)) + list(ptags.compatible_tags((3, 9), "cp39", LINUX))


def pkg(name: str, version: str, wheels: list[str], sdist: str | None = None, sha: str = H) -> LockedPackage:
    return LockedPackage(
        name=name, version=version, source={"registry": "http://127.0.0.1/simple/"},
        wheels=[FileEntry(w, f"http://127.0.0.1/files/{w}", sha) for w in wheels],
        sdist=FileEntry(sdist, f"http://127.0.0.1/files/{sdist}", sha) if sdist else None,
    )


def test_choose_prefers_the_most_specific_compatible_wheel() -> None:
    p = pkg("numpy", "2.0.0", [
        "numpy-2.0.0-py3-none-any.whl",
        "numpy-2.0.0-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
        "numpy-2.0.0-cp311-cp311-macosx_11_0_arm64.whl",
        "numpy-2.0.0-cp310-cp310-manylinux_2_17_x86_64.whl",
        "numpy-2.0.0-cp311-cp311-win_amd64.whl",
    ], sdist="numpy-2.0.0.tar.gz")
    kind, f = choose_file(p, CP311, "CPython 3.11")
    assert kind == "wheel"
    assert f.filename == "numpy-2.0.0-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl"


def test_choose_abi3_and_pure_fallbacks() -> None:
    p = pkg("c", "1", ["c-1-cp38-abi3-manylinux_2_17_x86_64.whl", "c-1-py3-none-any.whl"])
    assert choose_file(p, CP311, "x")[1].filename == "c-1-cp38-abi3-manylinux_2_17_x86_64.whl"
    p = pkg("c", "1", ["c-1-cp312-cp312-manylinux_2_17_x86_64.whl", "c-1-py3-none-any.whl"])
    assert choose_file(p, CP311, "x")[1].filename == "c-1-py3-none-any.whl"


def test_choose_higher_build_tag_wins_on_equal_tags() -> None:
    p = pkg("b", "1", ["b-1-1-py3-none-any.whl", "b-1-2-py3-none-any.whl", "b-1-py3-none-any.whl"])
    assert choose_file(p, CP311, "x")[1].filename == "b-1-2-py3-none-any.whl"


def test_no_wheel_falls_back_to_the_sdist() -> None:
    p = pkg("s", "1", ["s-1-cp311-cp311-win_amd64.whl"], sdist="s-1.tar.gz")
    assert choose_file(p, CP39, "CPython 3.9") == ("sdist", p.sdist)


def test_nothing_usable_names_package_interpreter_and_files() -> None:
    p = pkg("torch", "2.13.0", ["torch-2.13.0-cp311-cp311-manylinux_2_28_x86_64.whl"])
    with pytest.raises(InstallError) as e:
        choose_file(p, CP39, "CPython 3.9.18 at /usr/bin/python3.9")
    msg = str(e.value)
    assert "torch==2.13.0" in msg and "CPython 3.9.18 at /usr/bin/python3.9" in msg
    assert "torch-2.13.0-cp311-cp311-manylinux_2_28_x86_64.whl" in msg and "hint:" in msg


def test_bad_wheel_filenames_are_not_chosen() -> None:
    p = pkg("x", "1", ["not-a-wheel.whl"], sdist="x-1.tar.gz")
    assert choose_file(p, CP311, "x")[0] == "sdist"


def test_refuse_unhashed_names_package_and_fix() -> None:
    ok = pkg("good", "1", ["good-1-py3-none-any.whl"])
    todo = pkg("requests", "2.32.3", ["requests-2.32.3-py3-none-any.whl"], sha="TODO")
    missing = pkg("idna", "3.7", ["idna-3.7-py3-none-any.whl"], sha="")
    refuse_unhashed([ok])
    with pytest.raises(LockError) as e:
        refuse_unhashed([ok, todo, missing])
    msg = str(e.value)
    assert "requests==2.32.3" in msg and "idna==3.7" in msg and "good" not in msg.split("hint")[0]
    assert "pypm lock --refresh" in msg


def W(name: str, version: str, token: str = H, kind: str = "wheel") -> Wanted:
    return Wanted(name, version, kind, None if kind == "editable" else FileEntry(f"{name}.whl", "u", token), token)


def test_make_plan_diff() -> None:
    installed = [
        Installed("same", "1.0", H),
        Installed("old", "1.0", H),
        Installed("gone", "3.0", H),
        Installed("rebuilt", "1.0", "b" * 64),
        Installed("broken", "1.0", H, complete=False),
    ]
    wanted = [W("same", "1.0"), W("old", "2.0"), W("new", "0.1"), W("rebuilt", "1.0"), W("broken", "1.0")]
    plan = make_plan(installed, wanted)
    assert [w.name for w in plan.install] == ["new"]
    assert [i.name for i in plan.remove] == ["gone"]
    assert sorted((c.name, n.version) for c, n in plan.replace) == [("broken", "1.0"), ("old", "2.0"), ("rebuilt", "1.0")]
    assert [w.name for w in plan.unchanged] == ["same"]
    assert {w.name for w in plan.to_fetch()} == {"new", "old", "rebuilt", "broken"}
    assert not plan.is_noop


def test_make_plan_noop_and_names_are_canonical() -> None:
    plan = make_plan({"typing-extensions": Installed("typing_extensions", "4.0", H)}, [W("typing-extensions", "4.0")])
    assert plan.is_noop and len(plan.unchanged) == 1
    assert format_plan(plan).startswith("Nothing to do")


def test_editable_is_never_fetched() -> None:
    plan = make_plan([], [W("my-lib", "0.1.0", token="p" * 64, kind="editable"), W("a", "1")])
    assert [w.name for w in plan.to_fetch()] == ["a"]


def test_format_plan_lists_every_change() -> None:
    plan = make_plan([Installed("black", "24.4.2", H), Installed("idna", "3.6", H)],
                     [W("idna", "3.7"), W("s", "1", kind="sdist"), W("my-lib", "0.1", kind="editable")])
    text = format_plan(plan)
    assert "Would install 2, replace 1, remove 1; 0 unchanged." in text
    assert " + s==1 (build from source)" in text and " + my-lib==0.1 (editable)" in text
    assert " ~ idna==3.7 (3.6 -> 3.7)" in text and " - black==24.4.2" in text


def test_editable_with_a_build_time_version_is_judged_by_its_token() -> None:
    cur = Installed("my-lib", "0.1.dev3+g1234", "p" * 64)
    assert make_plan([cur], [W("my-lib", "0.1.0", token="p" * 64, kind="editable")]).is_noop
    plan = make_plan([cur], [W("my-lib", "0.1.0", token="q" * 64, kind="editable")])
    assert [n.name for _, n in plan.replace] == ["my-lib"]


@pytest.mark.parametrize("keep, removed, kept", [
    (KEEP_NONE, ["broken-foreign", "foreign", "ours"], []),
    (KEEP_FOREIGN, ["broken-foreign", "ours"], ["foreign"]),
    (KEEP_ALL, ["broken-foreign"], ["foreign", "ours"]),
])
def test_make_plan_keeps_what_it_is_told_to_keep(keep, removed, kept) -> None:
    """Not wanted: pypm's own (a token), another installer's (none), and a broken one of another
    installer's, which is never kept. A foreign dist with a wanted name is replaced in every mode."""
    installed = [Installed("ours", "1.0", H), Installed("foreign", "1.0", None),
                 Installed("broken-foreign", "1.0", None, complete=False), Installed("clash", "1.0", None)]
    plan = make_plan(installed, [W("clash", "1.0")], keep=keep)
    assert [i.name for i in plan.remove] == removed and [i.name for i in plan.kept] == kept
    assert [c.name for c, _ in plan.replace] == ["clash"]
    text = format_plan(plan)
    assert f"remove {len(removed)};" in text
    assert ("Kept, as the selection does not ask for them: " in text) == bool(kept)


def test_make_plan_refuses_an_unknown_keep_mode() -> None:
    with pytest.raises(ValueError, match="unknown keep mode"):
        make_plan([], [], keep="some")
