"""End-to-end `pypm outdated` against a local index: old pins, constraints, yanks, JSON."""

from __future__ import annotations

import json

import pytest

from tests.e2e.test_sync import write_project


@pytest.fixture
def old_lock(pypm, dists, index_server, tmp_path):
    """A project locked when only old versions existed; newer ones are published afterwards.

    app -> alpha (no bound), gamma<2 ; alpha 1.0 -> beta<3 ; later: alpha 1.1, 2.0 (yanked 2.1),
    beta 2.5 and 3.0, gamma 1.9 and 2.0, delta (unchanged).
    """
    dists.wheel("alpha", "1.0", requires_dist=["beta<3"])
    dists.wheel("beta", "2.0")
    dists.wheel("gamma", "1.0")
    dists.wheel("delta", "1.0")
    server = index_server()
    project = write_project(tmp_path / "proj", deps=["alpha", "gamma<2", "delta"],
                            tool=f'index-url = "{server.url}"\n')
    pypm("lock", cwd=project, check=True)
    server.add(*[dists.wheel("alpha", "1.1", requires_dist=["beta<3"]), dists.wheel("alpha", "2.0"),
                dists.wheel("alpha", "2.1"), dists.wheel("beta", "2.5"), dists.wheel("beta", "3.0"),
                dists.wheel("beta", "4.0rc1"), dists.wheel("gamma", "1.9"), dists.wheel("gamma", "2.0")])
    server.set_yanked("alpha-2.1-py3-none-any.whl", "broken")
    return project, server


def test_outdated_lists_old_pins_with_allowed_and_latest(pypm, old_lock):
    project, _ = old_lock
    r = pypm("outdated", cwd=project)
    assert r.returncode == 1, r.stderr
    rows = [line.split() for line in r.stdout.splitlines()]
    assert rows == [
        ["Package", "Locked", "Allowed", "Latest"],
        ["alpha", "1.0", "2.0", "2.0"],  # 2.1 is yanked
        ["beta", "2.0", "2.5", "3.0"],  # alpha 1.0 (locked) requires beta<3; 4.0rc1 is a pre-release
        ["gamma", "1.0", "1.9", "2.0"],  # the project says gamma<2
    ]
    assert "3 of 4 locked packages have newer versions" in r.stderr


def test_outdated_json_has_every_package(pypm, old_lock):
    project, server = old_lock
    r = pypm("outdated", "--format", "json", cwd=project)
    assert r.returncode == 1
    data = {d["name"]: d for d in json.loads(r.stdout)}
    assert set(data) == {"alpha", "beta", "gamma", "delta"}
    assert data["delta"] == {"name": "delta", "locked": "1.0", "allowed": "1.0", "latest": "1.0",
                             "outdated": False, "source": server.url}
    assert data["beta"]["allowed"] == "2.5" and data["beta"]["outdated"] is True


def test_a_current_lock_exits_0(pypm, old_lock):
    project, _ = old_lock
    r = pypm("lock", "--upgrade", cwd=project)
    assert r.returncode == 0, r.stderr
    r = pypm("outdated", cwd=project)
    # alpha 2.0 needs no beta, so beta left the lock; gamma stays below 2 by the project's own bound
    assert r.returncode == 1
    assert [line.split() for line in r.stdout.splitlines()][1:] == [["gamma", "1.9", "1.9", "2.0"]]
    pyproject = project / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace('"gamma<2"', '"gamma"'))
    pypm("lock", "--upgrade", cwd=project, check=True)
    r = pypm("outdated", cwd=project)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout == "" and "all 3 locked packages are current" in r.stderr  # beta left with alpha 1.0


def test_outdated_without_a_lock_says_what_to_do(pypm, tmp_path):
    project = write_project(tmp_path / "p")
    r = pypm("outdated", cwd=project)
    assert r.returncode == 3 and "pypm lock" in r.stderr


def test_a_release_for_newer_pythons_only_is_latest_but_not_allowed(pypm, old_lock, dists):
    project, server = old_lock
    server.add(dists.wheel("delta", "1.5", requires_python=">=3.10"))  # the lock supports 3.9 too
    r = pypm("outdated", "--format", "json", cwd=project)
    delta = [d for d in json.loads(r.stdout) if d["name"] == "delta"][0]
    assert (delta["allowed"], delta["latest"], delta["outdated"]) == ("1.0", "1.5", True)
