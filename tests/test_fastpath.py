"""pypm.fastpath: the os-only pieces of the entry point's fast paths agree with the full modules."""

from pathlib import Path

import pytest

from pypm import fastpath, venvstate
from pypm.errors import ProjectError
from pypm.project import find_project_root
from pypm.selection import Selection


def test_default_selection_is_what_a_bare_sync_records():
    assert fastpath.DEFAULT_SELECTION == venvstate._selection_json(Selection.from_flags())


def test_find_root_agrees_with_find_project_root(tmp_path: Path):
    (tmp_path / "proj" / "src" / "deep").mkdir(parents=True)
    (tmp_path / "proj" / "pyproject.toml").write_text("[project]\nname = 'x'\nversion = '1'\n")
    deep = tmp_path / "proj" / "src" / "deep"
    assert fastpath.find_root(str(deep)) == str(find_project_root(deep)) == str(tmp_path / "proj")


def test_find_root_without_a_project_is_none(tmp_path: Path):
    # "/" never holds a pyproject.toml on a test machine; both lookups must say "none".
    assert not Path("/pyproject.toml").exists()
    assert fastpath.find_root("/") is None
    with pytest.raises(ProjectError):
        find_project_root(Path("/"))


def test_sha256_file_of_an_unreadable_path_is_none(tmp_path: Path):
    # A pypm.lock that is a directory made `pypm sync`/`run`'s fast path end in a traceback; it
    # must step aside instead, so that the full command names the problem.
    (tmp_path / "pypm.lock").mkdir()
    assert fastpath.sha256_file(tmp_path / "pypm.lock") is None
    assert fastpath.sha256_file(tmp_path / "missing") is None
    (tmp_path / "f").write_bytes(b"x")
    assert fastpath.sha256_file(tmp_path / "f") == fastpath.sha256(b"x").hexdigest()
