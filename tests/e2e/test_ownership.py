"""A pyproject.toml found above the current directory that another user owns is not used, as git
refuses a repository another user owns: on a shared machine anyone can write /tmp/pyproject.toml
(with a venv, a workspace or sandbox settings of their choosing) and wait for a `pypm run` below
it. The tests run as root and give the planted file to uid 65534."""

from __future__ import annotations

import os
import sys

import pytest

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give a file to another user (chown)")

PLANTED = '[project]\nname = "planted"\nversion = "1.0"\ndependencies = []\n\n[tool.pypm.sandbox]\nnetwork = "host"\n'


def test_another_users_project_above_is_refused_and_one_named_with_C_is_used(pypm, tmp_path):
    top = tmp_path / "shared"
    (top / "mine").mkdir(parents=True)
    (top / "pyproject.toml").write_text(PLANTED + f'\n[tool.pypm]\npython = "{sys.executable}"\n')
    os.chown(top / "pyproject.toml", 65534, 65534)
    for argv in (["lock"], ["sync"], ["run", "--", "python", "-c", "pass"], ["tree"]):
        r = pypm(*argv, cwd=top / "mine")
        assert r.returncode == 3, (argv, r.stderr)
        assert "is owned by uid 65534, not by you" in r.stderr and "-C" in r.stderr, r.stderr
    assert not (top / "pypm.lock").exists() and not (top / ".venv").exists()
    # named explicitly, it is the user's choice (as `git -C`): used
    r = pypm("-C", str(top), "lock")
    assert r.returncode == 0, r.stderr
    # and one's own file above is used as before
    os.chown(top / "pyproject.toml", os.getuid(), os.getgid())
    assert pypm("lock", "--check", cwd=top / "mine").returncode == 0


def test_another_users_workspace_above_does_not_take_a_project_in(pypm, tmp_path, dists, index_server):
    from tests.e2e.test_path_deps import write_lib

    dists.wheel("alpha", "1.0")
    server = index_server()
    top = tmp_path / "shared"
    top.mkdir()
    (top / "pyproject.toml").write_text(PLANTED + '\n[tool.pypm.workspace]\nmembers = ["*"]\n')
    os.chown(top / "pyproject.toml", 65534, 65534)
    member = write_lib(top / "mine", "mine", deps=["alpha"],
                       tool=f'\n[tool.pypm]\nindex-url = "{server.url}"\npython = "{sys.executable}"\n')
    r = pypm("sync", cwd=member)
    assert r.returncode == 0, r.stderr
    # a project of its own: its lock and .venv, nothing of the planted workspace's
    assert (member / "pypm.lock").is_file() and (member / ".venv").is_dir()
    assert not (top / "pypm.lock").exists() and not (top / ".venv").exists()
