"""pypm.scaffold: the pyproject.toml `pypm init` writes is valid, and init never overwrites."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from pypm.errors import ProjectError
from pypm.project import SandboxConfig, load_project, parse_pyproject
from pypm.scaffold import init_project, render_pyproject


@pytest.mark.parametrize("name", ["demo", "My.Lib", "a", "x_y-z", "pkg9"])
def test_rendered_pyproject_parses_as_a_virtual_project(name: str, tmp_path: Path) -> None:
    data = tomllib.loads(render_pyproject(name))
    p = parse_pyproject(data, tmp_path)
    assert p.name == name and p.version == "0.1.0" and p.requires_python == ">=3.9"
    assert p.is_virtual and p.dependencies == () and p.dependency_groups == {"dev": ()}
    assert p.tool.sandbox == SandboxConfig(enabled=True, network="none", writable_project=True)


def test_uncommenting_build_system_makes_it_installable(tmp_path: Path) -> None:
    text = render_pyproject("My.Lib", requires_python=">=3.11")
    lines = text.splitlines()
    start = lines.index("# [build-system]")
    for i in range(start, start + 3):
        lines[i] = lines[i][2:]
    p = parse_pyproject(tomllib.loads("\n".join(lines)), tmp_path)
    assert p.build_system is not None
    assert not p.is_virtual and p.build_system["build-backend"] == "setuptools.build_meta"
    assert p.requires_python == ">=3.11"
    assert "src/my_lib/" in text  # where the comment tells the user to put the code


def test_init_project_s_requires_python_is_this_interpreter_s_minor(tmp_path: Path) -> None:
    import sys

    target = init_project(tmp_path / "p")
    assert load_project(target.parent).requires_python == f">={sys.version_info[0]}.{sys.version_info[1]}"
    target = init_project(tmp_path / "q", kind="lib")
    assert load_project(target.parent).requires_python == f">={sys.version_info[0]}.{sys.version_info[1]}"


def test_init_project_writes_and_refuses_to_overwrite(tmp_path: Path) -> None:
    target = init_project(tmp_path / "new" / "proj")
    assert target == tmp_path / "new" / "proj" / "pyproject.toml"
    assert load_project(target.parent).name == "proj"
    target.write_text("# mine\n")
    with pytest.raises(ProjectError, match="already exists") as e:
        init_project(target.parent, name="other")
    assert e.value.hint and target.read_text() == "# mine\n"


@pytest.mark.parametrize("name", ["bad name", "-lead", "trail-", "ü", ""])
def test_init_rejects_invalid_names_without_writing(tmp_path: Path, name: str) -> None:
    with pytest.raises(ProjectError) as e:
        init_project(tmp_path, name=name or None) if name else init_project(tmp_path / "üö")  # (no valid name in it)
    assert "not a valid project name" in str(e.value) and "--name" in (e.value.hint or "")
    assert list(tmp_path.iterdir()) == []  # not even the directory


def test_init_where_the_directory_cannot_be_made_is_a_project_error(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("x")  # a file in the way (root ignores permission bits)
    with pytest.raises(ProjectError, match=r"cannot create the directory .*afile/proj") as e:
        init_project(tmp_path / "afile" / "proj")
    assert e.value.hint and (tmp_path / "afile").read_text() == "x"


@pytest.mark.parametrize("backend", ["hatchling", "setuptools", "flit-core", "pdm-backend"])
@pytest.mark.parametrize("kind", ["lib", "package"])
def test_init_lib_and_package_write_an_installable_project_and_its_code(tmp_path: Path, kind: str,
                                                                        backend: str) -> None:
    from pypm.scaffold import BACKENDS

    target = init_project(tmp_path / "My.Tool", kind=kind, backend=backend)
    p = load_project(target.parent)
    assert p.name == "My.Tool" and not p.is_virtual and p.build_system is not None
    assert p.build_system["build-backend"] == BACKENDS[backend][1]
    assert list(p.build_system["requires"]) == BACKENDS[backend][0]
    code = (target.parent / "src" / "my_tool" / "__init__.py").read_text()
    if kind == "lib":
        assert "def hello() -> str:" in code and (target.parent / "src" / "my_tool" / "py.typed").is_file()
        assert "[project.scripts]" not in target.read_text()
    else:
        assert "def main() -> None:" in code
        assert tomllib.loads(target.read_text())["project"]["scripts"] == {"My.Tool": "my_tool:main"}
    assert "Uncomment" not in target.read_text()


def test_init_lib_refuses_code_already_there_and_writes_nothing(tmp_path: Path) -> None:
    (tmp_path / "p" / "src" / "p").mkdir(parents=True)
    with pytest.raises(ProjectError, match="already exists"):
        init_project(tmp_path / "p", kind="lib")
    assert not (tmp_path / "p" / "pyproject.toml").exists()


def test_the_cli_offers_every_backend_init_knows() -> None:
    from pypm.cli import build_parser
    from pypm.scaffold import BACKENDS

    init = build_parser()._subparsers._group_actions[0].choices["init"]  # type: ignore[union-attr,index]
    [action] = [a for a in init._actions if a.dest == "build_backend"]
    assert sorted(action.choices or ()) == sorted(BACKENDS)
