"""Plugins through the real `pypm` command: lock, sync and run fire them; a failure aborts cleanly."""

from __future__ import annotations

import json
import platform
from pathlib import Path

import boto3

from pypm.plugins import STAGES
from tests.e2e.test_sync import file_gets, installed, snapshot, write_lock, write_project
from tests.support.dists import build_wheel

from .conftest import PY_RECORDER, S3_ENV, cc, make_entry_point_dist


def _read_c_log(log: Path) -> list[dict[str, object]]:
    calls: list[dict[str, object]] = []
    packages: list[str] = []
    cur: dict[str, object] = {"package": packages}
    for line in log.read_text().splitlines():
        if line == "end":
            calls.append(cur)
            packages = []
            cur = {"package": packages}
            continue
        k, _, v = line.partition("=")
        if k == "package":
            packages.append(v)
        else:
            cur[k] = v
    return calls


def test_c_plugin_sees_sync_and_run_and_its_failure_aborts_sync(pypm, small, native_dir: Path,
                                                                tmp_path: Path) -> None:
    project, server, wheels = small
    pyproject = project / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace(
        "[tool.pypm]\n", f'[tool.pypm]\nplugins = ["recorder"]\nplugin-path = ["{native_dir}"]\n', 1))
    log = tmp_path / "c.log"
    r = pypm("sync", "--frozen", cwd=project, env={"PYPM_TEST_LOG": str(log)})
    assert r.returncode == 0, r.stderr
    calls = _read_c_log(log)
    assert [c["stage"] for c in calls] == ["pre-sync", "post-sync"]
    post = calls[1]
    assert post["root"] == str(project) and post["venv"] == str(project / ".venv")
    assert post["lock"] == str(project / "pypm.lock")
    assert Path(str(post["interpreter"])).is_file()
    pkgs = {str(p).split(" ")[0]: str(p).split(" ") for p in post["package"]}  # type: ignore[attr-defined]
    assert sorted(pkgs) == ["alpha", "beta", "devtool"]
    for name, (_, version, sha, wheel_path) in pkgs.items():
        assert version == {"alpha": "1.0", "beta": "2.0", "devtool": "3.0"}[name]
        assert sha == _sha(wheels[name])
        assert Path(wheel_path).name == wheels[name].name and _sha(Path(wheel_path)) == sha  # the cached wheel
    assert "recorder: hello from C" in r.stderr

    r = pypm("run", "--frozen", "--no-sandbox", "python", "-c", "import alpha; print(alpha.A)", cwd=project,
             env={"PYPM_TEST_LOG": str(log)})
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "alpha beta"
    # A synced project: run's fast path does not sync again, so only the run stages fire.
    assert [c["stage"] for c in _read_c_log(log)] == ["pre-sync", "post-sync", "pre-run", "post-run"]

    # pypm lock fires pre-lock and post-lock (a real resolution against the test index).
    r = pypm("lock", "--index-url", server.url, cwd=project, env={"PYPM_TEST_LOG": str(log)})
    assert r.returncode == 0, r.stderr
    lock_calls = _read_c_log(log)[-2:]
    assert [c["stage"] for c in lock_calls] == ["pre-lock", "post-lock"]
    assert all(c["lock"] == str(project / "pypm.lock") for c in lock_calls)

    r = pypm("plugins", cwd=project)
    assert r.returncode == 0, r.stderr
    assert f"recorder: native, {native_dir / 'pypm_recorder.so'}" in r.stdout
    assert "hooks: " + ", ".join(STAGES) in r.stdout
    assert f"syncer (not enabled): native, {native_dir / 'pypm_syncer.so'}" in r.stdout

    # The lock drops devtool, and the plugin refuses pre-sync: exit 9, the message, no venv change.
    before = snapshot(project / ".venv")
    write_lock(project, server, list(wheels.values()), main=["alpha"], groups={"dev": []}, edges={"alpha": ["beta"]})
    r = pypm("sync", "--frozen", cwd=project, env={"PYPM_TEST_FAIL_AT": "pre-sync"})
    assert r.returncode == 9, r.stderr
    assert "error: plugin recorder failed at pre-sync: refusing pre-sync of 0 packages" in r.stderr
    assert "Traceback" not in r.stderr
    assert snapshot(project / ".venv") == before
    assert installed(project / ".venv").keys() == {"alpha", "beta", "devtool"}


def test_a_crashing_c_plugin_stops_sync_with_a_clear_error_and_no_change(pypm, small, tmp_path: Path) -> None:
    from .conftest import CSRC, cc

    project, server, wheels = small
    d = tmp_path / "plugins"
    d.mkdir()
    cc(d / "pypm_crasher.so", CSRC / "crasher.c")
    pyproject = project / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace(
        "[tool.pypm]\n", f'[tool.pypm]\nplugins = ["crasher"]\nplugin-path = ["{d}"]\n', 1))
    r = pypm("sync", "--frozen", cwd=project, env={"PYPM_TEST_CRASH_AT": "pre-sync"})
    assert r.returncode == 9, r.stderr
    assert "error: plugin crasher crashed at pre-sync (killed by SIGSEGV)" in r.stderr
    assert "Traceback" not in r.stderr and not (project / ".venv").exists()
    r = pypm("sync", "--frozen", cwd=project)  # without the crash: the plugin ran once per stage, in one process
    assert r.returncode == 0 and "crasher: call 2 at post-sync" in r.stderr, r.stderr
    assert installed(project / ".venv").keys() == {"alpha", "beta", "devtool"}


def test_python_entry_point_plugin_sees_sync_and_its_failure_aborts(pypm, small, tmp_path: Path) -> None:
    project, server, wheels = small
    site = make_entry_point_dist(tmp_path / "site", "pypm-test-plugins", "pypm_test_plugins", PY_RECORDER,
                                 {"recorder": "pypm_test_plugins:recorder"})
    pyproject = project / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace("[tool.pypm]\n", '[tool.pypm]\nplugins = ["recorder"]\n', 1)
                         + '\n[tool.pypm.recorder]\nanswer = 42\n')
    log = tmp_path / "py.log"
    env = {"PYTHONPATH": str(site), "PYPM_TEST_LOG": str(log)}
    r = pypm("sync", "--frozen", cwd=project, env=env)
    assert r.returncode == 0, r.stderr
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    assert [c["stage"] for c in calls] == ["pre-sync", "post-sync"]
    assert calls[1]["config"] == {"answer": 42} and calls[1]["venv"] == str(project / ".venv")
    assert sorted(p[0] for p in calls[1]["packages"]) == ["alpha", "beta", "devtool"]

    r = pypm("run", "--frozen", "--no-sandbox", "python", "-c", "pass", cwd=project, env=env)
    assert r.returncode == 0, r.stderr
    r = pypm("lock", "--index-url", server.url, cwd=project, env=env)
    assert r.returncode == 0, r.stderr
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    assert [c["stage"] for c in calls][2:] == ["pre-run", "post-run", "pre-lock", "post-lock"]
    assert calls[2]["venv"] == str(project / ".venv") and calls[5]["lock"] == str(project / "pypm.lock")

    r = pypm("plugins", cwd=project, env=env)
    assert r.returncode == 0, r.stderr
    assert "recorder: python, entry point `recorder = pypm_test_plugins:recorder`" in r.stdout
    assert "from pypm-test-plugins 1.0" in r.stdout

    before = snapshot(project / ".venv")
    r = pypm("sync", "--frozen", "--no-dev", cwd=project, env={**env, "PYPM_TEST_FAIL_AT": "pre-sync"})
    assert r.returncode == 9
    assert "error: plugin recorder failed at pre-sync: refusing pre-sync" in r.stderr
    assert snapshot(project / ".venv") == before  # devtool is still there: nothing changed
    # -q: the plugin's report is not printed, but a failure still names its reason
    r = pypm("-q", "sync", "--frozen", "--no-dev", cwd=project, env={**env, "PYPM_TEST_FAIL_AT": "pre-sync"})
    assert r.returncode == 9
    assert r.stderr.count("refusing pre-sync") == 1, r.stderr
    assert r.stderr.startswith("error: plugin recorder failed at pre-sync: refusing pre-sync"), r.stderr


LINGERING = """
import atexit, os, threading, time

def lingering(ctx):
    if ctx.stage not in ("post-sync", "post-lock"):
        return None
    out = os.environ["PYPM_TEST_OUT"]
    atexit.register(lambda: open(f"{out}.{ctx.stage}.atexit", "w").close())

    def late():
        time.sleep(0.3)
        open(f"{out}.{ctx.stage}.thread", "w").close()

    threading.Thread(target=late).start()  # not a daemon: the interpreter waits for it
    return None
"""


def test_a_plugins_thread_and_atexit_functions_finish_before_a_full_sync_or_lock_exits(pypm, small,
                                                                                        tmp_path: Path) -> None:
    # A full sync and a full lock end without the interpreter's teardown (pypm.__main__); a
    # plugin's non-daemon thread and its atexit functions must still run to the end.
    project, server, _ = small
    site = make_entry_point_dist(tmp_path / "site", "pypm-test-lingering", "pypm_test_lingering", LINGERING,
                                 {"lingering": "pypm_test_lingering:lingering"})
    pyproject = project / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace("[tool.pypm]\n", '[tool.pypm]\nplugins = ["lingering"]\n', 1))
    out = tmp_path / "out"
    env = {"PYTHONPATH": str(site), "PYPM_TEST_OUT": str(out)}
    r = pypm("sync", "--frozen", cwd=project, env=env)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "out.post-sync.atexit").exists() and (tmp_path / "out.post-sync.thread").exists()
    r = pypm("lock", "--index-url", server.url, cwd=project, env=env)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "out.post-lock.atexit").exists() and (tmp_path / "out.post-lock.thread").exists()


def test_unknown_plugin_fails_sync_naming_the_search_path(pypm, small) -> None:
    project, _, _ = small
    pyproject = project / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace(
        "[tool.pypm]\n", '[tool.pypm]\nplugins = ["nosuch"]\nplugin-path = ["native"]\n', 1))
    r = pypm("sync", "--frozen", cwd=project)
    assert r.returncode == 9
    assert "plugin nosuch not found" in r.stderr
    assert "group pypm.plugins" in r.stderr and str(project / "native" / "pypm_nosuch.so") in r.stderr
    assert not (project / ".venv").exists()
    r = pypm("plugins", cwd=project)
    assert r.returncode == 9 and "nosuch: NOT AVAILABLE" in r.stdout


# --------------------------------------------------------------------------- s3cache, two machines

def test_s3cache_fills_the_bucket_and_a_second_machine_needs_no_index(pypm, small, moto_endpoint: str,
                                                                      tmp_path: Path) -> None:
    project, server, wheels = small
    bucket = "fleet-e2e"
    s3 = boto3.client("s3", endpoint_url=moto_endpoint, **_creds())
    s3.create_bucket(Bucket=bucket)
    pyproject = project / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace("[tool.pypm]\n", '[tool.pypm]\nplugins = ["s3cache"]\n', 1)
                         + f'\n[tool.pypm.s3cache]\nendpoint = "{moto_endpoint}"\nbucket = "{bucket}"\n')
    env = {**S3_ENV, "AWS_CONFIG_FILE": str(tmp_path / "none"), "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none")}

    r = pypm("sync", "--frozen", cwd=project, env=env)
    assert r.returncode == 0, r.stderr
    assert "s3cache: uploaded 3 file(s)" in r.stderr
    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"])
    assert keys == sorted(f"pypm/wheels/{_sha(w)}/{w.name}" for w in wheels.values())

    # Machine two: a fresh cache and checkout, and the index is gone.
    two = tmp_path / "two"
    two.mkdir()
    for f in ("pyproject.toml", "pypm.lock"):
        (two / f).write_bytes((project / f).read_bytes())
    server.clear_requests()
    server.stop()
    r = pypm("sync", "--frozen", cwd=two, env={**env, "PYPM_CACHE_DIR": str(tmp_path / "cache-two")})
    assert r.returncode == 0, r.stderr
    assert installed(two / ".venv") == {"alpha": "1.0", "beta": "2.0", "devtool": "3.0"}
    assert "3 file(s) came from" in r.stderr


def test_s3cache_corrupt_object_is_refetched_from_the_index(pypm, small, moto_endpoint: str, tmp_path: Path) -> None:
    project, server, wheels = small
    bucket = "fleet-tamper"
    s3 = boto3.client("s3", endpoint_url=moto_endpoint, **_creds())
    s3.create_bucket(Bucket=bucket)
    beta = wheels["beta"]
    for w in wheels.values():  # a bucket as the first machine left it ...
        s3.put_object(Bucket=bucket, Key=f"pypm/wheels/{_sha(w)}/{w.name}", Body=w.read_bytes())
    evil = build_wheel(tmp_path / "evil", "beta", "2.0", modules={"beta/__init__.py": "B = 'evil'\n"}).read_bytes()
    assert evil != beta.read_bytes()
    s3.put_object(Bucket=bucket, Key=f"pypm/wheels/{_sha(beta)}/{beta.name}", Body=evil)  # ... then tampered
    pyproject = project / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace("[tool.pypm]\n", '[tool.pypm]\nplugins = ["s3cache"]\n', 1)
                         + f'\n[tool.pypm.s3cache]\nendpoint = "{moto_endpoint}"\nbucket = "{bucket}"\n')
    env = {**S3_ENV, "AWS_CONFIG_FILE": str(tmp_path / "none"), "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none")}
    server.clear_requests()
    r = pypm("sync", "--frozen", cwd=project, env=env)
    assert r.returncode == 0, r.stderr
    assert f"pypm/wheels/{_sha(beta)}/{beta.name} is corrupt" in r.stderr
    assert len(file_gets(server, beta.name)) == 1  # refetched from the index ...
    assert file_gets(server, wheels["alpha"].name) == []  # ... and only that one
    r = pypm("run", "--frozen", "--no-sandbox", "python", "-c", "import beta; print(beta.B)", cwd=project, env=env)
    assert r.stdout.strip() == "beta", r.stderr  # the evil bytes were never installed
    body = s3.get_object(Bucket=bucket, Key=f"pypm/wheels/{_sha(beta)}/{beta.name}")["Body"].read()
    assert body == beta.read_bytes()  # post-sync put the right bytes back


def _sha(p: Path) -> str:
    import hashlib

    return hashlib.sha256(p.read_bytes()).hexdigest()


def _creds() -> dict[str, str]:
    return {"aws_access_key_id": S3_ENV["AWS_ACCESS_KEY_ID"], "aws_secret_access_key": S3_ENV["AWS_SECRET_ACCESS_KEY"],
            "region_name": S3_ENV["AWS_DEFAULT_REGION"]}


def test_c_plugin_sees_the_editable_build_of_the_project(pypm, dists, index_server, native_dir: Path,
                                                         tmp_path: Path) -> None:
    b = dists.wheel("beta", "2.0", modules={"beta/__init__.py": "B = 'beta'\n"})
    server = index_server()
    project = write_project(tmp_path / "proj", deps=["beta"], editable=True,
                            tool=f'plugins = ["recorder"]\nplugin-path = ["{native_dir}"]\n')
    write_lock(project, server, [b], main=["beta"], editable=True)
    log = tmp_path / "c.log"
    r = pypm("sync", "--frozen", cwd=project, env={"PYPM_TEST_LOG": str(log)})
    assert r.returncode == 0, r.stderr
    calls = _read_c_log(log)
    assert [c["stage"] for c in calls] == ["pre-sync", "pre-build", "post-build", "post-sync"]
    assert calls[1]["venv"] == str(project / ".venv") and Path(str(calls[1]["interpreter"])).is_file()

    # A refusal at pre-build stops the sync before the venv gains anything.
    (project / ".venv").rename(tmp_path / "old-venv")
    r = pypm("sync", "--frozen", cwd=project,  # a fresh cache: the built editable wheel is cached
             env={"PYPM_TEST_FAIL_AT": "pre-build", "PYPM_CACHE_DIR": str(tmp_path / "cache-2")})
    assert r.returncode == 9
    assert "plugin recorder failed at pre-build: refusing pre-build" in r.stderr
    assert not (project / ".venv").exists()  # the venv this sync began is rolled back


def test_auditwheel_strict_fails_sync_on_a_too_new_wheel(pypm, dists, index_server, tmp_path: Path) -> None:
    src = tmp_path / "new.c"
    src.write_text('#include <dlfcn.h>\nvoid *f(void) { return dlopen("x", RTLD_NOW); }\n')
    so = cc(tmp_path / "new.so", src)  # needs dlopen@GLIBC_2.34
    bad = dists.wheel("fastthing", "1.0", tag=f"cp311-cp311-manylinux_2_17_{platform.machine()}",
                      modules={"fastthing/__init__.py": "", "fastthing/_speedups.so": so.read_bytes()})
    server = index_server()
    project = write_project(tmp_path / "proj", deps=["fastthing"],
                            tool='plugins = ["auditwheel"]\n\n[tool.pypm.auditwheel]\nstrict = true\n')
    write_lock(project, server, [bad], main=["fastthing"])
    r = pypm("sync", "--frozen", "--python", "3.11", cwd=project)
    assert r.returncode == 9, r.stderr
    assert (f"auditwheel: fastthing 1.0 (manylinux_2_17_{platform.machine()}): fastthing/_speedups.so needs "
            "GLIBC_2.34, newer than the tag allows") in r.stderr
    assert "error: plugin auditwheel failed at post-sync: 1 violation(s) of the platform tag policy in 1 wheel(s): " \
           "fastthing 1.0" in r.stderr


def _plugins_loaded(stderr: str) -> bool:
    """Whether pypm imported its plugin machinery (PYTHONPROFILEIMPORTTIME output)."""
    return any(line.startswith("import time:") and line.split("|")[-1].strip() == "pypm.plugins"
               for line in stderr.splitlines())


PRE_RUN_SOURCE = '''
class PreRun:
    def post_sync(self, ctx):
        _log(ctx)
    def pre_run(self, ctx):
        _log(ctx)

pre_run = PreRun()
'''


def test_run_skips_plugins_without_run_hooks_and_notices_a_changed_python_plugin(pypm, small,
                                                                                  tmp_path: Path) -> None:
    project, _, _ = small
    site = make_entry_point_dist(tmp_path / "site", "pypm-test-plugins", "pypm_test_plugins", PY_RECORDER,
                                 {"only_sync": "pypm_test_plugins:only_sync", "pre_run": "pypm_test_plugins:pre_run"})
    pyproject = project / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace("[tool.pypm]\n", '[tool.pypm]\nplugins = ["only_sync"]\n', 1))
    log = tmp_path / "py.log"
    env = {"PYTHONPATH": str(site), "PYPM_TEST_LOG": str(log), "PYTHONPROFILEIMPORTTIME": "1"}
    stages = lambda: [json.loads(line)["stage"] for line in log.read_text().splitlines()]  # noqa: E731
    assert pypm("sync", "--frozen", cwd=project, env=env).returncode == 0
    r = pypm("run", "--frozen", "--no-sandbox", "python", "-c", "print('ok')", cwd=project, env=env)
    assert r.returncode == 0 and r.stdout == "ok\n", r.stderr
    assert not _plugins_loaded(r.stderr) and stages() == ["pre-sync", "post-sync"]
    # Another PYTHONPATH may find another plugin of that name: the full path (which finds the same one here).
    r = pypm("run", "--frozen", "--no-sandbox", "python", "-c", "pass", cwd=project,
             env={**env, "PYTHONPATH": f"{site}:{tmp_path}"})
    assert r.returncode == 0 and _plugins_loaded(r.stderr), r.stderr

    # The plugin's module gains a pre_run method after the sync: noticed, and the hook fires.
    (site / "pypm_test_plugins.py").write_text(PY_RECORDER + "\nOnlySync.pre_run = OnlySync.pre_sync\n")
    r = pypm("run", "--frozen", "--no-sandbox", "python", "-c", "pass", cwd=project, env=env)
    assert r.returncode == 0, r.stderr
    assert _plugins_loaded(r.stderr) and stages() == ["pre-sync", "post-sync", "pre-run"]

    # A plugin with a pre-run hook from the start: every run fires it.
    (site / "pypm_test_plugins.py").write_text(PY_RECORDER + PRE_RUN_SOURCE)
    pyproject.write_text(pyproject.read_text().replace('plugins = ["only_sync"]', 'plugins = ["only_sync", "pre_run"]'))
    log.unlink()
    assert pypm("sync", "--frozen", cwd=project, env=env).returncode == 0
    state = json.loads((project / ".venv" / ".pypm" / "state.json").read_text())
    assert state["tool"]["plugin-run"]["run-hooks"] == ["pre_run"]
    r = pypm("run", "--frozen", "--no-sandbox", "python", "-c", "pass", cwd=project, env=env)
    assert r.returncode == 0, r.stderr
    assert _plugins_loaded(r.stderr)
    assert [(json.loads(x)["plugin"], json.loads(x)["stage"]) for x in log.read_text().splitlines()][-1] == \
        ("pre_run", "pre-run")


def test_run_notices_a_native_plugin_replaced_or_shadowed_after_sync(pypm, small, native_dir: Path,
                                                                     tmp_path: Path) -> None:
    """pypm_syncer.so implements only the sync stages: runs skip the plugin machinery until the
    file is replaced by one with run hooks, or such a file appears earlier on plugin-path."""
    import shutil

    project, _, _ = small
    first, second = tmp_path / "p1", tmp_path / "p2"
    first.mkdir()
    second.mkdir()
    shutil.copy(native_dir / "pypm_syncer.so", second / "pypm_syncer.so")
    pyproject = project / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace(
        "[tool.pypm]\n", f'[tool.pypm]\nplugins = ["syncer"]\nplugin-path = ["{first}", "{second}"]\n', 1))
    log = tmp_path / "c.log"
    env = {"PYPM_TEST_LOG": str(log), "PYTHONPROFILEIMPORTTIME": "1"}
    stages = lambda: [c["stage"] for c in _read_c_log(log)]  # noqa: E731
    run = lambda: pypm("run", "--frozen", "--no-sandbox", "python", "-c", "pass", cwd=project, env=env)  # noqa: E731

    assert pypm("sync", "--frozen", cwd=project, env=env).returncode == 0
    r = run()
    assert r.returncode == 0 and not _plugins_loaded(r.stderr), r.stderr
    assert stages() == ["pre-sync", "post-sync"]

    # Replaced in place by a build that implements every stage: the run hooks fire.
    shutil.copy(native_dir / "pypm_recorder.so", second / "pypm_syncer.so.new")
    (second / "pypm_syncer.so.new").replace(second / "pypm_syncer.so")
    r = run()
    assert r.returncode == 0 and _plugins_loaded(r.stderr), r.stderr
    assert stages() == ["pre-sync", "post-sync", "pre-run", "post-run"]

    # Back to the sync-only build and synced: fast again ...
    shutil.copy(native_dir / "pypm_syncer.so", second / "pypm_syncer.so")
    log.unlink()
    assert pypm("sync", "--frozen", cwd=project, env=env).returncode == 0
    r = run()
    assert r.returncode == 0 and not _plugins_loaded(r.stderr), r.stderr
    assert stages() == ["pre-sync", "post-sync"]
    # ... until a file of that name appears earlier on plugin-path, which shadows it.
    shutil.copy(native_dir / "pypm_recorder.so", first / "pypm_syncer.so")
    r = run()
    assert r.returncode == 0 and _plugins_loaded(r.stderr), r.stderr
    assert stages() == ["pre-sync", "post-sync", "pre-run", "post-run"]
