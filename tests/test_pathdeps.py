"""pypm.pathdeps: which sources a project has, and the paths the lock writes for them."""

from __future__ import annotations

from pathlib import Path

import pytest

from pypm.errors import ProjectError
from pypm.pathdeps import LocalSources, collect
from pypm.project import load_project


def _project(root: Path, name: str, deps: list[str], *, tool: str = "", build: bool = True,
             extra: str = "") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    head = '[build-system]\nrequires = ["flit_core"]\nbuild-backend = "flit_core.buildapi"\n\n' if build else ""
    quoted = ", ".join(f"'{d}'" for d in deps)
    (root / "pyproject.toml").write_text(
        f'{head}[project]\nname = "{name}"\nversion = "1.0"\ndependencies = [{quoted}]\n{extra}{tool}')
    return root


def test_sources_are_followed_and_written_relative_to_the_project(tmp_path):
    _project(tmp_path / "libs" / "core", "core", [])
    _project(tmp_path / "libs" / "lib", "lib", ["core"], tool='\n[tool.pypm.sources]\ncore = { path = "../core" }\n')
    _project(tmp_path / "other", "other", [])
    app = _project(tmp_path / "app", "app", ["lib", f"other @ {(tmp_path / 'other').as_uri()}", "idna"],
                   tool='\n[tool.pypm.sources]\nlib = { path = "../libs/lib", editable = true }\n', build=False)
    sources, reqs, _ = collect(load_project(app))
    assert {n: (s.path, s.lock_kind) for n, s in sources.items()} == {
        "lib": ("../libs/lib", "editable"), "core": ("../libs/core", "directory"),
        "other": (str(tmp_path / "other"), "directory")}  # a file:/// URL stays absolute
    assert reqs["dependencies"] == ("lib", "other", "idna")  # direct references made plain names


def test_a_relative_file_url_and_an_extra_with_a_marker(tmp_path):
    _project(tmp_path / "lib", "lib", ["idna"],
             extra="\n[project.optional-dependencies]\nfast = ['ujson; python_version < \"3.12\"']\n")
    app = _project(tmp_path / "app", "app", ['lib[fast] @ file:../lib ; sys_platform == "linux"'], build=False)
    sources, reqs, _ = collect(load_project(app))
    assert sources["lib"].path == "../lib"
    assert reqs["dependencies"] == ('lib[fast]; sys_platform == "linux"',)
    meta = LocalSources(sources, app).metadata_of("lib")
    assert meta.version == "1.0" and meta.provides_extra == ("fast",)
    assert meta.requires_dist == ("idna", 'ujson; (python_version < "3.12") and extra == "fast"')


@pytest.mark.parametrize("tool, deps, message", [
    ('[tool.pypm.sources]\nlib = { path = "../lib" }\n', ["lib @ file:../elsewhere"], "lib has two sources"),
    ('[tool.pypm.sources]\napp = { path = "../lib" }\n', [], "names the project itself"),
    ('[tool.pypm.sources]\nlib = { path = "" }\n', ["lib"], "must be a non-empty string"),
    ('[tool.pypm.sources]\nlib = { path = "../lib", editable = "yes" }\n', ["lib"], "it must be true or false"),
    ("", ["lib @ hg+https://example.invalid/lib"], "is a VCS URL pypm cannot lock (of VCS, it takes git)"),
    ("", ["lib @ git+ftp://example.invalid/lib.git"], "pypm fetches git repositories over https, http, ssh or file"),
    ("", ["lib @ git+https://u:pw@example.invalid/lib.git"], "the URL carries a password"),
    ("", ["lib @ git+https://example.invalid/lib.git#egg=lib&x=1"], "is not #subdirectory=..."),
    ("", ["lib @ git+https://example.invalid/lib.git#subdirectory=../up"], "must be a relative path inside"),
    ('[tool.pypm.sources]\nlib = { git = "https://example.invalid/lib.git", tag = "v1", branch = "main" }\n',
     ["lib"], "gives `tag` and `branch`; give at most one"),
    ('[tool.pypm.sources]\nlib = { git = "https://example.invalid/lib.git", editable = true }\n', ["lib"],
     "gives a `git` repository and `editable`"),
    ('[tool.pypm.sources]\nlib = { tag = "v1" }\n', ["lib"], "gives `tag` without `git`"),
    ('[tool.pypm.sources]\nlib = { git = "https://example.invalid/lib.git", tag = "v1" }\n',
     ["lib @ git+https://example.invalid/lib.git@v1"], "lib has two sources"),
    ("", ["lib @ https://example.invalid/lib/"], "does not end in a wheel or sdist file name"),
    ("", ["lib @ https://example.invalid/other-1.0.tar.gz"], "other-1.0.tar.gz is a file of other, not of lib"),
    ("", ["lib @ https://u:secret@example.invalid/lib-1.0.tar.gz"], "the URL carries credentials"),
    ("", ["lib @ https://example.invalid/lib-1.0.tar.gz#md5=abc"], "is not #sha256=<64 hex digits>"),
    ("", ["lib @ ftp://example.invalid/lib-1.0.tar.gz"], "is a direct URL pypm cannot lock"),
    ('[tool.pypm.sources]\nlib = { url = "https://example.invalid/lib-1.0.tar.gz" }\n',
     ["lib @ https://example.invalid/lib-2.0.tar.gz"], "lib has two sources"),
    ('[tool.pypm.sources]\nlib = { url = "https://example.invalid/lib-1.0.tar.gz", editable = true }\n', ["lib"],
     "gives both a `url` and `editable`"),
    ('[tool.pypm.sources]\nlib = { url = "../lib" }\n', ["lib"], "it must be an http(s):// URL of a wheel or sdist"),
])
def test_conflicting_or_malformed_sources_are_refused(tmp_path, tool, deps, message):
    _project(tmp_path / "lib", "lib", [])
    app = _project(tmp_path / "app", "app", deps, tool="\n" + tool, build=False)
    with pytest.raises(ProjectError) as e:
        collect(load_project(app))
    assert message in e.value.message


def test_a_directory_without_build_system_is_refused_with_the_fix(tmp_path):
    _project(tmp_path / "lib", "lib", [], build=False)
    app = _project(tmp_path / "app", "app", ["lib"], tool='\n[tool.pypm.sources]\nlib = { path = "../lib" }\n',
                   build=False)
    with pytest.raises(ProjectError) as e:
        collect(load_project(app))
    assert "has no [build-system]" in e.value.message and "hatchling" in (e.value.hint or "")


def test_tree_identity_changes_with_any_input_and_not_with_outputs(tmp_path: Path) -> None:
    import os

    from pypm.pathdeps import tree_identity

    lib = tmp_path / "lib"
    (lib / "src" / "lib").mkdir(parents=True)
    (lib / "pyproject.toml").write_text("[project]\n")
    (lib / "src" / "lib" / "__init__.py").write_text("X = 1\n")
    first = tree_identity(lib)
    assert first is not None and tree_identity(lib) == first
    # outputs and caches are not inputs
    for out in ("__pycache__", ".venv", "src/lib.egg-info", ".pytest_cache"):
        (lib / out).mkdir()
        (lib / out / "f").write_text("x")
    assert tree_identity(lib) == first
    # a file rewritten with its old size and mtime still differs (its ctime)
    f = lib / "src" / "lib" / "__init__.py"
    st = f.stat()
    f.write_text("X = 2\n")
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    second = tree_identity(lib)
    assert second != first
    (lib / "VERSION").write_text("1\n")  # a new file
    third = tree_identity(lib)
    assert third not in (first, second)
    (lib / "link").symlink_to(lib / "VERSION")  # a link to a file: its target counts
    fourth = tree_identity(lib)
    (lib / "VERSION").write_text("22\n")
    assert tree_identity(lib) not in (third, fourth)
    # the repository holding it: HEAD and refs
    git = tmp_path / ".git"
    (git / "refs" / "tags").mkdir(parents=True)
    (git / "HEAD").write_text("ref: refs/heads/main\n")
    fifth = tree_identity(lib)
    (git / "refs" / "tags" / "v1").write_text("0" * 40 + "\n")
    assert tree_identity(lib) != fifth
    tree_identity_before_link = tree_identity(lib)
    # a link to a directory inside the tree: an entry (its target is walked anyway)
    (lib / "src-link").symlink_to(lib / "src", target_is_directory=True)
    sixth = tree_identity(lib)
    assert sixth is not None and sixth != tree_identity_before_link
    (lib / "src-link").unlink()
    (lib / "src-link").symlink_to(lib / "src" / "lib", target_is_directory=True)  # pointed elsewhere
    assert tree_identity(lib) not in (None, sixth)
    (lib / "src-link").unlink()
    # what cannot be had surely: none
    (lib / "outside").symlink_to(tmp_path, target_is_directory=True)
    assert tree_identity(lib) is None
    (lib / "outside").unlink()
    (lib / "sub").mkdir()
    (lib / "sub" / ".git").write_text("gitdir: /elsewhere\n")
    assert tree_identity(lib) is None
