"""One configured HTTP client for the index client and the cache: retries, back-off, HTTP/2.

Imported only where the network is used (never on the `pypm run` hot path).
"""

from __future__ import annotations

import random
import threading
import time
from typing import Callable, TypeVar

import httpx

from . import __version__
from .errors import IndexError_

__all__ = ["make_client", "with_retries", "RETRY_STATUS", "describe_error"]

T = TypeVar("T")
RETRY_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
USER_AGENT = f"pypm/{__version__}"


def make_client(*, max_connections: int = 32, timeout: float = 30.0) -> httpx.Client:
    """A thread-safe client: share one per process; many threads may use it at once."""
    try:
        import h2  # noqa: F401  (httpx speaks HTTP/2 only when h2 is installed)

        http2 = True
    except ImportError:
        http2 = False
    limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
    transport: httpx.BaseTransport
    if http2:
        ssl_context = httpx.create_ssl_context()  # one for all threads (loading the CAs is ~25 ms)
        transport = _PerThreadTransport(lambda: httpx.HTTPTransport(
            verify=ssl_context, retries=2, http2=True, limits=limits))
    else:
        transport = httpx.HTTPTransport(retries=2, limits=limits)
    return httpx.Client(
        # http2 off for the client's own transports, which only proxies from the environment
        # use: they are shared by every thread, and HTTP/1.1 pools are safe to share.
        http2=False,
        limits=limits,
        timeout=httpx.Timeout(timeout, connect=10.0),
        follow_redirects=True,
        headers={"User-Agent": USER_AGENT},
        transport=transport,
    )


class _PerThreadTransport(httpx.BaseTransport):
    """A connection pool per thread, so that no HTTP/2 connection is used by two threads.

    httpcore's HTTP/2 connection changes its h2 state machine and HPACK tables without a lock
    (httpx issue 3566), and pypm's index and cache clients are used from thread pools: a 16-thread
    lock failed now and then with hpack's "deque mutated during iteration". Locking around it
    would mean patching httpcore's internals; a pool per thread costs one TLS handshake per thread.
    """

    def __init__(self, make: Callable[[], httpx.BaseTransport]) -> None:
        self._make = make
        self._local = threading.local()
        self._lock = threading.Lock()
        self._all: list[httpx.BaseTransport] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        transport = getattr(self._local, "transport", None)
        if transport is None:
            transport = self._local.transport = self._make()
            with self._lock:
                self._all.append(transport)
        return transport.handle_request(request)

    def close(self) -> None:
        with self._lock:
            transports, self._all = self._all, []
        for t in transports:
            t.close()


def describe_error(exc: BaseException) -> str:
    """A one-line cause for a network failure, e.g. 'connection refused'."""
    if isinstance(exc, httpx.ConnectError):
        return f"cannot connect ({exc})" if str(exc) else "cannot connect"
    if isinstance(exc, httpx.TimeoutException):
        return "timed out"
    if isinstance(exc, httpx.RemoteProtocolError):
        return f"the server closed the connection ({exc})"
    if isinstance(exc, httpx.HTTPStatusError):
        return f"HTTP {exc.response.status_code} {exc.response.reason_phrase}"
    return f"{type(exc).__name__}: {exc}"


def with_retries(what: str, fn: Callable[[], T], *, attempts: int = 4, base_delay: float = 0.25) -> T:
    """Call fn(); retry transient failures (connection errors, 5xx, 429) with jittered back-off.

    `fn` raises httpx errors; a response with a retryable status must be raised by fn via
    `response.raise_for_status()`. The final failure becomes an IndexError_ naming `what`.
    """
    last: BaseException | None = None
    for attempt in range(attempts):
        try:
            return fn()
        except httpx.HTTPStatusError as e:
            last = e
            if e.response.status_code not in RETRY_STATUS:
                break
        except (httpx.TransportError, httpx.DecodingError) as e:
            last = e
        if attempt + 1 < attempts:
            time.sleep(base_delay * (2**attempt) * (0.5 + random.random()))
    assert last is not None
    raise IndexError_(f"cannot fetch {what}: {describe_error(last)}",
                      hint="check the URL and your connection, or use --offline to work from the cache") from last
