"""pypm.interpreter: real interpreters queried once, tags equal to packaging's, discovery on PATH."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
from packaging import markers, tags

from pypm.errors import ProjectError, UsageError
from pypm.interpreter import compute_tags, find_interpreter, query_interpreter

PYENV = Path("/root/.pyenv/versions")


def pyenv(version: str) -> Path:
    exe = PYENV / version / "bin" / f"python{version.rsplit('.', 1)[0]}"
    if not os.access(exe, os.X_OK):
        pytest.skip(f"this test needs the interpreter {exe}, which is not on this machine")
    return exe


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PYPM_CACHE_DIR", str(tmp_path / "cache"))


def test_own_interpreter_matches_packaging_exactly():
    i = query_interpreter(sys.executable)
    assert i.version == tuple(sys.version_info[:3]) and i.implementation == "cpython"
    assert list(i.tags) == [str(t) for t in tags.sys_tags()]
    assert i.markers == markers.default_environment()
    assert i.cache_tag == sys.implementation.cache_tag
    assert i.venv_paths["purelib"] == f"lib/python{sys.version_info[0]}.{sys.version_info[1]}/site-packages"


def test_other_versions_get_their_own_tags_and_markers():
    i = query_interpreter(pyenv("3.8.18"))
    assert i.version == (3, 8, 18) and i.markers["python_version"] == "3.8"
    # The plain linux_<arch> tag ranks first or last depending on the packaging release.
    assert [t for t in i.tags if "-linux_" not in t][0].startswith("cp38-cp38-manylinux_2_")
    assert "cp38-abi3-manylinux2014_x86_64" in i.tags and "py3-none-any" in i.tags
    assert not any(t.startswith("cp311") for t in i.tags)
    j = query_interpreter(pyenv("3.12.1"))
    assert "cp312-abi3-linux_x86_64" in j.tags and "cp311-abi3-linux_x86_64" in j.tags


def test_wheel_rank_orders_by_tag_priority():
    i = query_interpreter(sys.executable)
    cp = f"cp{sys.version_info[0]}{sys.version_info[1]}"
    ranks = {fn: i.wheel_rank(fn) for fn in (
        f"x-1.0-{cp}-{cp}-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
        f"x-1.0-{cp}-abi3-manylinux_2_17_x86_64.whl",
        "x-1.0-py3-none-any.whl",
        f"x-1.0-{cp}-{cp}-win_amd64.whl",
        "x-1.0-cp27-cp27mu-manylinux1_x86_64.whl",
        "not-a-wheel.tar.gz")}
    order = [r for r in ranks.values()]
    assert order[0] is not None and order[1] is not None and order[2] is not None
    assert order[0] < order[1] < order[2]
    assert order[3] is None and order[4] is None and order[5] is None


def test_manylinux_and_musllinux_platforms_follow_the_targets_libc():
    raw = {"version": [3, 11, 0], "implementation": "cpython", "platform": "linux-x86_64", "maxsize_64": True,
           "glibc": "glibc 2.28", "executable": "/nonexistent"}
    t = [x for x in compute_tags(raw) if "-linux_" not in x]  # its rank varies by packaging release
    assert t[0] == "cp311-cp311-manylinux_2_28_x86_64"
    assert "cp311-cp311-manylinux2014_x86_64" in t and "cp311-cp311-manylinux1_x86_64" in t
    assert "cp311-cp311-manylinux_2_29_x86_64" not in t
    arm = [x for x in compute_tags({**raw, "platform": "linux-aarch64", "glibc": "glibc 2.17"}) if "-linux_" not in x]
    assert arm[0] == "cp311-cp311-manylinux_2_17_aarch64" and "cp311-cp311-manylinux2014_aarch64" in arm
    assert not any("manylinux2010" in x or "manylinux_2_16" in x for x in arm)
    free = [x for x in compute_tags({**raw, "version": [3, 13, 0], "gil_disabled": True}) if "-linux_" not in x]
    assert free[0] == "cp313-cp313t-manylinux_2_28_x86_64" and not any("-abi3-" in x for x in free)


def test_description_is_cached_and_keyed_by_the_executable(tmp_path):
    link = tmp_path / "bin" / "python3"
    link.parent.mkdir()
    link.symlink_to(sys.executable)
    first = query_interpreter(link)
    files = list((tmp_path / "cache" / "interpreters").glob("*.json"))
    assert len(files) == 1
    # prove the second answer comes from the cache file, not from running the interpreter
    raw = json.loads(files[0].read_text())
    raw["markers"]["platform_release"] = "from-the-cache"
    files[0].write_text(json.dumps(raw))
    assert query_interpreter(link).markers["platform_release"] == "from-the-cache"
    # re-pointing the path at another interpreter changes the key: asked afresh
    other = pyenv("3.12.1")
    link.unlink()
    link.symlink_to(other)
    again = query_interpreter(link)
    assert again.version[:2] == (3, 12) and again.version != first.version
    assert len(list((tmp_path / "cache" / "interpreters").glob("*.json"))) == 2


@pytest.mark.parametrize("damage", ["{not json", "[1, 2]", "null"])  # also valid JSON that is not an object
def test_a_broken_cache_file_is_ignored(tmp_path, damage):
    query_interpreter(sys.executable)
    for f in (tmp_path / "cache" / "interpreters").glob("*.json"):
        f.write_text(damage)
    assert query_interpreter(sys.executable).version == tuple(sys.version_info[:3])


@pytest.fixture
def fake_path(tmp_path, monkeypatch):
    """A PATH holding python3.8, python3.12 and python3 (-> 3.11) plus a broken python3.13 shim."""
    d = tmp_path / "pathbin"
    d.mkdir()
    (d / "python3.8").symlink_to(pyenv("3.8.18"))
    (d / "python3.12").symlink_to(pyenv("3.12.1"))
    (d / "python3").symlink_to(sys.executable)
    shim = d / "python3.13"
    shim.write_text("#!/bin/sh\necho 'python3.13: command not found' >&2\nexit 127\n")
    shim.chmod(0o755)
    monkeypatch.setenv("PATH", str(d))
    return d


def test_default_is_the_newest_on_path_that_satisfies_requires_python(fake_path):
    assert find_interpreter(None, ">=3.8").version[:2] == (3, 12)
    assert find_interpreter(None, ">=3.8,<3.12").version[:2] == (3, 11)
    assert find_interpreter(None, "<3.9").version[:2] == (3, 8)
    assert find_interpreter(None, None).version[:2] == (3, 12)


def test_requests_by_version_specifier_path_and_name(fake_path):
    assert find_interpreter("3.8", ">=3.8").version[:2] == (3, 8)
    assert find_interpreter("cpython3.12", None).version[:2] == (3, 12)
    assert find_interpreter(">=3.9,<3.12", None).version[:2] == (3, 11)
    assert find_interpreter(str(fake_path / "python3.8"), None).executable == fake_path / "python3.8"
    assert find_interpreter("python3.12", None).version[:2] == (3, 12)


def test_nothing_matching_lists_what_was_found(fake_path):
    with pytest.raises(ProjectError) as ei:
        find_interpreter(None, ">=3.14")
    msg = str(ei.value)
    assert ">=3.14" in msg and "Python 3.8.18" in msg and "Python 3.12.1" in msg
    assert "python3.13: exit status 127" in msg and ei.value.hint
    with pytest.raises(ProjectError, match="does not satisfy requires-python"):
        find_interpreter(str(fake_path / "python3.8"), ">=3.11")
    with pytest.raises(ProjectError, match="exit status 127"):
        find_interpreter(str(fake_path / "python3.13"), None)
    with pytest.raises(UsageError, match="no such interpreter"):
        find_interpreter("no-such-python", None)
    with pytest.raises(UsageError, match="not a valid version specifier"):
        find_interpreter(">=three", None)


def test_a_request_from_pyproject_is_reported_as_that_setting_not_as_a_flag(tmp_path):
    # [tool.pypm] python = "nonsense" used to be reported as `--python 'nonsense'`, a flag nobody gave
    pyproject = tmp_path / "pyproject.toml"
    cases = [("no-such-python", UsageError, "no such interpreter on PATH"),
             (">=three", UsageError, "not a valid version specifier"),
             (str(tmp_path / "nothing-here" / "python"), ProjectError, "cannot use"),
             (sys.executable, ProjectError, "does not satisfy requires-python")]
    for request, kind, what in cases:
        with pytest.raises(kind) as ei:
            find_interpreter(request, ">=3.99" if request == sys.executable else None, pyproject=pyproject)
        msg = str(ei.value)
        assert what in msg and f"[tool.pypm] python = {request!r} in {pyproject}" in msg, msg
        assert "--python" not in ei.value.message and "set [tool.pypm] python to" in (ei.value.hint or ""), msg
    with pytest.raises(UsageError) as ei:  # the flag's own wording is unchanged
        find_interpreter("no-such-python", None)
    assert "--python 'no-such-python'" in str(ei.value)


def test_sync_names_the_pyproject_setting_it_took_the_request_from(tmp_path):
    from pypm.project import load_project
    from pypm.selection import Selection
    from pypm.sync import SyncOptions, _interpreter

    (tmp_path / "pyproject.toml").write_text('[project]\nname = "p"\nversion = "1"\n\n'
                                             '[tool.pypm]\npython = "no-such-python"\n')
    project = load_project(tmp_path)
    with pytest.raises(UsageError, match=r"\[tool.pypm\] python = 'no-such-python' in .*pyproject.toml"):
        _interpreter(project, SyncOptions(selection=Selection()), tmp_path / ".venv")
    with pytest.raises(UsageError, match=r"^--python 'other-python'"):  # the flag wins, and is named
        _interpreter(project, SyncOptions(selection=Selection(), python="other-python"), tmp_path / ".venv")


def test_wrapper_scripts_are_queried_but_never_cached(fake_path, tmp_path):
    shim = fake_path / "python3.14"
    shim.write_text(f"#!/bin/sh\nexec {sys.executable} \"$@\"\n")
    shim.chmod(0o755)
    i = find_interpreter(str(shim), None)
    assert i.version == tuple(sys.version_info[:3])
    cached = [json.loads(f.read_text())["executable"] for f in (tmp_path / "cache" / "interpreters").glob("*.json")]
    assert str(shim) not in cached


def test_older_python3_x_are_not_even_asked_once_a_newer_one_fits(fake_path, tmp_path):
    assert find_interpreter(None, None).version[:2] == (3, 12)
    asked = {json.loads(f.read_text())["version"][1] for f in (tmp_path / "cache" / "interpreters").glob("*.json")}
    assert asked == {sys.version_info[1], 12}  # python3 and python3.12; python3.8 skipped


def _own_base() -> Path:
    base = Path(getattr(sys, "_base_executable", None) or sys.executable)
    if Path(os.path.realpath(base)).parent != Path(os.path.realpath(sys.base_prefix)) / "bin":
        pytest.skip(f"this test needs the running interpreter installed as <prefix>/bin/<name>; it is {base}")
    return base


def test_the_running_interpreter_is_described_in_process_exactly_as_the_subprocess_would(tmp_path):
    from pypm.interpreter import _own_answer, _run_query

    link_dir = tmp_path / "plain"
    link_dir.mkdir()
    (link_dir / "python3").symlink_to(_own_base())
    for path in (_own_base(), link_dir / "python3"):
        mine = _own_answer(path)
        assert mine is not None, path
        assert mine == _run_query(path)


def test_not_in_process_for_a_venv_another_python_or_pythonhome(tmp_path, monkeypatch):
    import subprocess

    from pypm.interpreter import _own_answer

    venv = tmp_path / "venv"
    subprocess.run([str(_own_base()), "-m", "venv", "--without-pip", str(venv)], check=True)
    assert _own_answer(venv / "bin" / "python") is None  # a venv's python: its prefix is the venv
    assert _own_answer(pyenv("3.12.1")) is None  # another binary
    assert _own_answer(_own_base()) is not None
    monkeypatch.setenv("PYTHONHOME", sys.base_prefix)
    assert _own_answer(_own_base()) is None  # the subprocess runs without it; this process did not



@pytest.mark.parametrize("answer", ["[]", "42", "{}", '{"version": [3, 11, 0]}', ""])
def test_a_program_that_prints_something_else_is_refused_with_a_clear_error(tmp_path, answer):
    # Exit status 0 and valid JSON (or nothing), but not the query's answer: a ProjectError
    # naming the file and the fix, never a TypeError/KeyError traceback; nothing is cached.
    fake = tmp_path / "python3"
    fake.write_text(f"#!/bin/sh\necho '{answer}'\n")
    fake.chmod(0o755)
    with pytest.raises(ProjectError) as e:
        query_interpreter(fake)
    assert "did not answer the query" in str(e.value) and str(fake) in str(e.value)
    assert "--python" in (e.value.hint or "")
    assert not list((tmp_path / "cache").rglob("*.json"))


def test_a_wrapper_is_asked_once_per_process(tmp_path, monkeypatch):
    """A pyenv shim is started once per process, however often pypm looks for an interpreter (a
    lock reading several legacy sdists' metadata looks once per sdist); a failing one too."""
    d = tmp_path / "shims"
    d.mkdir()
    log = tmp_path / "asked.log"
    good, bad = d / "python3.11", d / "python3.13"
    good.write_text(f"#!/bin/sh\necho good >> {log}\nexec {sys.executable} \"$@\"\n")
    bad.write_text(f"#!/bin/sh\necho bad >> {log}\necho 'python3.13: command not found' >&2\nexit 127\n")
    for s in (good, bad):
        s.chmod(0o755)
    monkeypatch.setenv("PATH", str(d))
    for _ in range(3):
        assert find_interpreter(None, None).executable == good
        assert find_interpreter("3.11", ">=3.8").executable == good
        with pytest.raises(ProjectError, match="python3.13 as the target interpreter: exit status 127"):
            find_interpreter(str(bad), None)
        with pytest.raises(ProjectError, match="python3.13: exit status 127"):  # (listed as found)
            find_interpreter(None, ">=3.99")
    assert sorted(log.read_text().split()) == ["bad", "good"]
    # a binary (no #!) is not kept in memory: its answer is on disk, keyed by its size and mtime
    import pypm.interpreter as interpreter

    assert str(good) in interpreter._WRAPPED and str(bad) in interpreter._WRAPPED
    query_interpreter(sys.executable)
    assert sys.executable not in interpreter._WRAPPED and os.path.realpath(sys.executable) not in interpreter._WRAPPED
