"""pypm.project: PEP 621/735 and [tool.pypm] parsing, errors, and the content hash."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from pypm.errors import ExitCode, ProjectError
from pypm.project import (
    SandboxConfig,
    content_hash,
    find_project_root,
    load_project,
    parse_pyproject,
    toml_error_location,
)

ROOT = Path("/proj")


def parse(extra: dict[str, Any] | None = None, **project: Any):
    data: dict[str, Any] = {"project": {"name": "demo", "version": "1.0", **project}}
    data.update(extra or {})
    return parse_pyproject(data, ROOT)


def error_of(extra: dict[str, Any] | None = None, **project: Any) -> str:
    with pytest.raises(ProjectError) as e:
        parse(extra, **project)
    assert e.value.exit_code == ExitCode.PROJECT
    return str(e.value)


# --------------------------------------------------------------------------- PEP 621

def test_minimal_project_is_virtual_with_defaults() -> None:
    p = parse()
    assert (p.name, p.version, p.requires_python, p.dependencies) == ("demo", "1.0", "", ())
    assert p.is_virtual and p.pyproject == ROOT / "pyproject.toml"
    assert p.tool.sandbox == SandboxConfig() and p.tool.index_url is None


def test_full_project() -> None:
    p = parse(
        {"build-system": {"requires": ["setuptools>=68"], "build-backend": "setuptools.build_meta"}},
        name="My.Lib", dependencies=['tomli>=2; python_version < "3.11"', "requests==2.32.3"],
        **{"requires-python": ">=3.9", "optional-dependencies": {"Heavy_Stuff": ["torch"]}},
    )
    assert p.normalized_name == "my-lib" and not p.is_virtual
    assert p.optional_dependencies == {"heavy-stuff": ("torch",)}
    assert p.requires_python == ">=3.9"


def test_dynamic_version() -> None:
    p = parse(version=None, dynamic=["version"])
    assert p.version is None and p.dynamic == ("version",)


@pytest.mark.parametrize("project, needle", [
    ({"name": "bad name"}, "`project.name` is 'bad name'"),
    ({"name": "x\n"}, "`project.name` is 'x\\n'"),  # was accepted: `$` matches before a final newline
    ({"name": None}, "`project.name`"),
    ({"version": None}, "`project.version` is missing"),
    ({"version": "one"}, "'one', not a PEP 440 version"),
    ({"version": 1}, "`project.version` is 1, not a string"),  # was accepted as "1"
    ({"requires-python": ">=>3"}, "`project.requires-python` is '>=>3'"),
    ({"requires-python": 3}, "must be a string"),
    ({"dependencies": "requests"}, "`project.dependencies` must be an array of strings"),
    ({"optional-dependencies": ["x"]}, "`project.optional-dependencies` must be a table"),
    ({"dynamic": "version"}, "`project.dynamic` must be an array of strings"),
])
def test_project_errors(project: dict[str, Any], needle: str) -> None:
    msg = error_of(**project)
    assert msg.startswith(str(ROOT / "pyproject.toml")) and needle in msg, msg


@pytest.mark.parametrize("extra, needle", [
    ({"tool": 5}, "`tool` must be a table"),  # was an internal AttributeError
    ({"tool": "pypm"}, "`tool` must be a table"),
    ({"build-system": {"requires": [], "build-backend": 1}}, "`build-system.build-backend` must be a string"),
    ({"build-system": {"requires": [], "backend-path": "."}}, "`build-system.backend-path` must be an array of strings"),
])
def test_top_level_tables_of_the_wrong_type(extra: dict[str, Any], needle: str) -> None:
    msg = error_of(extra)
    assert msg.startswith(str(ROOT / "pyproject.toml")) and needle in msg, msg


def test_no_project_table() -> None:
    with pytest.raises(ProjectError, match=r"has no \[project\] table") as e:
        parse_pyproject({"tool": {}}, ROOT)
    assert "pypm init" in (e.value.hint or "")


def test_invalid_pep508_is_quoted_back_with_the_key() -> None:
    msg = error_of(**{"optional-dependencies": {"x": ["ok", "requests >== 2"]}})
    assert "`project.optional-dependencies.x` holds an invalid PEP 508 requirement: 'requests >== 2'" in msg
    assert "hint:" in msg
    msg = error_of(dependencies=['foo; python_version <<< "3"'])
    assert "'foo; python_version <<< \"3\"'" in msg
    msg = error_of({"build-system": {"requires": ["set tools"]}})
    assert "`build-system.requires`" in msg and "'set tools'" in msg


@pytest.mark.parametrize("name", ["bad name!", "", "-x", "x-", "a b", "é", "x\n", ".x"])
def test_invalid_extra_name(name: str) -> None:
    # PEP 685: an extra name is a PEP 508 name; these were accepted silently.
    with pytest.raises(ProjectError) as e:
        parse(**{"optional-dependencies": {"ok": [], name: ["x"]}})
    msg = str(e.value)
    assert msg.startswith(str(ROOT / "pyproject.toml")), msg
    assert f"`project.optional-dependencies` has an invalid extra name {name!r}" in msg, msg
    assert "letters, digits" in (e.value.hint or "")


@pytest.mark.parametrize("names", [("Test", "test"), ("a_b", "a-b"), ("a.b", "A__B")])
def test_extras_whose_names_normalise_alike(names: tuple[str, str]) -> None:
    # Both used to be kept under one normalised key, the second silently replacing the first.
    msg = error_of(**{"optional-dependencies": {names[0]: ["x"], names[1]: ["y"]}})
    assert "`project.optional-dependencies` has two extras whose names differ only in case or punctuation" in msg
    assert f"{names[0]!r} and {names[1]!r}" in msg, msg


def test_valid_extra_names_are_normalised() -> None:
    p = parse(**{"optional-dependencies": {"X": [], "a.b-c_d": [], "Z9": [], "0": []}})
    assert set(p.optional_dependencies) == {"x", "a-b-c-d", "z9", "0"}


@pytest.mark.parametrize("dep", ["demo", "Demo>=1", "DEMO; python_version >= '3.9'", "demo[]", "demo @ file:///x"])
def test_a_project_depending_on_itself_is_refused(dep: str) -> None:
    with pytest.raises(ProjectError) as e:
        parse(dependencies=["requests", dep])
    msg = str(e.value)
    assert msg.startswith(str(ROOT / "pyproject.toml")), msg
    assert f"`project.dependencies` lists the project itself: {dep!r}" in msg, msg
    assert "remove it" in (e.value.hint or "")
    # Spelled differently from [project] name, still the same project.
    assert "lists the project itself" in error_of(name="My_Lib", dependencies=["my.lib>=1"])


def test_a_project_naming_itself_with_extras_is_a_recursive_extra() -> None:
    p = parse({"dependency-groups": {"dev": ["demo[test]", "black"], "self": ["demo"]}},
              name="Demo", dependencies=["demo[fast]"],
              **{"optional-dependencies": {"fast": ["ujson"], "test": ["pytest"], "all": ["DEMO[fast,test]"]}})
    assert p.dependencies == ("demo[fast]",)
    assert p.optional_dependencies["all"] == ("DEMO[fast,test]",)
    assert p.dependency_groups == {"dev": ("demo[test]", "black"), "self": ("demo",)}
    # A plain self-reference is only refused in [project] dependencies.
    assert parse(**{"optional-dependencies": {"x": ["demo"]}}).optional_dependencies == {"x": ("demo",)}


# --------------------------------------------------------------------------- PEP 735

def groups(raw: Any):
    return parse({"dependency-groups": raw}).dependency_groups


def test_groups_expand_includes_and_normalise_names() -> None:
    g = groups({
        "Dev": ["black", {"include-group": "test"}],
        "test": ["pytest", {"include-group": "Typing_Stuff"}],
        "typing-stuff": ["mypy"],
        "empty": [],
    })
    assert g == {"dev": ("black", "pytest", "mypy"), "test": ("pytest", "mypy"),
                 "typing-stuff": ("mypy",), "empty": ()}


@pytest.mark.parametrize("raw, needle", [
    ({"a": [{"include-group": "b"}], "b": [{"include-group": "a"}]}, "includes itself (a -> b -> a)"),
    ({"a": [{"include-group": "a"}]}, "includes itself (a -> a)"),
    ({"a": [{"include-group": "nope"}]}, "includes unknown group 'nope'"),
    ({"a": ["ok", "bad req ("]}, "`dependency-groups.a` holds an invalid PEP 508 requirement: 'bad req ('"),
    ({"a": [3]}, "entries are PEP 508 strings or {include-group"),
    ({"a": [{"include-group": "b", "x": 1}], "b": []}, "`dependency-groups.a` holds"),
    ({"a": "x"}, "`dependency-groups.a` must be an array"),
    (["a"], "`dependency-groups` must be a table"),
    ({"Dev": [], "dev": []}, "differ only in case"),
    ({"a_b": [], "A.b": []}, "`dependency-groups` has two groups whose names differ only in case or punctuation: "
                             "'a_b' and 'A.b'"),
])
def test_group_errors(raw: Any, needle: str) -> None:
    msg = error_of({"dependency-groups": raw})
    assert needle in msg, msg


@pytest.mark.parametrize("name", ["bad name!", "", "-x", "x_", "a/b", "x\n"])
def test_invalid_group_name(name: str) -> None:
    # PEP 735: a group name is a PEP 508 name; these were accepted silently.
    with pytest.raises(ProjectError) as e:
        groups({"ok": [], name: ["x"]})
    msg = str(e.value)
    assert msg.startswith(str(ROOT / "pyproject.toml")), msg
    assert f"`dependency-groups` has an invalid group name {name!r}" in msg, msg
    assert "letters, digits" in (e.value.hint or "")


# --------------------------------------------------------------------------- [tool.pypm]

def tool(raw: Any):
    return parse({"tool": {"pypm": raw}}).tool


def test_tool_table() -> None:
    t = tool({
        "index-url": "http://127.0.0.1:1/simple/", "extra-index-url": "http://127.0.0.1:2/simple/",
        "find-links": ["wheels", "/abs", "http://h/links"], "python": "3.11", "prerelease": "allow",
        "plugins": ["s3cache"], "plugin-path": ["plugins"], "trusted-keys": ["k.pub"],
        "s3cache": {"bucket": "b"}, "build": {"network": True},
        "sandbox": {"enabled": False, "network": "host", "bind": ["/a:/b"], "ro-bind": ["/c"],
                    "env": ["HOME", "X=1"], "profile": "strict", "writable-project": False},
    })
    assert t.extra_index_urls == ("http://127.0.0.1:2/simple/",)
    assert t.plugin_config == {"s3cache": {"bucket": "b"}}
    assert t.sandbox == SandboxConfig(False, "host", ("/a:/b",), ("/c",), ("HOME", "X=1"), "strict", False)
    p = parse({"tool": {"pypm": {"find-links": ["wheels", "/abs", "http://h/links"]}}})
    assert p.find_links_paths() == (str(Path("/proj/wheels").resolve()), "/abs", "http://h/links")


def test_sandbox_limits() -> None:
    """Sizes and durations in the units people write, sorted by name; "unlimited" sets none."""
    t = tool({"sandbox": {"limits": {"processes": 512, "memory": "2G", "cpu": "10m", "file-size": "512MiB",
                                     "open-files": "unlimited"}}})
    assert t.sandbox.limits == (("cpu", 600), ("file-size", 512 << 20), ("memory", 2 << 30), ("processes", 512))
    assert tool({}).sandbox.limits == ()
    assert tool({"build": {"limits": {"memory": "4G"}}}).build_limits == (("memory", 4 << 30),)


@pytest.mark.parametrize("raw, needle", [
    ({"index_url": "x", "colour": 1}, "`tool.pypm` has unknown key(s) colour, index_url"),
    ({"s3cache": {"bucket": "b"}}, "unknown key(s) s3cache"),  # a plugin table needs the plugin enabled
    ({"index-url": 3}, "`tool.pypm.index-url` must be a string"),
    ({"prerelease": "sometimes"}, "`tool.pypm.prerelease` is 'sometimes'"),
    ({"plugins": "s3cache"}, "`tool.pypm.plugins` must be an array of strings"),
    ({"build": []}, "`tool.pypm.build` must be a table"),
    # Was an internal TypeError in `pypm lock`/`run` (a list of non-strings), or accepted ("yes").
    ({"build": {"network": [1]}}, "`tool.pypm.build.network` is [1]; it must be true/false or a list"),
    ({"build": {"network": "yes"}}, "`tool.pypm.build.network` is 'yes'"),
    ({"build": {"netwrk": True}}, "`tool.pypm.build` has unknown key(s) netwrk"),
    ({"sandbox": []}, "`tool.pypm.sandbox` must be a table"),
    ({"sandbox": {"netwrk": "none"}}, "`tool.pypm.sandbox` has unknown key(s) netwrk"),
    ({"sandbox": {"network": "bridge"}}, "`tool.pypm.sandbox.network` is 'bridge'"),
    ({"sandbox": {"enabled": "yes"}}, "`tool.pypm.sandbox.enabled` must be true or false"),
    ({"sandbox": {"profile": ""}}, "`tool.pypm.sandbox.profile`"),
    ({"sandbox": {"bind": "/a"}}, "`tool.pypm.sandbox.bind` must be an array of strings"),
    ({"sandbox": {"writable-project": 1}}, "`tool.pypm.sandbox.writable-project` must be true or false"),
    # these used to reach the sandbox, which reported them as a flag nobody gave (`--env '=x'`)
    ({"sandbox": {"env": ["=x"]}}, "`tool.pypm.sandbox.env` holds '=x', which is not NAME or NAME=VALUE"),
    ({"sandbox": {"env": [""]}}, "`tool.pypm.sandbox.env` holds '', which is not NAME or NAME=VALUE"),
    ({"sandbox": {"env": ["A=\0"]}}, "`tool.pypm.sandbox.env` holds 'A=\\x00'"),
    ({"build": {"limits": {"memory": "2 gigs"}}}, "`tool.pypm.build.limits.memory` '2 gigs' is not a size"),
    ({"build": {"limits": []}}, "`tool.pypm.build.limits` must be a table"),
    ({"sandbox": {"limits": "2G"}}, "`tool.pypm.sandbox.limits` must be a table"),
    ({"sandbox": {"limits": {"ram": "2G"}}}, "`tool.pypm.sandbox.limits` has unknown limit 'ram'"),
    ({"sandbox": {"limits": {"memory": "2 gigs"}}}, "`tool.pypm.sandbox.limits.memory` '2 gigs' is not a size"),
    ({"sandbox": {"limits": {"memory": True}}}, "`tool.pypm.sandbox.limits.memory` True is not a number"),
    ({"sandbox": {"limits": {"cpu": "1d"}}}, "`tool.pypm.sandbox.limits.cpu` '1d' is not a duration"),
    ({"sandbox": {"limits": {"open-files": 0}}}, "`tool.pypm.sandbox.limits.open-files` 0 is below 1"),
    ({"sandbox": {"limits": {"processes": 1.5}}}, "`tool.pypm.sandbox.limits.processes` 1.5 is not a number"),
])
def test_tool_errors(raw: Any, needle: str) -> None:
    with pytest.raises(ProjectError) as e:
        tool(raw)
    assert needle in str(e.value), str(e.value)


def test_unknown_tool_key_hint_lists_known_keys() -> None:
    with pytest.raises(ProjectError) as e:
        tool({"indexurl": "x"})
    assert "index-url" in (e.value.hint or "") and "sandbox" in (e.value.hint or "")


# --------------------------------------------------------------------------- files

def test_load_project_reports_malformed_toml_with_line_and_column(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "x"\nversion = 1.0.0\n')
    with pytest.raises(ProjectError) as e:
        load_project(tmp_path)
    msg = str(e.value)
    assert msg.startswith(f"{tmp_path / 'pyproject.toml'}:3:") and "invalid TOML" in msg, msg
    assert "(at line" not in msg


def test_load_project_missing_and_not_utf8(tmp_path: Path) -> None:
    with pytest.raises(ProjectError, match="does not exist"):
        load_project(tmp_path)
    (tmp_path / "pyproject.toml").write_bytes(b'[project]\nname = "\xff"\n')
    with pytest.raises(ProjectError, match="not UTF-8"):
        load_project(tmp_path)


def test_find_project_root_walks_up(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "x"\nversion = "1"\n')
    deep = tmp_path / "a" / "b"
    deep.mkdir(parents=True)
    assert find_project_root(deep) == tmp_path.resolve()
    assert load_project(find_project_root(deep)).name == "x"


def test_find_project_root_none(tmp_path: Path) -> None:
    # tmp dirs live under /tmp; make sure no pyproject.toml sits above them for this test to mean much.
    if any((d / "pyproject.toml").exists() for d in tmp_path.parents):
        pytest.skip(f"a pyproject.toml exists above {tmp_path}")
    with pytest.raises(ProjectError, match="no pyproject.toml found") as e:
        find_project_root(tmp_path)
    assert "pypm init" in (e.value.hint or "")


def test_toml_error_location() -> None:
    import tomllib

    with pytest.raises(tomllib.TOMLDecodeError) as e:
        tomllib.loads("a = 1\nb = = 2\n")
    assert toml_error_location(e.value) == "2:5"
    assert toml_error_location(ValueError("nothing")) == ""


# --------------------------------------------------------------------------- content hash

OPTS = {"prerelease": None, "no-build": False, "exclude-newer": None}
SRCS = {"index-url": "http://127.0.0.1:1/simple/", "extra-index-urls": [], "find-links": []}


def base(**over: Any):
    proj = {"dependencies": ["b", "a>=1"], "optional-dependencies": {"x": ["c", "d"]},
            "requires-python": ">=3.9"}
    proj.update(over)
    return parse({"dependency-groups": {"dev": ["e", "f"]}}, **proj)


def test_content_hash_is_stable_and_ignores_order_and_unset_options() -> None:
    h = content_hash(base(), OPTS, SRCS)
    assert h.startswith("sha256:") and len(h) == 7 + 64
    assert content_hash(base(), OPTS, SRCS) == h
    assert content_hash(base(dependencies=["a>=1", "b"]), OPTS, SRCS) == h
    assert content_hash(base(), dict(reversed(list(OPTS.items()))), SRCS) == h
    assert content_hash(base(), {}, SRCS) == h  # None/False options are the defaults
    # Fields that do not affect resolution do not change it.
    assert content_hash(base(version="2.0", description="other"), OPTS, SRCS) == h
    assert content_hash(parse_pyproject({"project": {"name": "demo", "version": "1.0", **{
        "dependencies": ["b", "a>=1"], "optional-dependencies": {"x": ["d", "c"]},
        "requires-python": ">=3.9"}}, "dependency-groups": {"dev": ["f", "e"]}}, ROOT), OPTS, SRCS) == h


@pytest.mark.parametrize("change", [
    lambda: (base(dependencies=["b", "a>=2"]), OPTS, SRCS),
    lambda: (base(**{"requires-python": ">=3.10"}), OPTS, SRCS),
    lambda: (base(**{"optional-dependencies": {"x": ["c"]}}), OPTS, SRCS),
    lambda: (base(**{"optional-dependencies": {"y": ["c", "d"]}}), OPTS, SRCS),
    lambda: (parse({"dependency-groups": {"dev": ["e"]}}, dependencies=["b", "a>=1"],
                   **{"optional-dependencies": {"x": ["c", "d"]}, "requires-python": ">=3.9"}), OPTS, SRCS),
    lambda: (base(name="other"), OPTS, SRCS),
    lambda: (base(), {**OPTS, "prerelease": "allow"}, SRCS),
    lambda: (base(), {**OPTS, "no-build": True}, SRCS),
    lambda: (base(), OPTS, {**SRCS, "index-url": "http://127.0.0.1:2/simple/"}),
    lambda: (base(), OPTS, {**SRCS, "find-links": ["/w"]}),
])
def test_content_hash_changes_with_every_resolution_input(change) -> None:
    assert content_hash(*change()) != content_hash(base(), OPTS, SRCS)


def test_content_hash_covers_build_system_and_build_network() -> None:
    h = content_hash(base(), OPTS, SRCS)
    data = {"project": {"name": "demo", "version": "1.0", "dependencies": ["b", "a>=1"],
                        "optional-dependencies": {"x": ["c", "d"]}, "requires-python": ">=3.9"},
            "dependency-groups": {"dev": ["e", "f"]}}
    assert content_hash(parse_pyproject(data, ROOT), OPTS, SRCS) == h
    with_bs = parse_pyproject({**data, "build-system": {"requires": ["setuptools>=68"]}}, ROOT)
    assert content_hash(with_bs, OPTS, SRCS) != h
    net = parse_pyproject({**data, "tool": {"pypm": {"build": {"network": True}}}}, ROOT)
    assert content_hash(net, OPTS, SRCS) != h


def test_a_pyproject_that_is_a_directory_is_named(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").mkdir()
    (tmp_path / "sub").mkdir()
    with pytest.raises(ProjectError, match=r"pyproject.toml is not a file") as e:
        find_project_root(tmp_path / "sub")
    assert e.value.hint and "remove or rename" in e.value.hint
    with pytest.raises(ProjectError, match=r"cannot read .*pyproject.toml: Is a directory"):
        load_project(tmp_path)
    r = subprocess.run([sys.executable, "-m", "pypm", "sync"], cwd=tmp_path / "sub", capture_output=True, text=True,
                       env={**os.environ, "PIP_CONFIG_FILE": "/dev/null"})
    assert r.returncode == ExitCode.PROJECT and "pyproject.toml is not a file" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr


def test_a_start_directory_that_is_not_one_is_named(tmp_path: Path) -> None:
    with pytest.raises(ProjectError, match=r"missing does not exist") as e:
        find_project_root(tmp_path / "missing")
    assert "-C/--directory" in (e.value.hint or "")
    (tmp_path / "f").write_text("")
    with pytest.raises(ProjectError, match=r"/f is not a directory"):
        find_project_root(tmp_path / "f")
