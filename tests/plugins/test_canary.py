"""The canary (examples/my-lib) with both shipped plugins enabled, against real wheels and a real bucket."""

from __future__ import annotations

from collections.abc import Iterator

import hashlib
import shutil
from pathlib import Path

import boto3
import pytest
from packaging.utils import canonicalize_name

from tests.conftest import copy_example
from tests.e2e.test_sync import installed
from tests.support.fixtures import canary_wheels_dir, fixtures_dir
from tests.support.index_server import IndexServer

from .conftest import S3_ENV

pytestmark = pytest.mark.slow


def _env(tmp_path: Path, endpoint: str, bucket: str) -> dict[str, str]:
    return {**S3_ENV, "PYPM_S3CACHE_ENDPOINT": endpoint, "PYPM_S3CACHE_BUCKET": bucket,
            "AWS_CONFIG_FILE": str(tmp_path / "none"), "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none")}


@pytest.fixture()
def own_index() -> Iterator[IndexServer]:
    """The canary's real wheels on an index this test may stop (the session's canary_index must live)."""
    d = canary_wheels_dir()
    if d is None:
        pytest.skip(f"canary wheels not fetched (no complete set in {fixtures_dir()}): "
                    "run `python3 scripts/fetch_fixtures.py` once")
    with IndexServer([d]) as server:
        yield server


def test_canary_fills_the_bucket_and_a_second_machine_syncs_without_the_index(
        pypm, own_index: IndexServer, moto_endpoint: str, tmp_path: Path) -> None:
    canary_index = own_index
    canary_project = copy_example(tmp_path / "my-lib", own_index.url)
    bucket = "canary-fleet"
    s3 = boto3.client("s3", endpoint_url=moto_endpoint, aws_access_key_id="testing",
                      aws_secret_access_key="testing", region_name="us-east-1")
    s3.create_bucket(Bucket=bucket)
    env = _env(tmp_path, moto_endpoint, bucket)

    r = pypm("lock", cwd=canary_project, env=env)
    assert r.returncode == 0, r.stderr
    r = pypm("sync", cwd=canary_project, env=env)
    assert r.returncode == 0, r.stderr
    first = installed(canary_project / ".venv")
    assert {"requests", "urllib3", "black", "mypy", "pytest"} <= first.keys()
    # auditwheel checked the canary's platform wheels (black, mypy, charset-normalizer ...) and found them clean.
    assert "auditwheel: " in r.stderr and "platform wheel(s) match their manylinux/musllinux tags" in r.stderr
    assert "violation" not in r.stderr
    objects = {o["Key"] for o in s3.list_objects_v2(Bucket=bucket, MaxKeys=1000)["Contents"]}
    names = {canonicalize_name(k.rsplit("/", 1)[1].split("-")[0]) for k in objects}
    # Every installed wheel (not the editable project itself) and the project's build dependency.
    assert names == (first.keys() - {"my-lib"}) | {"setuptools"}
    assert f"s3cache: uploaded {len(objects)} file(s)" in r.stderr

    # `pypm plugins` shows both, and `pypm run` on the synced canary imports neither boto3 nor
    # auditwheel (nor the HTTP client): the hot path stays light with plugins enabled.
    r = pypm("plugins", cwd=canary_project, env=env)
    assert r.returncode == 0, r.stderr
    assert "auditwheel: python, entry point `auditwheel = pypm.plugins.auditwheel:plugin`" in r.stdout
    assert "hooks: post-sync\n" in r.stdout and "hooks: pre-sync, post-sync, fetch\n" in r.stdout
    r = pypm("run", "--no-sandbox", "python", "-c", "print('ok')", cwd=canary_project,
             env={**env, "PYTHONPROFILEIMPORTTIME": "1"})
    assert r.returncode == 0 and r.stdout == "ok\n", r.stderr
    imported = {line.rsplit("|", 1)[1].strip() for line in r.stderr.splitlines() if line.startswith("import time:")}
    # Neither plugin has a run hook (recorded by the sync): the fast path does not load the plugins at all.
    assert "pypm.run" in imported and not {m for m in imported if m.startswith("pypm.plugins") or m == "pypm.cli"}
    assert not {m for m in imported if m.split(".")[0] in ("boto3", "botocore", "auditwheel", "elftools", "httpx",
                                                             "resolvelib", "rich")}

    # Machine two: one object was tampered with; it is reported, refetched from the index, repaired.
    victim = sorted(k for k in objects if "/requests-" in k)[0]
    good = s3.get_object(Bucket=bucket, Key=victim)["Body"].read()
    s3.put_object(Bucket=bucket, Key=victim, Body=good[:-100] + b"\0" * 100)
    canary_index.clear_requests()
    two = tmp_path / "machine-two"
    shutil.copytree(canary_project, two, ignore=shutil.ignore_patterns(".venv", "*.egg-info", "build"))
    r = pypm("sync", "--frozen", cwd=two, env={**env, "PYPM_CACHE_DIR": str(tmp_path / "cache-two")})
    assert r.returncode == 0, r.stderr
    assert f"{victim} is corrupt" in r.stderr
    filename = victim.rsplit("/", 1)[1]
    assert [p for m, p, _ in canary_index.requests_for("/files/") if m == "GET"] == [f"/files/{filename}"]
    assert installed(two / ".venv") == first
    assert hashlib.sha256(s3.get_object(Bucket=bucket, Key=victim)["Body"].read()).hexdigest() == \
        victim.split("/")[-2]

    # Machine three: a fresh checkout (with the lock) and cache, and the index is gone.
    canary_index.stop()
    three = tmp_path / "machine-three"
    shutil.copytree(canary_project, three, ignore=shutil.ignore_patterns(".venv", "*.egg-info", "build"))
    r = pypm("sync", "--frozen", cwd=three, env={**env, "PYPM_CACHE_DIR": str(tmp_path / "cache-three")})
    assert r.returncode == 0, r.stderr
    assert installed(three / ".venv") == first
    assert f"s3cache: {len(objects)} file(s) came from" in r.stderr
