"""pypm.inflight: the index client's job gate, its Little's-law width, and its measures of real
requests (an index on 127.0.0.1, pypm.http's client)."""

from __future__ import annotations

import threading
import time

import pytest

from pypm.index import IndexClient
from pypm.inflight import InFlight, timed_request


def test_the_whole_width_until_the_first_answer() -> None:
    gate = InFlight(16, cores=2)
    assert gate.limit == 16
    gate.record(None, 0.002)  # an answer without a round trip measured (a redirect) decides nothing
    assert gate.limit == 16


@pytest.mark.parametrize(("rtt", "cpu", "want"), [
    (0.002, 0.002, 4),     # a near index: cores x (1 + 1)
    (0.0, 0.002, 2),       # nearer still: never under the cores
    (0.010, 0.002, 12),    # 2 x (1 + 5)
    (0.050, 0.002, 16),    # far: capped at the pool's width
])
def test_the_width_follows_littles_law(rtt: float, cpu: float, want: int) -> None:
    gate = InFlight(16, cores=2)
    gate.record(rtt, cpu)
    assert gate.limit == want


def test_the_least_round_trip_counts() -> None:
    """A slow answer (a wait for the GIL, a proxy's first upstream connect) is not distance."""
    gate = InFlight(16, cores=2)
    gate.record(0.002, 0.002)
    gate.record(0.045, 0.002)
    assert gate.limit == 4
    gate.record(0.001, 0.002)
    assert gate.limit == 3  # ceil(2 x 1.5)


def test_no_more_jobs_than_the_limit_run_at_once_and_a_wider_limit_lets_waiters_in() -> None:
    gate = InFlight(16, cores=2)
    gate.record(0.002, 0.002)
    assert gate.limit == 4
    inside, most = [0], [0]
    lock = threading.Lock()
    release = threading.Event()

    def job() -> None:
        with gate:
            with lock:
                inside[0] += 1
                most[0] = max(most[0], inside[0])
            release.wait(10)
            with lock:
                inside[0] -= 1

    threads = [threading.Thread(target=job) for _ in range(8)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 5
    while inside[0] < 4 and time.monotonic() < deadline:
        time.sleep(0.005)
    time.sleep(0.05)
    assert inside[0] == 4 and most[0] == 4
    # Cheaper answers (the mean CPU of a request falls): the limit widens, and the waiters get in
    # without waiting for a job to leave.
    for _ in range(30):
        gate.record(None, 0.0)
    assert gate.limit >= 8
    while inside[0] < 8 and time.monotonic() < deadline:
        time.sleep(0.005)
    assert inside[0] == 8
    release.set()
    for t in threads:
        t.join(10)
    assert inside[0] == 0


def test_a_real_request_is_measured(dists, index_server) -> None:
    from pypm.http import make_client

    dists.wheel("alpha", "1.0")
    idx = index_server()
    with make_client() as client:
        r, rtt, cpu = timed_request(client, "GET", idx.url + "alpha/", {})
        assert r.status_code == 200 and b"alpha-1.0" in r.content
        assert rtt is not None and 0 <= rtt < 5
        assert cpu >= 0
        # Redirected (PEP 503: /simple/Alpha/ to /simple/alpha/): two requests, no round trip
        r, rtt, _ = timed_request(client, "GET", idx.url + "Alpha/", {})
        assert r.status_code == 200 and len(r.history) == 1
        assert rtt is None


def test_the_index_client_measures_its_requests(dists, index_server, tmp_path) -> None:
    dists.wheel("alpha", "1.0")
    dists.wheel("beta", "1.0")
    idx = index_server()
    with IndexClient([idx.url], [], cache_dir=tmp_path / "cache") as client:
        client.prefetch(["alpha", "beta"])  # through the gate, on the pool
        assert [f.filename for f in client.project_files("alpha")] == ["alpha-1.0-py3-none-any.whl"]
        gate = client._in_flight
        assert gate._answers == 2
        assert gate.floor <= gate.limit <= gate.most
