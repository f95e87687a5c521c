"""The TLS context of pypm's HTTP clients, made ahead of time on a thread of its own.

Why: loading the certificate authorities takes ~13-15 ms, and OpenSSL does it with the GIL
released. Started early (`start`), it runs beside the imports and the reading of the project and
the lock that come before the first request, instead of between them and the network. This
module imports only the standard library (and certifi, when used): importing it costs nothing
on paths that never use the network.

The policy is httpx's own (`httpx.create_ssl_context()`, httpx 0.28): the CA file named by
SSL_CERT_FILE, else the directory named by SSL_CERT_DIR, else (PYPM_NATIVE_TLS=1) the system's
store, else certifi's bundle; certificates and
host names verified (`ssl.create_default_context`). The environment is read when the context is
made, and a context made for other values of those variables (or for the other HTTP version) is
never used.
"""

from __future__ import annotations

import os
import threading
from typing import Any

__all__ = ["start", "context", "http2_requested", "HTTP2_ENV"]

HTTP2_ENV = "PYPM_HTTP2"  # HTTP/2 (ALPN "h2") when set to anything but "" or "0"; pypm.http's default is HTTP/1.1


def http2_requested() -> bool:
    """Whether PYPM_HTTP2 asks for HTTP/2 (pypm.http also needs h2 installed to speak it)."""
    return os.environ.get(HTTP2_ENV, "") not in ("", "0")


_guard = threading.Lock()
# key (_key) -> (the thread making it, [(True, context) | (False, error)])
_jobs: dict[tuple[str, str, bool, str], tuple[threading.Thread, list[tuple[bool, Any]]]] = {}


NATIVE_ENV = "PYPM_NATIVE_TLS"  # yes: the system's CA store (OpenSSL's default paths) instead of certifi's


def _key() -> tuple[str, str, bool, str]:
    # HTTP/2 or not too: httpcore sets a context's ALPN protocols before each handshake, so an
    # HTTP/2 client and an HTTP/1.1 one (tests switch in-process) must not share a context.
    return (os.environ.get("SSL_CERT_FILE", ""), os.environ.get("SSL_CERT_DIR", ""), http2_requested(),
            os.environ.get(NATIVE_ENV, ""))


def _make(cafile: str, capath: str, native: str = "") -> Any:
    import ssl

    try:
        if cafile:
            return ssl.create_default_context(cafile=cafile)
        if capath:
            return ssl.create_default_context(capath=capath)
    except (OSError, ssl.SSLError) as e:  # OSError: a missing file; SSLError: not PEM certificates
        from .errors import UsageError

        var, value = ("SSL_CERT_FILE", cafile) if cafile else ("SSL_CERT_DIR", capath)
        raise UsageError(f"cannot load the CA certificates that {var}={value} names: "
                         f"{getattr(e, 'strerror', None) or e}",
                         hint=f"point {var} at {'a PEM file' if cafile else 'a directory'} of CA certificates, "
                              "or unset it to use the certifi bundle") from None
    if native:
        from .config import env_flag

        if env_flag("PYPM_NATIVE_TLS"):  # (a value neither yes nor no is refused here, with its message)
            # The system's store, where a company's root certificate is installed (uv's --native-tls)
            return ssl.create_default_context()
    import certifi

    return ssl.create_default_context(cafile=certifi.where())


def _start(key: tuple[str, str, bool, str]) -> tuple[threading.Thread, list[tuple[bool, Any]]]:
    with _guard:
        job = _jobs.get(key)
        if job is not None:
            return job
        out: list[tuple[bool, Any]] = []

        def run() -> None:
            try:
                out.append((True, _make(key[0], key[1], key[3])))
            except BaseException as e:  # raised to whoever asks for the context
                out.append((False, e))

        # Not a daemon: a command that ends before the context is made (a sync that only removed
        # packages) waits for it at exit (at most the ~15 ms it takes). A daemon thread still in
        # OpenSSL when the process exits crashed it (SIGSEGV): exit() runs OpenSSL's clean-up
        # while the thread uses what it frees.
        job = _jobs[key] = (threading.Thread(target=run, name="pypm-tls"), out)
        job[0].start()
    return job


def start() -> None:
    """Begin making the context for the current environment, unless that is begun already."""
    _start(_key())


def context() -> Any:
    """The context for the current environment (made now if `start` was not called). An error
    making it (an unreadable SSL_CERT_FILE) is raised here, each time it is asked for."""
    thread, out = _start(_key())
    thread.join()
    ok, value = out[0]
    if not ok:
        raise value
    return value
