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


@pytest.mark.parametrize("value", ["1", "yes", " On ", "TRUE", "0", "off", "", "n", "maybe", "2", "yes please"])
def test_flags_readable_agrees_with_env_flag(monkeypatch, value: str) -> None:
    """The entry point's check of the on/off variables and config.env_flag accept and refuse the
    same values, for each variable."""
    from pypm.config import env_flag
    from pypm.errors import UsageError

    for name in fastpath.FLAGS:
        monkeypatch.delenv("PYPM_OFFLINE", raising=False)
        monkeypatch.delenv("PYPM_FETCH_PROCESS", raising=False)
        monkeypatch.setenv(name, value)
        try:
            env_flag(name)
            refused = False
        except UsageError:
            refused = True
        assert fastpath.flags_readable() is not refused, (name, value)


def test_flags_names_every_on_off_variable_pypm_reads() -> None:
    """fastpath.FLAGS is what the entry point and the CLI check up front: a new env_flag("...") or
    flag_value("...") somewhere in pypm must be listed there, or a bad value of it would pass the
    fast paths."""
    import re

    src = Path(fastpath.__file__).parent
    named = {m for p in src.rglob("*.py")
             for m in re.findall(r'(?:env_flag|flag_value)\(\s*"([A-Z0-9_]+)"', p.read_text())}
    assert named and named == set(fastpath.FLAGS), named


def test_a_tools_sandbox_defaults_are_what_sync_records_for_a_default_project() -> None:
    """toolrun.DEFAULT_SANDBOX stands in for project.SandboxConfig() (without pypm.project's imports)."""
    from types import SimpleNamespace

    from pypm.project import SandboxConfig
    from pypm.toolrun import DEFAULT_SANDBOX
    from pypm.venvstate import tool_knobs

    default = SimpleNamespace(name="x", find_links_paths=tuple,
                              tool=SimpleNamespace(sandbox=SandboxConfig(), plugins=(), trusted_keys=(), index_url=None,
                                                   extra_index_urls=(), index_strategy=None))
    assert tool_knobs(default)["sandbox"] == DEFAULT_SANDBOX


@pytest.mark.parametrize("text", ["ruff", "ruff==0.6.9", "Ruff_X.y-z", "r", "ruff==1.2.3.4", "ruff==", "ruff==0.6.9rc1",
                                  "ruff>=1", "ruff[x]", "a@1", "-x", "x-", "ruff==1..2", "ruff== 1", "ruff @ file:///x"])
def test_a_tools_simple_requirements_are_spelled_as_packaging_spells_them(text: str) -> None:
    """toolrun keys an environment by the requirement's text; the forms it takes without packaging
    (`pypm x ruff`, `ruff@0.6.9`, `--from ruff==0.6.9`) must be packaging's own spelling."""
    from packaging.requirements import Requirement

    from pypm.toolrun import _simple_requirement, _simple_tool

    simple = _simple_requirement(text)
    if simple is not None:
        assert str(Requirement(text)) == simple
    tool = _simple_tool(text.replace("==", "@"))
    if tool is not None:
        name, version = tool
        assert str(Requirement(f"{name}=={version}" if version else name)) == (f"{name}=={version}" if version else name)
        assert simple is not None or "==" not in text  # (the two agree on which versions are plain)


@pytest.mark.parametrize("have, want, covers", [
    ({}, {}, True),
    ({"extras": ["fast"]}, {}, True),  # `sync --extra fast`, then `run`
    ({"extras": ["*"]}, {"extras": ["gui"]}, True),  # --all-extras holds every extra
    ({"groups": ["dev", "docs"]}, {"groups": ["dev"]}, True),
    ({}, {"groups": []}, True),  # `run --no-dev` on a venv with dev
    ({}, {"extras": ["fast"]}, False),
    ({"extras": ["fast"]}, {"extras": ["gui"]}, False),
    ({"groups": []}, {}, False),  # synced --no-dev: dev is missing
    ({"include-project": False}, {}, False),  # synced --no-install-project
    ({"main": False, "include-project": False, "groups": ["docs"]}, {}, False),  # synced --only-group docs
    ({}, {"main": False, "include-project": False, "groups": ["dev"]}, True),  # run --only-group dev
    ({"packages": ["m"], "all-packages": False}, {}, False),  # a workspace member's selection
    ({}, {"packages": ["m"], "all-packages": False}, False),
    ({"extras": "fast"}, {}, False),  # not state.json's shape: never trusted
])
def test_a_venv_synced_for_more_covers_a_run_of_less(have, want, covers) -> None:
    """run and shell use a .venv synced for a larger selection as it is (run._selection_covers)."""
    from pypm.run import _selection_covers

    base = venvstate._selection_json(Selection.from_flags())
    assert _selection_covers({**base, **have}, {**base, **want}) is covers
