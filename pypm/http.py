"""One configured HTTP client for the index client and the cache: retries, back-off, HTTP/2 on request.

Imported only where the network is used (never on the `pypm run` hot path).
"""

from __future__ import annotations

import random
import socket
import sys
import threading
import time
from typing import Any, Callable, TypeVar

from . import __version__, tls
from .errors import IndexError_

# Modules httpx and httpcore import whenever they are installed, for what pypm never uses:
# httpx._main, httpx's command-line client (click, rich.console, pygments once click is there:
# 30-50 ms), and httpcore's async locks (anyio ~9 ms, and a failed look-up of trio ~4 ms; both
# optional there). A None in sys.modules makes each import fail as if it were not installed,
# which both packages expect; the entries are removed right after, so that a later import of any
# of them works (nothing in pypm makes one).
_HIDDEN = ("httpx._main", "anyio", "trio")
_fresh = "httpcore" not in sys.modules and "httpx" not in sys.modules
_hide = [m for m in _HIDDEN if m not in sys.modules] if _fresh else []
for _m in _hide:
    sys.modules[_m] = None  # type: ignore[assignment]
try:
    import httpcore
    import httpx
finally:
    for _m in _hide:
        if _m in sys.modules and sys.modules[_m] is None:
            del sys.modules[_m]

__all__ = ["make_client", "HTTP2_ENV", "with_retries", "RETRY_STATUS", "describe_error", "TransportError",
           "DecodingError", "HTTPStatusError"]

# The errors other modules catch, named here so that nothing else imports httpx itself: httpx must
# be imported through this module, whose import hides its CLI and httpcore's async backends
# (above). tests/test_http.py checks that no other module imports it at run time.
TransportError = httpx.TransportError
DecodingError = httpx.DecodingError
HTTPStatusError = httpx.HTTPStatusError

T = TypeVar("T")
RETRY_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
USER_AGENT = f"pypm/{__version__}"


HTTP2_ENV = tls.HTTP2_ENV


def make_client(*, max_connections: int = 32, timeout: float | None = None) -> httpx.Client:
    """A thread-safe client: share one per process; many threads may use it at once.

    HTTP/1.1 by default, HTTP/2 (where the index offers it) with PYPM_HTTP2=1. Why not HTTP/2
    by default: httpcore's HTTP/2 connection is not thread-safe (see _PerThreadTransport), so
    each thread needs its own connection and nothing is multiplexed across the lock's and the
    sync's thread pools; what remains is h2's framing in pure Python, ~15-20 % of a cold lock's
    CPU (web stack, A B A B: 1.43 -> 1.19 s wall; downloads of a cold sync 1.64 -> 1.50 s). A
    high-latency link with few threads is where HTTP/2 could still pay: hence the switch.
    """
    if timeout is None:
        timeout = http_timeout()
    from .credentials import keyring_provider

    keyring_provider()  # a bad PYPM_KEYRING_PROVIDER is refused here, not in the first request that needs it
    http2 = tls.http2_requested()
    if http2:
        try:
            import h2  # noqa: F401  (httpx speaks HTTP/2 only when h2 is installed)
        except ImportError:  # an extra (pypm[http2]): the answers are the same over HTTP/1.1
            http2 = False
            from .plugins import warn_once  # (once per process: a command may make several clients)

            warn_once(f"{HTTP2_ENV} is set, but the h2 package is not installed: speaking HTTP/1.1 "
                      "(install HTTP/2 support with `pip install 'pypm[http2]'`)")
    limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
    # One for all threads, and made ahead where a command called tls.start() (loading the CAs
    # is ~15 ms, with the GIL released: it overlaps the work before the first request).
    ssl_context = tls.context()
    backend = _SharedLookups()
    transport: httpx.BaseTransport
    if http2:
        transport = _PerThreadTransport(lambda: _with_backend(httpx.HTTPTransport(
            verify=ssl_context, retries=2, http2=True, limits=limits), ssl_context, limits, backend, http2=True))
    else:  # one pool for every thread: HTTP/1.1 connections are used by one request at a time
        transport = _with_backend(httpx.HTTPTransport(verify=ssl_context, retries=2, limits=limits), ssl_context,
                                  limits, backend, http2=False)
    # httpx reads HTTPS_PROXY and friends only for a client without a transport of its own: with
    # the one above they were silently ignored, and pypm went straight to the index (failing
    # behind a proxy that pip and uv use). So the environment's proxies are routed here.
    transport = _with_env_proxies(transport, ssl_context, limits, http2=http2)
    return httpx.Client(
        limits=limits,
        timeout=httpx.Timeout(timeout, connect=min(10.0, timeout)),
        follow_redirects=True,
        headers={"User-Agent": USER_AGENT},
        transport=transport,
        auth=_IndexAuth(),
    )


TIMEOUT_ENV = "PYPM_HTTP_TIMEOUT"
DEFAULT_TIMEOUT = 30.0


def http_timeout() -> float:
    """Seconds a request may wait for the server (to connect, or between two reads): PYPM_HTTP_TIMEOUT,
    else 30, as pip's --timeout and uv's UV_HTTP_TIMEOUT. A slow mirror may need more."""
    import math
    import os

    text = os.environ.get(TIMEOUT_ENV, "").strip()
    if not text:
        return DEFAULT_TIMEOUT
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (value > 0 and math.isfinite(value)):
        from .errors import UsageError

        raise UsageError(f"the environment variable {TIMEOUT_ENV}={text!r} is not a number of seconds",
                         hint=f"set {TIMEOUT_ENV} to a positive number (the default is {DEFAULT_TIMEOUT:g}), or unset it")
    return value


class _IndexAuth(httpx.Auth):
    """HTTP Basic credentials for the realm a request goes to (pypm.credentials: the URL's own, the
    index URL's, the environment's, ~/.netrc). Set once, before the request is sent: httpx drops
    the header from a redirect to another origin (a private index sending files to a CDN)."""

    def auth_flow(self, request: httpx.Request) -> Any:
        if "authorization" not in request.headers:
            from base64 import b64encode

            from . import credentials

            found = credentials.for_url(str(request.url))
            if found is not None:
                token = b64encode(f"{found[0]}:{found[1]}".encode()).decode("ascii")
                request.headers["Authorization"] = f"Basic {token}"
        yield request


def _with_env_proxies(direct: httpx.BaseTransport, ssl_context: Any, limits: httpx.Limits, *,
                      http2: bool = False) -> httpx.BaseTransport:
    """`direct`, or a router sending requests through the proxies of HTTPS_PROXY / HTTP_PROXY /
    ALL_PROXY (either case) but for NO_PROXY's hosts. A proxy's transport speaks HTTP/1.1 and is
    shared by every thread, which is safe; with `http2`, HTTP/2 inside its CONNECT tunnels, with a
    pool per thread as the direct transport has (_PerThreadTransport)."""
    import urllib.request

    env = urllib.request.getproxies_environment()  # stdlib: both cases, and CGI's HTTP_PROXY refused
    wanted = {scheme: env[scheme] for scheme in ("http", "https", "all") if env.get(scheme)}
    bypass = NoProxy(env.get("no", ""))
    if not wanted or bypass.everything:
        return direct
    from .simpleapi import _redact  # (the proxy's password is not for messages)

    proxies: dict[str, httpx.BaseTransport] = {}
    for scheme, url in wanted.items():
        if "://" not in url:  # HTTPS_PROXY=host:3128, as curl takes it
            url = "http://" + url
        def make(url: str = url) -> httpx.BaseTransport:
            return httpx.HTTPTransport(proxy=url, verify=ssl_context, limits=limits, retries=2, http2=http2)

        try:
            proxies[scheme] = make()  # (made now: a bad URL or a missing package is said here, once)
            if http2:
                proxies[scheme].close()
                proxies[scheme] = _PerThreadTransport(make)
        except ImportError as e:  # socks5:// needs httpx's optional socksio
            raise IndexError_(f"the proxy {_redact(url)} (from the environment) needs a package that "
                              f"is not installed: {e}",
                              hint="install it (`pip install socksio` for a SOCKS proxy), or unset the "
                                   "proxy variable") from e
        except (ValueError, httpx.InvalidURL) as e:
            raise IndexError_(f"the proxy {_redact(url)} (from the environment) cannot be used: {e}",
                              hint="set HTTPS_PROXY / HTTP_PROXY / ALL_PROXY to http://HOST:PORT") from e
    return _Proxied(direct, proxies, bypass)


class NoProxy:
    """NO_PROXY as curl reads it: `*`; host names, each also covering its subdomains (a leading `.`
    or `*.` is the same); IP addresses, in brackets or not; CIDR ranges (`10.0.0.0/8`); any of them
    with `:port`. Entries it cannot read are ignored (httpx's own reading raised on `[::1]`)."""

    def __init__(self, text: str) -> None:
        import ipaddress

        self.everything = False
        self._names: list[tuple[str, int | None]] = []
        self._nets: list[tuple[Any, int | None]] = []
        for entry in text.replace(" ", ",").split(","):
            entry = entry.strip().lower()
            if not entry:
                continue
            if entry == "*":
                self.everything = True
                return
            port: int | None = None
            host = entry
            if host.startswith("["):  # [v6] or [v6]:port
                inside, _, rest = host[1:].partition("]")
                host = inside
                if rest.startswith(":") and rest[1:].isdigit():
                    port = int(rest[1:])
            elif host.count(":") == 1:  # host:port (a bare IPv6 address has more colons)
                host, _, p = host.partition(":")
                if not p.isdigit():
                    continue
                port = int(p)
            try:
                self._nets.append((ipaddress.ip_network(host, strict=False), port))
                continue
            except ValueError:
                pass
            host = host.lstrip("*").lstrip(".")
            if host:
                self._names.append((host, port))

    def matches(self, host: str, port: int) -> bool:
        import ipaddress

        host = host.lower().strip("[]")
        try:
            ip: Any = ipaddress.ip_address(host)
        except ValueError:
            ip = None
        for net, p in self._nets:
            if ip is not None and ip.version == net.version and ip in net and p in (None, port):
                return True
        for name, p in self._names:
            if (host == name or host.endswith("." + name)) and p in (None, port):
                return True
        return False


class _Proxied(httpx.BaseTransport):
    """Each request to its scheme's proxy (else ALL_PROXY's), or straight on for NO_PROXY's hosts."""

    def __init__(self, direct: httpx.BaseTransport, proxies: dict[str, httpx.BaseTransport], bypass: NoProxy) -> None:
        self._direct = direct
        self._proxies = proxies
        self._bypass = bypass

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        port = url.port or {"http": 80, "https": 443}.get(url.scheme, 0)
        proxy = self._proxies.get(url.scheme) or self._proxies.get("all")
        if proxy is None or self._bypass.matches(url.host, port):
            return self._direct.handle_request(request)
        return proxy.handle_request(request)

    def close(self) -> None:
        for t in (self._direct, *self._proxies.values()):
            t.close()



class _SharedLookups(httpcore.SyncBackend):
    """Connects as httpcore does, but looks each host up once for all the client's threads.

    With a pool per thread, every thread looked the index's and the file host's names up on its
    own: ~30 lookups at once at the start of a lock, and a resolver that drops some of a burst
    (as this machine's does) stalls each dropped one for its 5 s retry."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._hosts: dict[tuple[str, int], threading.Lock] = {}
        self._addrs: dict[tuple[str, int], list[str]] = {}

    def connect_tcp(self, host: str, port: int, timeout: float | None = None,
                    local_address: str | None = None, socket_options: Any = None) -> Any:
        key = (host, port)
        with self._lock:
            host_lock = self._hosts.setdefault(key, threading.Lock())
        with host_lock:  # the first thread looks it up; the others wait for its answer
            addrs = self._addrs.get(key)
            if addrs is None:
                try:
                    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
                except OSError as e:
                    raise httpcore.ConnectError(str(e)) from e
                addrs = self._addrs[key] = list(dict.fromkeys(str(i[4][0]) for i in infos))
        last: Exception | None = None
        for addr in addrs:  # in the resolver's order, as socket.create_connection tries them
            try:
                return super().connect_tcp(addr, port, timeout, local_address, socket_options)
            except httpcore.ConnectError as e:
                last = e
        raise last or httpcore.ConnectError(f"no address for {host}")


def _with_backend(transport: httpx.HTTPTransport, ssl_context: Any, limits: httpx.Limits,
                  backend: httpcore.NetworkBackend, *, http2: bool) -> httpx.HTTPTransport:
    """The transport with its connection pool rebuilt on `backend` (httpx has no parameter for it)."""
    if hasattr(transport, "_pool"):
        transport._pool = httpcore.ConnectionPool(
            ssl_context=ssl_context, max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry, http1=True, http2=http2, retries=2,
            network_backend=backend)
    return transport


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
        try:
            return f"timed out (no answer for {http_timeout():g} s; {TIMEOUT_ENV} sets how long)"
        except Exception:  # noqa: BLE001 -- (an unreadable value is reported where the client is made)
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
            wait = retry_after(e)
            if wait is not None and attempt + 1 < attempts:  # the server said how long: as pip (urllib3) does
                time.sleep(wait)
                continue
        except (httpx.TransportError, httpx.DecodingError) as e:
            last = e
            refused = _certificate_refusal(e)
            if refused is not None:  # the same answer every time: asking again only waited ~8 s
                raise IndexError_(
                    f"cannot fetch {what}: the server's TLS certificate is not trusted "
                    f"({getattr(refused, 'verify_message', None) or refused})",
                    hint="if your network inspects TLS, set PYPM_NATIVE_TLS=1 to trust the system's certificate "
                         "store, or point SSL_CERT_FILE (or SSL_CERT_DIR) at a CA bundle that holds its root "
                         "certificate" + _proxy_note()) from e
        if attempt + 1 < attempts:
            time.sleep(base_delay * (2**attempt) * (0.5 + random.random()))
    assert last is not None
    raise IndexError_(f"cannot fetch {what}: {describe_error(last)}",
                      hint="check the URL and your connection" + _proxy_note()
                           + ", or use --offline to work from the cache") from last


MAX_RETRY_AFTER = 30.0  # seconds: a longer wait asked for is cut to this (the attempts are few)


def retry_after(exc: BaseException) -> float | None:
    """The seconds a 429 or 503 answer's Retry-After header asks to wait (a number or an HTTP
    date), at most MAX_RETRY_AFTER; None when there is none to read."""
    response = getattr(exc, "response", None)
    value = response.headers.get("retry-after") if response is not None else None
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        from datetime import datetime, timezone
        from email.utils import parsedate_to_datetime

        try:
            seconds = (parsedate_to_datetime(value) - datetime.now(timezone.utc)).total_seconds()
        except (TypeError, ValueError, IndexError):
            return None
    if seconds != seconds:  # NaN
        return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)


def _certificate_refusal(exc: BaseException) -> BaseException | None:
    """The ssl.SSLCertVerificationError behind a transport error, if that is what it is
    (httpx.ConnectError <- httpcore.ConnectError <- the ssl error)."""
    import ssl

    seen: BaseException | None = exc
    for _ in range(5):
        if seen is None or isinstance(seen, ssl.SSLCertVerificationError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def _proxy_note() -> str:
    """Where the environment sends requests through a proxy, its name (a failure may be the proxy's)."""
    import urllib.request

    from .simpleapi import _redact

    proxies = urllib.request.getproxies_environment()
    named = sorted({_redact(u) for k, u in proxies.items() if k in ("http", "https", "all") and u})
    return f" (requests go through the proxy {', '.join(named)}, from the environment)" if named else ""
