"""pypm.http's client shared by a thread pool, against a real HTTP/2 front (TLS + ALPN) on 127.0.0.1."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.e2e.test_http2 import H2Front, make_cert

pytest.importorskip("h2", reason="the h2 package (HTTP/2 for httpx) is not installed")


@pytest.fixture
def h2_front(dists, index_server, tmp_path, monkeypatch):
    cert, key = make_cert(tmp_path)
    dists.wheel("alpha", "1.0")
    front = H2Front(index_server().base, cert, key)
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    yield front
    front.close()


def test_threads_sharing_the_client_never_share_an_http2_connection(h2_front) -> None:
    # httpcore's HTTP/2 connection changes its h2 state and HPACK tables without a lock; shared
    # by pypm's fetch threads it failed now and then ("deque mutated during iteration" from
    # hpack, duplicate stream ids). Each thread must get a connection of its own.
    from pypm.http import make_client

    client = make_client()
    start = threading.Barrier(8)

    def fetch(t: int) -> list[int]:
        start.wait()  # all threads at once, so that a shared pool would interleave them
        return [client.get(f"{h2_front.url}alpha/?thread={t}&n={i}").status_code for i in range(6)]

    try:
        with ThreadPoolExecutor(8) as pool:
            statuses = [s for ss in pool.map(fetch, range(8)) for s in ss]
    finally:
        client.close()
    assert statuses == [200] * 48
    assert {proto for proto, _, _ in h2_front.requests} == {"h2"}, h2_front.requests
    threads_per_connection: dict[int, set[str]] = {}
    for _, conn, path in h2_front.requests:
        threads_per_connection.setdefault(conn, set()).add(path.split("thread=")[1].split("&")[0])
    assert all(len(t) == 1 for t in threads_per_connection.values()), threads_per_connection
    assert len(threads_per_connection) == 8


def test_one_thread_reuses_its_connection(h2_front) -> None:
    from pypm.http import make_client

    with make_client() as client:
        for i in range(3):
            assert client.get(f"{h2_front.url}alpha/?n={i}").status_code == 200
    assert [(proto, conn) for proto, conn, _ in h2_front.requests] == [("h2", 1)] * 3
