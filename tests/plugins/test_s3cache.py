"""The s3cache plugin against a real S3-compatible server (moto) on 127.0.0.1."""

from __future__ import annotations

import hashlib
import itertools
import socket
import sys
from pathlib import Path

import boto3
import pytest

from pypm import plugins
from pypm.errors import PluginError
from pypm.plugins import s3cache
from pypm.project import load_project

from .conftest import plugin_project

_n = itertools.count()


@pytest.fixture()
def bucket(moto_endpoint: str, s3_env: dict[str, str]) -> str:
    name = f"wheels-{next(_n)}"
    boto3.client("s3", endpoint_url=moto_endpoint).create_bucket(Bucket=name)
    s3cache.plugin._sessions.clear()  # a fresh process as far as the plugin knows
    s3cache.plugin._noted.clear()
    return name


def _project(root: Path, table: str) -> Path:
    return plugin_project(root, ["s3cache"], tables=table)


def _wheel(tmp: Path, name: str, body: bytes) -> tuple[Path, str]:
    p = tmp / name
    p.write_bytes(body)
    return p, hashlib.sha256(body).hexdigest()


def test_miss_upload_hit_and_tamper(bucket: str, moto_endpoint: str, tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    root = _project(tmp_path / "p", f'[tool.pypm.s3cache]\nendpoint = "{moto_endpoint}"\nbucket = "{bucket}"\n'
                                    'prefix = "team/wheels/"\n')
    project = load_project(root)
    whl, sha = _wheel(tmp_path, "a-1.0-py3-none-any.whl", b"wheel bytes " * 1000)
    [fetch] = plugins.wheel_fetchers(project)
    dest = tmp_path / "dest.whl"
    assert fetch(sha, whl.name, dest) is False and not dest.exists()  # a miss

    plugins.fire(project, "post-sync", packages=[plugins.PackageInfo("a", "1.0", str(whl), sha)])
    s3 = boto3.client("s3", endpoint_url=moto_endpoint)
    key = f"team/wheels/{sha}/{whl.name}"
    assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == whl.read_bytes()
    assert "uploaded 1 file(s)" in capsys.readouterr().err

    s3cache.plugin._sessions.clear()
    assert fetch(sha, whl.name, dest) is True
    assert dest.read_bytes() == whl.read_bytes()
    # A second post-sync uploads nothing: the bucket served it.
    plugins.fire(project, "post-sync", packages=[plugins.PackageInfo("a", "1.0", str(whl), sha)])
    assert "uploaded" not in capsys.readouterr().err

    # Someone replaces the object: detected, reported, not handed over; post-sync repairs it.
    s3.put_object(Bucket=bucket, Key=key, Body=b"evil bytes")
    s3cache.plugin._sessions.clear()
    dest.unlink()
    assert fetch(sha, whl.name, dest) is False and not dest.exists()
    assert f"s3://{bucket}/{key} is corrupt" in capsys.readouterr().err
    plugins.fire(project, "post-sync", packages=[plugins.PackageInfo("a", "1.0", str(whl), sha)])
    assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == whl.read_bytes()


def test_no_bucket_is_a_note_not_an_error(s3_env: dict[str, str], tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    s3cache.plugin._noted.clear()
    project = load_project(_project(tmp_path / "p", '[tool.pypm.s3cache]\nprefix = "x"\n'))
    plugins.fire(project, "pre-sync")
    [fetch] = plugins.wheel_fetchers(project)
    assert fetch("ab" * 32, "x.whl", tmp_path / "d") is False
    plugins.fire(project, "post-sync", packages=[plugins.PackageInfo("a", "1", None, "ab" * 32)])
    err = capsys.readouterr().err
    assert err.count("s3cache: no bucket configured") == 1


def test_unreachable_endpoint_falls_back_quietly(s3_env: dict[str, str], tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    s3cache.plugin._sessions.clear()
    project = load_project(_project(tmp_path / "p", f'[tool.pypm.s3cache]\nendpoint = "http://127.0.0.1:{port}"\n'
                                                    'bucket = "b"\n'))
    [fetch] = plugins.wheel_fetchers(project)
    for i in range(3):
        assert fetch(f"{i:02d}" * 32, "x.whl", tmp_path / "d") is False
    assert capsys.readouterr().err.count("is not usable") == 1


def test_bad_settings_are_named(s3_env: dict[str, str], tmp_path: Path) -> None:
    project = load_project(_project(tmp_path / "p", '[tool.pypm.s3cache]\nbucket = 3\n'))
    with pytest.raises(PluginError, match=r"plugin s3cache failed at pre-sync: .*\[tool.pypm.s3cache\] `bucket` must"):
        plugins.fire(project, "pre-sync")


def test_env_overrides_bucket(bucket: str, moto_endpoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYPM_S3CACHE_BUCKET", bucket)
    monkeypatch.setenv("PYPM_S3CACHE_ENDPOINT", moto_endpoint)
    project = load_project(_project(tmp_path / "p", '[tool.pypm.s3cache]\nprefix = "p"\n'))
    whl, sha = _wheel(tmp_path, "b-1-py3-none-any.whl", b"b")
    plugins.fire(project, "post-sync", packages=[plugins.PackageInfo("b", "1", str(whl), sha)])
    s3 = boto3.client("s3", endpoint_url=moto_endpoint)
    assert s3.head_object(Bucket=bucket, Key=f"p/{sha}/{whl.name}")["ContentLength"] == 1


def test_bucket_without_boto3_fails_before_work(s3_env: dict[str, str], tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "boto3", None)  # as if boto3 were not installed
    s3cache.plugin._sessions.clear()
    project = load_project(_project(tmp_path / "p", '[tool.pypm.s3cache]\nbucket = "b"\n'))
    with pytest.raises(PluginError) as e:
        plugins.fire(project, "pre-sync")
    assert "plugin s3cache failed at pre-sync: the s3cache plugin needs boto3" in e.value.message
    assert "pypm[plugins]" in e.value.message
