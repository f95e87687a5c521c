"""How many of the index client's jobs run at once: enough to hide the index's round trip, no more.

A lock's look-ahead hands the index client's thread pool dozens of jobs at once (a project's page,
a file's metadata: fetch, then parse). When the index is far, a job is mostly waiting for the
answer, and sixteen at once hide a 50 ms round trip. When it is near (a mirror, a caching proxy:
~2 ms here), a job is mostly Python work under the GIL, reading, decrypting and parsing the answer,
and sixteen threads only took turns at it. The web stack's warm lock spent ~0.3 s of CPU in its
requests with sixteen threads and ~0.17 s with three, and its wall time followed; with a 50 ms
round trip (a delaying proxy on 127.0.0.1), three threads took 2.5 s where sixteen took 0.8 s.

So the limit follows Little's law for the machine's cores: each request is `rtt` of waiting and
`cpu` of work, and cores x (1 + rtt / cpu) of them keep the cores busy. `rtt` is the least time
seen from sending a request to its response's headers (the least: a wait for the GIL is not
distance, nor is a proxy's upstream connect on a connection's first request), `cpu` the mean
thread CPU of a request. The limit is the pool's whole width until the first answer, so that a
far index pays nothing for the measure; it moves with each answer after that. Not measured: the
TCP connect, which is a round trip to the index only without a proxy; to a transparent proxy or
a TLS-inspecting gateway on the way it is a fraction of a millisecond and would hide the rest.

Written here rather than taken from a library: it is a counter under a condition variable, and
the measures come from httpcore's trace hooks. This module imports nothing heavy (no httpx): an
index client for local directories makes one too.
"""

from __future__ import annotations

import math
import os
import threading
import time
from typing import Any

__all__ = ["InFlight"]


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


class InFlight:
    """A gate for jobs (`with gate: ...`) whose width follows the measured distance to the index."""

    def __init__(self, most: int, cores: int | None = None) -> None:
        self.most = max(1, most)
        self.floor = min(self.most, max(2, cores or _cores()))
        self.limit = self.most  # until the first answer
        self._busy = 0
        self._cond = threading.Condition()
        self._rtt = math.inf
        self._cpu = 0.0
        self._answers = 0

    def __enter__(self) -> InFlight:
        with self._cond:
            while self._busy >= self.limit:
                self._cond.wait()
            self._busy += 1
        return self

    def __exit__(self, *exc: object) -> None:
        with self._cond:
            self._busy -= 1
            self._cond.notify()

    def record(self, rtt: float | None, cpu: float) -> None:
        """One request's measure: its wait for its answer's headers (None: not measured, e.g. a
        redirect's two requests) and its thread CPU."""
        with self._cond:
            if rtt is not None and rtt >= 0:
                self._rtt = min(self._rtt, rtt)
            self._cpu += max(cpu, 0.0)
            self._answers += 1
            if self._rtt == math.inf:
                return
            per = self._cpu / self._answers
            limit = math.ceil(self.floor * (1 + self._rtt / max(per, 1e-4)))
            limit = max(self.floor, min(self.most, limit))
            if limit > self.limit:
                self._cond.notify_all()
            self.limit = limit

    def request(self, client: Any, method: str, url: str, headers: dict[str, str]) -> Any:
        """`client.request(...)` (an httpx client), measured for `record`."""
        r, rtt, cpu = timed_request(client, method, url, headers)
        self.record(rtt, cpu)
        return r


def timed_request(client: Any, method: str, url: str, headers: dict[str, str]) -> tuple[Any, float | None, float]:
    """`client.request(...)` (an httpx client) and its measures for `InFlight.record`: the wait from
    sending it to its answer's headers (None when it took more than one request: a redirect) and
    the thread CPU it took."""
    marks: list[float] = []

    def trace(event: str, info: Any) -> None:  # httpcore's hooks: ~8 calls a request
        if event.endswith(("send_request_headers.started", "receive_response_headers.complete")):
            marks.append(time.perf_counter())

    cpu = time.thread_time()
    r = client.request(method, url, headers=headers, extensions={"trace": trace})
    cpu = time.thread_time() - cpu
    return r, (marks[1] - marks[0] if len(marks) == 2 else None), cpu
