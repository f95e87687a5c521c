"""A 429 or 503 with Retry-After: pypm waits as long as the index asks before asking again, for
its pages and its downloads (a real index on 127.0.0.1)."""

from __future__ import annotations

import types
from pathlib import Path

import pytest

from pypm.http import MAX_RETRY_AFTER, retry_after
from tests.e2e.test_lock import write_project


def _gap(server, path: str) -> float:
    times = [t for (_, p, _), t in zip(server.requests, server.request_times) if p == path]
    assert len(times) == 2, server.requests
    return times[1] - times[0]


def test_a_page_answered_429_is_asked_again_after_retry_after(pypm, dists, index_server, tmp_path: Path) -> None:
    dists.wheel("alpha", "1.0")
    server = index_server()
    server.fail("/simple/alpha/", status=429, times=1, retry_after="1")
    proj = write_project(tmp_path / "proj", ["alpha"], build=False)
    r = pypm("lock", "--index-url", server.url, cwd=proj)
    assert r.returncode == 0, r.stderr
    assert _gap(server, "/simple/alpha/") >= 0.95  # the back-off alone waits at most 0.375 s


def test_a_download_answered_503_waits_as_asked(pypm, dists, index_server, tmp_path: Path) -> None:
    wheel = dists.wheel("alpha", "1.0")
    server = index_server()
    proj = write_project(tmp_path / "proj", ["alpha"], build=False)
    pypm("lock", "--index-url", server.url, cwd=proj, check=True)
    server.fail(f"/files/{wheel.name}", status=503, times=1, retry_after="1")
    r = pypm("sync", cwd=proj)
    assert r.returncode == 0, r.stderr
    assert _gap(server, f"/files/{wheel.name}") >= 0.95


@pytest.mark.parametrize(("value", "want"), [
    ("2", 2.0), ("0", 0.0), ("-5", 0.0), ("9999", MAX_RETRY_AFTER),
    ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0),  # a date in the past: at once
    ("soon", None), ("", None), ("nan", None),
])
def test_retry_after_values(value: str, want: float | None) -> None:
    err = types.SimpleNamespace(response=types.SimpleNamespace(headers={"retry-after": value} if value else {}))
    assert retry_after(err) == want  # type: ignore[arg-type]
