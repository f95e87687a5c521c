"""`pypm cache dir|clean|prune` on a cache filled by a real `pypm sync` from a real index on 127.0.0.1."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

from tests.e2e.test_sync import assert_venv_exact, write_project

DAY = 86400


@pytest.fixture
def synced(pypm, dists, index_server, tmp_path):
    a = dists.wheel("alpha", "1.0", requires_dist=["beta"])
    b = dists.wheel("beta", "2.0")
    server = index_server()
    root = write_project(tmp_path / "proj", deps=["alpha"])
    assert pypm("lock", "--index-url", server.url, cwd=root).returncode == 0
    pypm("sync", "--locked", cwd=root, check=True)
    return root, server, {"alpha": a, "beta": b}


def _entries(cache, kind: str) -> dict[str, Path]:
    """{first file name or sha: entry dir} under wheels/ or unpacked/."""
    out = {}
    for d in (cache / kind).glob("??/*"):
        if d.is_dir() and len(d.name) == 64:
            names = [f.name for f in d.iterdir() if f.suffix == ".whl"] if kind == "wheels" else [d.name]
            out[names[0] if names else d.name] = d
    return out


def _age(path, days: float) -> None:
    t = time.time() - days * DAY
    os.utime(path, (t, t))


def test_cache_dir_prints_the_configured_directory(pypm, tmp_path) -> None:
    r = pypm("cache", "dir")
    assert r.returncode == 0 and r.stdout.strip() == str(pypm.cache_dir), r
    r = pypm("cache", "dir", env={"PYPM_CACHE_DIR": str(tmp_path / "elsewhere")})
    assert r.stdout.strip() == str(tmp_path / "elsewhere")


def test_prune_removes_only_old_entries_and_leftovers(pypm, synced) -> None:
    root, server, wheels = synced
    cache = pypm.cache_dir
    w = _entries(cache, "wheels")
    assert set(w) == {wheels["alpha"].name, wheels["beta"].name}, w
    beta_wheel_dir = w[wheels["beta"].name]
    beta_sha = beta_wheel_dir.name
    beta_unpacked = cache / "unpacked" / beta_sha[:2] / beta_sha
    assert beta_unpacked.is_dir()
    # A download that never finished, in alpha's (fresh) entry: a leftover prune must sweep.
    part = w[wheels["alpha"].name] / (wheels["alpha"].name + ".part")
    part.write_bytes(b"half")
    _age(beta_wheel_dir, 10)
    _age(beta_unpacked, 10)

    r = pypm("cache", "prune", "--days", "5")
    assert r.returncode == 0, r.stderr
    assert "pruned 3 entries" in r.stderr, r.stderr
    assert not beta_wheel_dir.exists() and not beta_unpacked.exists() and not part.exists()
    assert (w[wheels["alpha"].name] / wheels["alpha"].name).is_file()  # used recently: kept

    # The venv does not depend on the cache; a fresh sync fetches only what was pruned.
    r = pypm("run", "--no-sandbox", "--locked", "python", "-c", "import alpha, beta", cwd=root)
    assert r.returncode == 0, r.stderr
    shutil.rmtree(root / ".venv")
    server.clear_requests()
    pypm("sync", "--locked", cwd=root, check=True)
    got = [p for m, p, _ in server.requests if m == "GET" and p.endswith(".whl")]
    assert got == [f"/files/{wheels['beta'].name}"], got
    assert_venv_exact(root / ".venv", {"alpha": "1.0", "beta": "2.0"})
    # (An entry whose lock is held is skipped however old: tests/test_cache.py holds one from another process.)


def test_clean_empties_the_cache_and_the_next_sync_refills_it(pypm, synced) -> None:
    root, server, wheels = synced
    cache = pypm.cache_dir
    assert _entries(cache, "wheels")
    r = pypm("cache", "clean")
    assert r.returncode == 0 and str(cache) in r.stderr, r.stderr
    assert not cache.exists() or not any(cache.iterdir())
    r = pypm("run", "--no-sandbox", "--locked", "python", "-c", "import alpha, beta", cwd=root)
    assert r.returncode == 0, r.stderr  # installed files are independent copies/links, not lost
    shutil.rmtree(root / ".venv")
    server.clear_requests()
    pypm("sync", "--locked", cwd=root, check=True)
    got = sorted(p for m, p, _ in server.requests if m == "GET" and p.endswith(".whl"))
    assert got == sorted(f"/files/{w.name}" for w in wheels.values())
    assert_venv_exact(root / ".venv", {"alpha": "1.0", "beta": "2.0"})


def test_bad_cache_action_is_a_usage_error(pypm) -> None:
    r = pypm("cache", "purge")
    assert r.returncode == 2 and "invalid choice" in r.stderr
