"""PYPM_HTTP_TIMEOUT: how long a request may wait for the server (a real index on 127.0.0.1 that
stalls in the middle of a download)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.test_lock import write_project


def _wheel_gets(server, name: str) -> list[dict[str, str]]:
    return [h for m, p, h in server.requests if m == "GET" and p.endswith(name)]


@pytest.fixture
def locked(pypm, dists, index_server, tmp_path: Path):
    """(a wheel of some size, its index, a project locked on it)."""
    wheel = dists.wheel("alpha", "1.0", modules={"alpha/__init__.py": "X = 1\n" + "# padding\n" * 4000})
    server = index_server()
    proj = write_project(tmp_path / "proj", ["alpha"], build=False)
    pypm("lock", "--index-url", server.url, cwd=proj, check=True)
    return wheel, server, proj


def test_a_stalled_download_times_out_and_resumes(pypm, locked) -> None:
    wheel, server, proj = locked
    server.stall(wheel.name, nbytes=1000, seconds=3.0, times=1)
    r = pypm("sync", cwd=proj, env={"PYPM_HTTP_TIMEOUT": "0.5"})
    assert r.returncode == 0, r.stderr
    gets = _wheel_gets(server, wheel.name)
    # The first read waited 0.5 s, not the 3 s stall: asked again, from where it stopped
    assert len(gets) == 2 and gets[1].get("Range", "").startswith("bytes=1000-"), gets


def test_the_default_waits_through_a_short_stall(pypm, locked) -> None:
    wheel, server, proj = locked
    server.stall(wheel.name, nbytes=1000, seconds=1.0, times=1)
    r = pypm("sync", cwd=proj)
    assert r.returncode == 0, r.stderr
    assert len(_wheel_gets(server, wheel.name)) == 1


def test_a_bad_value_is_refused_with_its_name(pypm, dists, index_server, tmp_path: Path) -> None:
    dists.wheel("alpha", "1.0")
    server = index_server()
    proj = write_project(tmp_path / "proj", ["alpha"], build=False)
    r = pypm("lock", "--index-url", server.url, cwd=proj, env={"PYPM_HTTP_TIMEOUT": "soon"})
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert "PYPM_HTTP_TIMEOUT='soon' is not a number of seconds" in r.stderr
    assert not (proj / "pypm.lock").exists()
