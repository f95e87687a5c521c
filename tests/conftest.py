"""Shared pytest fixtures: real distributions, a real index on 127.0.0.1, an isolated `pypm` runner."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest

from tests.support.dists import DistFactory
from tests.support.fixtures import canary_wheels_dir, fixtures_dir, local_torch_wheel
from tests.support.index_server import IndexServer

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples" / "my-lib"

# Given to every `pypm` subprocess that does not choose an index itself: a closed port on
# 127.0.0.1, so a test that forgot `--index-url` fails loudly instead of reaching the internet.
NO_INDEX_URL = "http://127.0.0.1:9/no-index-configured-in-this-test/simple/"

def _as_a_foreground_job() -> None:
    """A suite started as a background job of a non-interactive shell (`bash .ci/run &`) inherits
    SIGINT and SIGQUIT ignored, and under nohup SIGHUP too; every pypm it starts would inherit
    that (an ignored signal stays ignored across execve, and pypm keeps a caller's dispositions
    for the sandboxed command, as any Unix program does). The tests of Ctrl-C and of passing
    signals on would then fail for the harness's reason, not pypm's (seen: a fresh-clone CI
    started that way). Reset here, as a terminal's foreground job has them."""
    import signal

    for sig in (signal.SIGINT, signal.SIGQUIT, signal.SIGHUP):
        if signal.getsignal(sig) == signal.SIG_IGN:
            signal.signal(sig, signal.default_int_handler if sig == signal.SIGINT else signal.SIG_DFL)


_as_a_foreground_job()

# Host environment variables that would change what pypm or pip/uv do inside tests (a suite run
# in a CI job that could publish by trusted publishing, too: pypm publish would try it).
_LEAKY_PREFIXES = ("PIP_", "PYPM_", "UV_", "VIRTUAL_ENV", "CONDA_", "PYTHONPATH", "PYTHONHOME", "XDG_",
                   "ACTIONS_ID_TOKEN_", "GITLAB_CI")


# --- the live marker ------------------------------------------------------------------------

_live_reason: list[str | None] = []  # computed once per session


def probe_index(url: str, timeout: float = 5) -> str | None:
    """None when `url` answers (any HTTP status) within `timeout` s, else why it cannot be reached."""
    req = urllib.request.Request(url, method="HEAD", headers={"User-Agent": "pypm-tests"})
    try:
        urllib.request.urlopen(req, timeout=timeout).close()
    except urllib.error.HTTPError:
        return None  # it answered; a status code still proves the index is reachable
    except Exception as e:  # any other failure means "cannot reach"; the cause goes in the reason
        return f"{type(e).__name__}: {getattr(e, 'reason', e)}"
    return None


def _default_index_unreachable() -> str | None:
    """None when the default index answers within 5 s, else the reason to skip (once per session)."""
    if not _live_reason:
        try:
            from pypm.config import default_index_url

            # A project's page, not the index's root: the root lists every project, and through
            # this machine's proxy a HEAD of it took 0.6-2.2 s, once more than 5 s, which skipped
            # the live tests while the index was reachable. A project page answers in ~0.1 s
            # (idna: the one test_live_default_index reads).
            cause = probe_index(default_index_url().rstrip("/") + "/idna/")
        except Exception as e:  # e.g. no index configured at all
            cause = f"{type(e).__name__}: {e}"
        _live_reason.append(f"live test: the default index cannot be reached within 5 s ({cause})" if cause else None)
    return _live_reason[0]


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("live") is not None:
        reason = _default_index_unreachable()
        if reason:
            pytest.skip(reason)


# --- distributions and index servers --------------------------------------------------------


@pytest.fixture
def dists(tmp_path: Path) -> DistFactory:
    """Build real wheels/sdists into <tmp>/dists: `dists.wheel("a", "1.0", requires_dist=[...])`."""
    return DistFactory(tmp_path / "dists")


@pytest.fixture
def index_server(dists: DistFactory) -> Iterator[Callable[..., IndexServer]]:
    """Start an IndexServer for this test: `idx = index_server([files or dirs], **opts)`.

    With no files, it serves the `dists` directory (files built later are picked up by
    `idx.add(path)`). Every server started is stopped at the end of the test.
    """
    started: list[IndexServer] = []

    def start(files: object = None, **opts: object) -> IndexServer:
        if files is None:
            paths: list[Path | str] = [dists.dir]
        elif isinstance(files, (str, os.PathLike)):
            paths = [Path(files)]
        else:
            paths = list(files)  # type: ignore[call-overload]
        server = IndexServer(paths, **opts).start()  # type: ignore[arg-type]
        started.append(server)
        return server

    yield start
    for s in started:
        s.stop()


# --- running pypm -----------------------------------------------------------------------------


class PypmRunner:
    """Runs `python -m pypm ARGS` in a subprocess with an isolated home, cache and environment."""

    def __init__(self, root: Path, *, live: bool, default_cwd: Path) -> None:
        self.default_cwd = default_cwd
        self.home = root / "home"
        self.cache_dir = root / "pypm-cache"
        self.home.mkdir(parents=True, exist_ok=True)
        self.live = live

    @property
    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(_LEAKY_PREFIXES)}
        env.update(
            HOME=str(self.home),
            PYPM_CACHE_DIR=str(self.cache_dir),
            PIP_CONFIG_FILE=os.devnull,  # pip's machine-wide extra indexes/find-links stay out
            XDG_CACHE_HOME=str(self.home / ".cache"),
            XDG_CONFIG_HOME=str(self.home / ".config"),
            COLUMNS="200",  # rich wraps at the terminal width; keep messages on one line
            PYTHONUNBUFFERED="1",
            # An internal error (a bug) prints its traceback: a rare one seen in CI must say
            # where it came from the first time (pypm's own errors are printed as always).
            PYPM_TRACEBACK="1",
        )
        if not self.live:
            env["PYPM_INDEX_URL"] = NO_INDEX_URL
        if any(env.get(k) for k in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy")):
            # pypm honours the host's proxy, as pip does; the tests' indexes on 127.0.0.1 are reached directly
            no = ",".join(filter(None, (env.get("NO_PROXY") or env.get("no_proxy"), "127.0.0.1,localhost")))
            env["NO_PROXY"] = env["no_proxy"] = no
        return env

    def __call__(
        self,
        *args: str | os.PathLike[str],
        cwd: Path | str | None = None,
        env: Mapping[str, str | None] | None = None,
        timeout: float = 300,
        input: str | None = None,  # noqa: A002 - mirrors subprocess.run
        check: bool = False,
    ) -> subprocess.CompletedProcess[str]:
        """Run pypm; `env` adds variables (None removes one); check=True asserts exit code 0.

        cwd defaults to the test's tmp_path, never the repository (a stray `pypm lock` there
        would write into pypm's own tree).
        """
        full_env = self.env
        for k, v in (env or {}).items():
            if v is None:
                full_env.pop(k, None)
            else:
                full_env[k] = v
        cmd = [sys.executable, "-m", "pypm", *map(str, args)]
        proc = subprocess.run(
            cmd,
            cwd=str(cwd if cwd is not None else self.default_cwd),
            env=full_env,
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"pypm {' '.join(map(str, args))} exited {proc.returncode}\n"
                f"--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"
            )
        return proc

    def popen(
        self, *args: str | os.PathLike[str], cwd: Path | str | None = None, env: Mapping[str, str] | None = None,
        new_session: bool = False,
    ) -> subprocess.Popen[str]:
        """Start pypm without waiting (for kill -9 / Ctrl-C / concurrency tests). `new_session`:
        in a session and process group of its own, for a Ctrl-C as a terminal sends it (os.killpg)."""
        full_env = self.env
        full_env.update(env or {})
        return subprocess.Popen(
            [sys.executable, "-m", "pypm", *map(str, args)],
            cwd=str(cwd if cwd is not None else self.default_cwd),
            env=full_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=new_session,
        )


@pytest.fixture
def pypm(tmp_path: Path, request: pytest.FixtureRequest) -> PypmRunner:
    """`pypm("lock", "--index-url", idx.url, cwd=project)` -> CompletedProcess (text).

    Isolated: HOME and PYPM_CACHE_DIR under tmp, PIP_CONFIG_FILE=/dev/null, no PIP_*/PYPM_*/UV_*
    from the host; outside `live` tests PYPM_INDEX_URL points at a closed local port.
    `pypm.cache_dir`, `pypm.home`, `pypm.env` and `pypm.popen(...)` are there too.
    """
    live = request.node.get_closest_marker("live") is not None
    return PypmRunner(tmp_path / "pypm-runner", live=live, default_cwd=tmp_path)


# --- the canary --------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def _canary_server() -> Iterator[IndexServer]:
    d = canary_wheels_dir()
    if d is None:
        pytest.skip(
            f"canary wheels not fetched (no complete set in {fixtures_dir()}): "
            "run `python3 scripts/fetch_fixtures.py` once"
        )
    with IndexServer([d]) as server:
        yield server


@pytest.fixture
def canary_index(_canary_server: IndexServer) -> Iterator[IndexServer]:
    """The session's IndexServer over the real canary wheels from scripts/fetch_fixtures.py.

    Started once per session; each test gets it with no faults, no yanks and an empty request
    log, and whatever a test changes (faults, yanks, requests) is undone after it.
    """
    server = _canary_server
    server.reset_faults()
    server.clear_requests()
    yanked = dict(server.options.yanked)
    yield server
    server.reset_faults()
    server.clear_requests()
    if server.options.yanked != yanked:
        server.options.yanked = yanked
        server._touch()


def copy_example(dest: Path, index_url: str | None = None) -> Path:
    """Copy examples/my-lib to dest (no venv, lock or build output); optionally set its index-url."""
    shutil.copytree(
        EXAMPLE,
        dest,
        ignore=shutil.ignore_patterns(".venv", "pypm.lock", "pylock.toml", "__pycache__", "*.egg-info", "build", "dist"),
    )
    if index_url is not None:
        pyproject = dest / "pyproject.toml"
        text = pyproject.read_text()
        text, n = re.subn(r"(?m)^\[tool\.pypm\]\s*$", f'[tool.pypm]\nindex-url = "{index_url}"', text, count=1)
        if n != 1:
            raise AssertionError(f"{EXAMPLE}/pyproject.toml has no [tool.pypm] table")
        pyproject.write_text(text)
    return dest


@pytest.fixture
def canary_project(tmp_path: Path, canary_index: IndexServer) -> Path:
    """A fresh copy of examples/my-lib whose index-url is canary_index (find-links kept)."""
    return copy_example(tmp_path / "my-lib", canary_index.url)


@pytest.fixture(scope="session")
def torch_wheel() -> Path:
    """The local CPU torch wheel (skips with the reason when this machine has none)."""
    w = local_torch_wheel()
    if w is None:
        pytest.skip("no CPU torch wheel in /opt/wheels on this machine: the heavy-wheel path cannot run")
    return w
