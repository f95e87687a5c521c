"""Fixtures for the plugin tests: C plugins compiled with the machine's compiler."""

from __future__ import annotations

from collections.abc import Iterator

import shutil
import subprocess
from pathlib import Path

import pytest

from pypm.plugins.native import include_dir
from tests.e2e.test_sync import small  # noqa: F401 - the synthetic project fixture, shared

CSRC = Path(__file__).parent / "csrc"


@pytest.fixture(autouse=True)
def _fresh_plugin_hosts() -> Iterator[None]:
    """Each test as its own pypm command: native plugins' host processes start with the test's
    environment (PYPM_TEST_LOG, PYPM_TEST_FAIL_AT) and end with it."""
    yield
    from pypm.plugins.host import unload_all

    unload_all()


def cc(out: Path, *sources: Path, shared: bool = True, defines: tuple[str, ...] = (),
       cxx: bool = False, flags: tuple[str, ...] = ()) -> Path:
    names = ("c++", "g++") if cxx else ("cc", "gcc")
    compiler = shutil.which(names[0]) or shutil.which(names[1])
    if compiler is None:
        pytest.skip(f"no {' or '.join(names)} on PATH: native plugin tests need one")
    args = [compiler, *(("-x", "c++") if cxx else ()), "-O1", "-Wall", "-Wextra", "-Werror", *flags,
            f"-I{include_dir()}", "-o", str(out), *map(str, sources)]
    if shared:
        args[1:1] = ["-shared", "-fPIC"]
    args += [f"-D{d}" for d in defines]
    subprocess.run(args, check=True)
    return out


def plugin_project(root: Path, names: list[str], *, plugin_path: str | None = None, tables: str = "") -> Path:
    """A project directory whose pyproject.toml enables `names` (and `tables`, e.g. a plugin's config)."""
    root.mkdir(parents=True, exist_ok=True)
    text = f'[project]\nname = "demo"\nversion = "1.0"\n\n[tool.pypm]\nplugins = {names!r}\n'
    if plugin_path is not None:
        text += f"plugin-path = [{plugin_path!r}]\n"
    (root / "pyproject.toml").write_text(text + tables)
    return root


@pytest.fixture(scope="session")
def native_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A plugin-path directory holding pypm_recorder.so (every stage) and pypm_syncer.so (sync only)."""
    d = tmp_path_factory.mktemp("native-plugins")
    cc(d / "pypm_recorder.so", CSRC / "recorder.c")
    cc(d / "pypm_syncer.so", CSRC / "recorder.c", defines=("STAGES=(PYPM_STAGE_PRE_SYNC|PYPM_STAGE_POST_SYNC)",))
    return d


def make_entry_point_dist(site: Path, dist: str, module: str, source: str, entry_points: dict[str, str]) -> Path:
    """Install a tiny distribution into `site` by hand: a module plus a .dist-info whose
    entry_points.txt declares `entry_points` (name -> "module:attr") in group pypm.plugins."""
    site.mkdir(parents=True, exist_ok=True)
    (site / f"{module}.py").write_text(source)
    di = site / f"{dist}-1.0.dist-info"
    di.mkdir()
    (di / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n")
    lines = "".join(f"{k} = {v}\n" for k, v in entry_points.items())
    (di / "entry_points.txt").write_text(f"[pypm.plugins]\n{lines}")
    return site


PY_RECORDER = '''\
"""A test plugin: records each hook's context as JSON lines in $PYPM_TEST_LOG."""
import json, os
from pypm.errors import PluginError

def _log(ctx):
    path = os.environ.get("PYPM_TEST_LOG")
    if path:
        with open(path, "a") as f:
            f.write(json.dumps({
                "stage": ctx.stage, "plugin": ctx.plugin_name, "root": str(ctx.project_root),
                "venv": ctx.venv and str(ctx.venv), "lock": ctx.lock_path and str(ctx.lock_path),
                "interpreter": ctx.interpreter and str(ctx.interpreter), "config": dict(ctx.config),
                "packages": [[p.name, p.version, p.sha256, p.wheel_path] for p in ctx.packages],
            }) + "\\n")

def recorder(ctx):
    _log(ctx)
    how = os.environ.get("PYPM_TEST_FAIL_HOW", "return")
    if os.environ.get("PYPM_TEST_FAIL_AT") == ctx.stage:
        if how == "raise":
            raise RuntimeError("the database is on fire")
        if how == "plugin-error":
            raise PluginError("policy says no", hint="ask the admin")
        if how == "false":
            return False
        if how == "exit":
            raise SystemExit(4)
        ctx.report(f"refusing {ctx.stage}")
        return 1
    return None

class OnlySync:
    def pre_sync(self, ctx):
        _log(ctx)
    def post_sync(self, ctx):
        _log(ctx)
        ctx.report("synced %d packages" % len(ctx.packages))

only_sync = OnlySync()

def late(ctx):
    _log(ctx)

late.hooks = ("post-sync", "post-run")

def typo(ctx):
    pass

typo.hooks = ("post_sync",)
'''


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """A real S3-compatible server (moto in server mode) on 127.0.0.1 for the session."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


S3_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


@pytest.fixture()
def s3_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, str]:
    """Credentials for moto, and no AWS config from the host."""
    for k, v in S3_ENV.items():
        monkeypatch.setenv(k, v)
    for k in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_SESSION_TOKEN",
              "PYPM_S3CACHE_BUCKET", "PYPM_S3CACHE_ENDPOINT"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    return dict(S3_ENV)
