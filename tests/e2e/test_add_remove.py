"""End-to-end `pypm add` and `pypm remove`: a real index on 127.0.0.1, real wheels, a real venv.

Each test reads pyproject.toml back as text (what was kept as written matters as much as what
changed), the lock as data, and the venv's dist-infos.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path

import pytest

from pypm.lockfile import loads
from tests.e2e.test_sync import installed

PYPROJECT = """\
# my project: comments and layout must survive every edit
[project]
name = "proj"
version = "0.1.0"
requires-python = ">=3.9"
dependencies = [
    "alpha>=1",  # the first one
    "zeta",
]

[tool.pypm]
index-url = "{url}"  # keep me
"""


@pytest.fixture
def world(dists, index_server, tmp_path):
    for name, version, deps in [("alpha", "1.0", []), ("alpha", "1.2", []), ("zeta", "2.0", []),
                                ("mid", "3.1.4", ["helper>=1"]), ("helper", "1.0", []),
                                ("tool", "5.0", []), ("speedups", "0.9", []), ("lib", "1.0", []), ("lib", "2.0", [])]:
        dists.wheel(name, version, requires_dist=deps)
    server = index_server()
    project = tmp_path / "proj"
    project.mkdir()
    (project / "pyproject.toml").write_text(PYPROJECT.format(url=server.url))
    return server, project


def locked(project: Path) -> dict[str, str]:
    return {p.name: p.version for p in loads((project / "pypm.lock").read_text()).packages if p.name != "proj"}


def test_add_bounds_sorts_keeps_comments_locks_and_installs(pypm, world):
    server, project = world
    r = pypm("add", "mid", cwd=project)
    assert r.returncode == 0, r.stderr
    text = (project / "pyproject.toml").read_text()
    # inserted in name order (the array was sorted), with a lower bound at the locked version;
    # the comments, the other entries and the rest of the file exactly as they were
    assert text == PYPROJECT.format(url=server.url).replace('    "zeta",\n', '    "mid>=3.1.4",\n    "zeta",\n')
    assert locked(project) == {"alpha": "1.2", "zeta": "2.0", "mid": "3.1.4", "helper": "1.0"}
    assert installed(project / ".venv") == {"alpha": "1.2", "zeta": "2.0", "mid": "3.1.4", "helper": "1.0"}
    assert "added mid to project.dependencies" in r.stderr
    assert r.stderr.count("Resolved") == 1, r.stderr  # the second lock (for the bound) is not announced
    # the lock is current for what pyproject.toml now says: a check passes, a sync does nothing
    assert pypm("lock", "--check", cwd=project).returncode == 0
    assert "pypm.lock is up to date" in pypm("lock", "--check", cwd=project).stderr


def test_add_to_dev_group_and_extra_creates_the_tables_and_installs_them(pypm, world):
    server, project = world
    r = pypm("add", "--dev", "tool", cwd=project)
    assert r.returncode == 0, r.stderr
    r = pypm("add", "--optional", "fast", "speedups", "--raw", cwd=project)
    assert r.returncode == 0, r.stderr
    data = tomllib.loads((project / "pyproject.toml").read_text())
    assert data["dependency-groups"] == {"dev": ["tool>=5.0"]}
    assert data["project"]["optional-dependencies"] == {"fast": ["speedups"]}  # --raw: as given
    # the sync installs what was added to: the dev group (a default) and the extra
    assert {"tool", "speedups"} <= set(installed(project / ".venv"))
    assert "# keep me" in (project / "pyproject.toml").read_text()


def test_add_replaces_an_entry_of_the_same_name_in_place(pypm, world):
    server, project = world
    r = pypm("add", "alpha<1.2", cwd=project)
    assert r.returncode == 0, r.stderr
    text = (project / "pyproject.toml").read_text()
    assert '    "alpha<1.2",  # the first one\n    "zeta",\n' in text  # same place, same comment
    assert locked(project)["alpha"] == "1.0"
    assert installed(project / ".venv")["alpha"] == "1.0"
    # a bare name over an entry with a version keeps the version: nothing to write
    before = (project / "pyproject.toml").read_bytes()
    r = pypm("add", "alpha", cwd=project)
    assert r.returncode == 0, r.stderr
    assert "already says so" in r.stderr
    assert (project / "pyproject.toml").read_bytes() == before
    # a bare name over a bare entry: the entry is the same, its bound is the change
    r = pypm("add", "zeta", cwd=project)
    assert r.returncode == 0, r.stderr
    assert "added zeta to project.dependencies" in r.stderr
    assert '    "zeta>=2.0",\n' in (project / "pyproject.toml").read_text()


def test_add_frozen_and_no_sync(pypm, world):
    server, project = world
    r = pypm("add", "--frozen", "lib", cwd=project)
    assert r.returncode == 0, r.stderr
    assert '"lib",' in (project / "pyproject.toml").read_text()  # no lock: no version to bound it at
    assert not (project / "pypm.lock").exists() and not (project / ".venv").exists()
    r = pypm("add", "--no-sync", "lib<2", cwd=project)
    assert r.returncode == 0, r.stderr
    assert locked(project)["lib"] == "1.0"
    assert not (project / ".venv").exists()


def test_a_failed_lock_or_sync_puts_pyproject_and_lock_back(pypm, world, dists):
    server, project = world
    assert pypm("sync", cwd=project).returncode == 0
    before = (project / "pyproject.toml").read_bytes()
    lock_before = (project / "pypm.lock").read_bytes()
    venv_before = installed(project / ".venv")

    r = pypm("add", "no-such-package", cwd=project)
    assert r.returncode == 5, r.stderr  # not found on the index
    assert "no-such-package" in r.stderr and "Traceback" not in r.stderr
    assert "pyproject.toml and pypm.lock are as they were before the command" in r.stderr
    assert (project / "pyproject.toml").read_bytes() == before
    assert (project / "pypm.lock").read_bytes() == lock_before

    # the lock succeeds, the download is corrupt: the sync fails, and both files go back
    server.corrupt(dists.wheel("lib", "2.0").name)
    r = pypm("add", "lib", cwd=project)
    assert r.returncode == 6, r.stderr
    assert (project / "pyproject.toml").read_bytes() == before
    assert (project / "pypm.lock").read_bytes() == lock_before
    assert installed(project / ".venv") == venv_before


def test_remove(pypm, world):
    server, project = world
    assert pypm("add", "--dev", "tool", cwd=project).returncode == 0
    assert "tool" in installed(project / ".venv")
    r = pypm("remove", "zeta", cwd=project)
    assert r.returncode == 0, r.stderr
    text = (project / "pyproject.toml").read_text()
    assert '    "alpha>=1",  # the first one\n]\n' in text
    assert "zeta" not in locked(project) and "zeta" not in installed(project / ".venv")

    # not in the array named: exit 3, with where it is instead; nothing changed
    before = (project / "pyproject.toml").read_bytes()
    r = pypm("remove", "tool", cwd=project)
    assert r.returncode == 3, r.stderr
    assert "tool is not in project.dependencies" in r.stderr
    assert "dependency-groups.dev (--dev)" in r.stderr
    assert (project / "pyproject.toml").read_bytes() == before
    r = pypm("remove", "--dev", "tool", cwd=project)
    assert r.returncode == 0, r.stderr
    assert tomllib.loads((project / "pyproject.toml").read_text())["dependency-groups"]["dev"] == []
    assert "tool" not in installed(project / ".venv")


@pytest.mark.parametrize("argv, message", [
    (["add", "not a requirement!"], "is not a valid requirement"),
    (["add", "./some/dir"], "is not a project directory, a wheel or an sdist"),
    (["add", "lib @ svn+https://example.invalid/lib"], "is a direct URL, which pypm cannot lock yet"),
    (["add", "lib @ git+https://example.invalid/lib.git#subdirectory=/abs"], "must be a relative path inside"),
    (["add", "lib @ https://example.invalid/lib-1.0.zip#sha1=ab"], "is not #sha256=<64 hex digits>"),
    (["add", "--editable", "alpha"], "--editable takes a project directory"),
    (["add", "--dev", "--group", "lint", "tool"], "give one of them"),
    (["add", "--group", "bad!", "tool"], "is not a valid name"),
    (["add", "proj"], "a project cannot depend on itself"),
    (["remove", "alpha>=1"], "is not a package name"),
])
def test_bad_command_lines_change_nothing(pypm, world, argv, message):
    server, project = world
    before = (project / "pyproject.toml").read_bytes()
    r = pypm(*argv, cwd=project)
    assert r.returncode == 2, r.stderr
    assert message in r.stderr and "Traceback" not in r.stderr
    assert (project / "pyproject.toml").read_bytes() == before
    assert not (project / "pypm.lock").exists()


def test_dynamic_dependencies_are_refused(pypm, world):
    server, project = world
    path = project / "pyproject.toml"
    path.write_text(path.read_text().replace('version = "0.1.0"\n', 'version = "0.1.0"\ndynamic = ["dependencies"]\n')
                    .replace('dependencies = [\n    "alpha>=1",  # the first one\n    "zeta",\n]\n', ""))
    r = pypm("add", "lib", cwd=project)
    assert r.returncode == 3, r.stderr
    assert "`project.dependencies` is listed in `project.dynamic`" in r.stderr


def test_markers_and_extras_are_written_readably(pypm, world):
    server, project = world
    r = pypm("add", "--frozen", 'lib[fast]>=1; python_version < "3.12"', cwd=project)
    assert r.returncode == 0, r.stderr
    assert """    "lib[fast]>=1; python_version < '3.12'",\n""" in (project / "pyproject.toml").read_text()
    # the same name under another marker is another entry; under the same marker, the same one
    r = pypm("add", "--frozen", "lib<3; python_version >= '3.12'", "lib[x]; python_version < '3.12'", cwd=project)
    assert r.returncode == 0, r.stderr
    deps = tomllib.loads((project / "pyproject.toml").read_text())["project"]["dependencies"]
    assert deps == ["alpha>=1", "lib[fast,x]>=1; python_version < '3.12'", "lib<3; python_version >= '3.12'", "zeta"]


def _add_caught_downloading(pypm, server, dists, project):
    """`pypm add big` started and caught in the middle of its sync's download (the index stalls
    after 512 kB of the 1 MB wheel), after it has edited pyproject.toml and locked."""
    import time

    big = dists.wheel("big", "1.0", modules={"big/__init__.py": "", "big/blob.bin": os.urandom(1 << 20)})
    server.add(big)
    server.stall(big.name, nbytes=512 << 10, seconds=60)
    proc = pypm.popen("add", "big", cwd=project)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        if any(p.stat().st_size > 0 for p in pypm.cache_dir.rglob(big.name + ".part")):
            break
        time.sleep(0.01)
    assert proc.poll() is None, proc.communicate()
    return proc


@pytest.mark.parametrize("edited_meanwhile", [False, True])
def test_ctrl_c_during_the_sync_puts_pyproject_and_lock_back(pypm, world, dists, edited_meanwhile):
    """Ctrl-C in the middle of the sync's download: both files as they were, the venv too. A
    pyproject.toml someone saved meanwhile is theirs: left as they saved it, with a warning."""
    import signal

    server, project = world
    assert pypm("sync", cwd=project).returncode == 0
    before = (project / "pyproject.toml").read_bytes()
    lock_before = (project / "pypm.lock").read_bytes()
    proc = _add_caught_downloading(pypm, server, dists, project)
    assert b"big" in (project / "pyproject.toml").read_bytes()  # caught in the middle: edited and locked
    saved = (project / "pyproject.toml").read_bytes() + b"# saved by an editor meanwhile\n"
    if edited_meanwhile:
        (project / "pyproject.toml").write_bytes(saved)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert (project / "pypm.lock").read_bytes() == lock_before
    assert "big" not in installed(project / ".venv")
    if edited_meanwhile:
        assert "pyproject.toml changed while this command ran: left as it is" in err
        assert (project / "pyproject.toml").read_bytes() == saved
    else:
        assert "pyproject.toml and pypm.lock are as they were before the command" in err
        assert (project / "pyproject.toml").read_bytes() == before


def test_a_second_add_waits_for_the_first_to_finish_or_roll_back(pypm, world, dists):
    """The second `pypm add` waits for the first one's sync (the project's lock) before it reads
    pyproject.toml. Here the first is interrupted and rolls back: the second then adds to the
    file as it was, not to the first's edit (which, read earlier, it would have written back)."""
    import signal
    import time

    server, project = world
    first = _add_caught_downloading(pypm, server, dists, project)
    second = pypm.popen("add", "tool", cwd=project)
    time.sleep(2)  # started, and waiting for the project's lock
    assert second.poll() is None, second.communicate()
    first.send_signal(signal.SIGINT)
    _, err = first.communicate(timeout=60)
    assert first.returncode == 130, err
    _, err = second.communicate(timeout=120)
    assert second.returncode == 0, err
    assert "waiting for another pypm process" in err
    deps = tomllib.loads((project / "pyproject.toml").read_text())["project"]["dependencies"]
    assert deps == ["alpha>=1", "tool>=5.0", "zeta"]
    assert "big" not in locked(project) and "big" not in installed(project / ".venv")
    assert "tool" in installed(project / ".venv")


def _kill_9(proc) -> None:
    """SIGKILL to pypm and to what it started (the download process): nothing runs on after it."""
    import signal

    import psutil

    children = psutil.Process(proc.pid).children(recursive=True)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    for c in children:
        try:
            c.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(children, timeout=30)


@pytest.mark.parametrize("next_command", ["sync", "add"])
def test_a_killed_add_is_rolled_back_by_the_next_command(pypm, world, dists, next_command):
    """kill -9 in the middle of the sync: nothing could put the files back then. The next command
    on the project does, says so, and goes on from the project as it was."""
    server, project = world
    assert pypm("sync", cwd=project).returncode == 0
    before = (project / "pyproject.toml").read_bytes()
    lock_before = (project / "pypm.lock").read_bytes()
    proc = _add_caught_downloading(pypm, server, dists, project)
    _kill_9(proc)
    assert b"big" in (project / "pyproject.toml").read_bytes() and b"big" in (project / "pypm.lock").read_bytes()
    assert list((pypm.cache_dir / "edits").glob("*.json"))  # what the killed command left to roll back
    server.reset_faults()

    r = pypm(*([next_command] if next_command == "sync" else ["add", "tool"]), cwd=project)
    assert r.returncode == 0, r.stderr
    assert "`pypm add` (added big to project.dependencies; process" in r.stderr, r.stderr
    assert "was interrupted before it finished: rolled back" in r.stderr, r.stderr
    if next_command == "sync":
        assert (project / "pyproject.toml").read_bytes() == before
        assert (project / "pypm.lock").read_bytes() == lock_before
        assert installed(project / ".venv") == {"alpha": "1.2", "zeta": "2.0"}
    else:  # the second add edits the file as it was, not the killed one's edit
        deps = tomllib.loads((project / "pyproject.toml").read_text())["project"]["dependencies"]
        assert deps == ["alpha>=1", "tool>=5.0", "zeta"]
        assert "big" not in locked(project) and "big" not in installed(project / ".venv")
    assert not list((pypm.cache_dir / "edits").glob("*.json"))


def test_after_a_killed_add_a_file_changed_since_is_left_and_a_live_add_is_not_touched(pypm, world, dists):
    server, project = world
    assert pypm("sync", cwd=project).returncode == 0
    lock_before = (project / "pypm.lock").read_bytes()
    # While the add lives (its download stalled), another command leaves its files alone.
    proc = _add_caught_downloading(pypm, server, dists, project)
    r = pypm("tree", cwd=project)  # (the full CLI: it looks for records to roll back)
    assert r.returncode == 0 and "big" in r.stdout, r.stderr
    assert "interrupted" not in r.stderr and b"big" in (project / "pyproject.toml").read_bytes(), r.stderr
    assert list((pypm.cache_dir / "edits").glob("*.json"))
    _kill_9(proc)
    # An editor saved pyproject.toml after the kill: theirs, kept; the lock, still the killed one's, goes back.
    saved = (project / "pyproject.toml").read_bytes() + b"# saved by an editor\n"
    (project / "pyproject.toml").write_bytes(saved)
    server.reset_faults()
    r = pypm("sync", cwd=project)
    assert r.returncode == 0, r.stderr
    assert "rolled back, " + str(project / "pypm.lock") + " is as before it" in r.stderr, r.stderr
    assert f"and {project / 'pyproject.toml'} has changed since: left as it is" in r.stderr, r.stderr
    assert (project / "pyproject.toml").read_bytes() == saved
    # then locked again from the file as saved, and synced
    assert "big" in locked(project) and (project / "pypm.lock").read_bytes() != lock_before
    assert "big" in installed(project / ".venv")


# --------------------------------------------------------------------------- pypm version

@pytest.mark.parametrize("current, bumps, expected", [
    ("1.2.3", ["patch"], "1.2.4"), ("1.2.3", ["minor"], "1.3.0"), ("1.2.3", ["major"], "2.0.0"),
    ("1.2", ["patch"], "1.2.1"), ("1.2.3", ["patch", "beta"], "1.2.4b1"), ("1.2.4b1", ["beta"], "1.2.4b2"),
    ("1.2.4b2", ["rc"], "1.2.4rc1"), ("1.2.4rc1", ["stable"], "1.2.4"), ("1.2.4rc1", ["patch"], "1.2.4"),
    ("2.0.0a1", ["major"], "2.0.0"), ("1.3.0.dev2", ["minor"], "1.3.0"), ("1.2.3", ["post"], "1.2.3.post1"),
    ("1.2.3.post1", ["post"], "1.2.3.post2"), ("1.2.3", ["minor", "dev"], "1.3.0.dev1"), ("1!1.0", ["major"], "1!2.0.0"),
])
def test_bump_version(current, bumps, expected):
    from pypm.edit import bump_version

    assert bump_version(current, bumps) == expected


@pytest.mark.parametrize("current, bumps", [("1.2.3", ["beta"]), ("1.2.3", ["stable"]), ("1.2.3", ["dev"])])
def test_a_bump_that_would_not_go_up_is_refused(current, bumps):
    from pypm.edit import bump_version

    with pytest.raises(ValueError, match="would not be higher"):
        bump_version(current, bumps)


def test_version_shows_sets_bumps_and_keeps_the_lock_in_step(pypm, world):
    server, project = world
    r = pypm("version", cwd=project)
    assert r.returncode == 0 and r.stdout == "proj 0.1.0\n", r.stderr
    assert pypm("version", "--short", cwd=project).stdout == "0.1.0\n"
    assert pypm("sync", cwd=project).returncode == 0
    before = (project / "pyproject.toml").read_bytes()

    r = pypm("version", "--bump", "minor", "--dry-run", cwd=project)
    assert r.returncode == 0 and r.stdout == "proj 0.1.0 => 0.2.0\n", r.stderr
    assert (project / "pyproject.toml").read_bytes() == before

    r = pypm("version", "--bump", "minor", "--bump", "beta", "--short", cwd=project)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "0.2.0b1\n"
    assert (project / "pyproject.toml").read_bytes() == before.replace(b'version = "0.1.0"', b'version = "0.2.0b1"')
    me = loads((project / "pypm.lock").read_text()).root()
    assert me is not None and me.version == "0.2.0b1"  # the lock's record of the project follows
    assert pypm("lock", "--check", cwd=project).returncode == 0

    r = pypm("version", "1.0-RC1", cwd=project)
    assert r.returncode == 0 and r.stdout == "proj 0.2.0b1 => 1.0rc1\n", r.stderr  # PEP 440's normal form

    for argv, code, message in [
        (["version", "--bump", "beta"], 2, "would not be higher"),
        (["version", "not.a.version!"], 2, "is not a valid version"),
        (["version", "2.0", "--bump", "major"], 2, "not both"),
    ]:
        before = (project / "pyproject.toml").read_bytes()
        r = pypm(*argv, cwd=project)
        assert r.returncode == code and message in r.stderr and "Traceback" not in r.stderr, (argv, r.stderr)
        assert (project / "pyproject.toml").read_bytes() == before


def test_a_version_edited_by_hand_makes_the_lock_stale_until_its_record_follows(pypm, world):
    """The version is no resolution input (not in content-hash), but a lock that records an old
    one is out of date, as uv has it: --check and --locked refuse it; lock, sync and run bring
    the record up to date without resolving."""
    server, project = world
    assert pypm("sync", cwd=project).returncode == 0
    path = project / "pyproject.toml"
    path.write_text(path.read_text().replace('version = "0.1.0"', 'version = "0.3.0"'))
    for argv in (["lock", "--check"], ["sync", "--locked"]):
        r = pypm(*argv, cwd=project)
        assert r.returncode == 1, (argv, r.stderr)
        assert "records the project's version 0.1.0; pyproject.toml says 0.3.0" in r.stderr, r.stderr
    lock_before = (project / "pypm.lock").read_text()
    server.clear_requests()
    r = pypm("lock", cwd=project)
    assert r.returncode == 0 and "Updated the project's version in pypm.lock: 0.1.0 => 0.3.0" in r.stderr, r.stderr
    assert server.requests == []  # nothing resolved again
    assert (project / "pypm.lock").read_text() == lock_before.replace('version = "0.1.0"', 'version = "0.3.0"', 1)
    assert pypm("lock", "--check", cwd=project).returncode == 0
    # and from `pypm run` (its no-op `pypm lock` fast path too sees the version)
    path.write_text(path.read_text().replace('version = "0.3.0"', 'version = "0.4.0"'))
    assert pypm("lock", "--check", cwd=project).returncode == 1
    r = pypm("run", "--", "python", "-c", "pass", cwd=project)
    assert r.returncode == 0 and "0.3.0 => 0.4.0" in r.stderr, r.stderr
    me = loads((project / "pypm.lock").read_text()).root()
    assert me is not None and me.version == "0.4.0"
    assert pypm("lock", "--check", cwd=project).returncode == 0


def test_a_dynamic_version_is_refused(pypm, world):
    server, project = world
    path = project / "pyproject.toml"
    path.write_text(path.read_text().replace('version = "0.1.0"\n', 'dynamic = ["version"]\n')
                    .replace("[project]\n", '[build-system]\nrequires = ["setuptools"]\nbuild-backend = "setuptools.build_meta"\n\n[project]\n'))
    for argv in (["version"], ["version", "--bump", "patch"]):
        r = pypm(*argv, cwd=project)
        assert r.returncode == 3, r.stderr
        assert "dynamic" in r.stderr and "Traceback" not in r.stderr


def test_version_removes_a_signature_that_covered_the_old_version(pypm, world):
    server, project = world
    assert pypm("keygen", "-o", str(project / "key"), cwd=project).returncode == 0
    r = pypm("lock", "--sign", str(project / "key"), cwd=project)
    assert r.returncode == 0, r.stderr
    assert loads((project / "pypm.lock").read_text()).signature
    r = pypm("version", "--bump", "patch", "--no-sync", cwd=project)
    assert r.returncode == 0, r.stderr
    assert "sign it again with `pypm lock --sign KEY`" in r.stderr
    lock = loads((project / "pypm.lock").read_text())
    me = lock.root()
    assert me is not None and me.version == "0.1.1" and not lock.signature


def test_a_project_that_trusts_only_signed_locks_signs_with_sign(pypm, world):
    """With [tool.pypm] trusted-keys the sync refuses an unsigned lock: add/version without
    --sign fail and roll back (exit 6, files as they were); with --sign KEY the new lock is
    signed and synced."""
    server, project = world
    assert pypm("keygen", "-o", str(project / "key"), cwd=project).returncode == 0
    path = project / "pyproject.toml"
    path.write_text(path.read_text().replace("[tool.pypm]\n", '[tool.pypm]\ntrusted-keys = ["key.pub"]\n'))
    assert pypm("lock", "--sign", "key", cwd=project).returncode == 0
    assert pypm("sync", cwd=project).returncode == 0
    before, lock_before = path.read_bytes(), (project / "pypm.lock").read_bytes()

    r = pypm("add", "lib<2", cwd=project)
    assert r.returncode == 6 and "is not signed" in r.stderr, r.stderr
    assert "are as they were before the command" in r.stderr
    assert path.read_bytes() == before and (project / "pypm.lock").read_bytes() == lock_before

    r = pypm("add", "--sign", "key", "lib<2", cwd=project)
    assert r.returncode == 0, r.stderr
    assert installed(project / ".venv")["lib"] == "1.0"
    assert loads((project / "pypm.lock").read_text()).signature
    r = pypm("version", "--bump", "patch", "--sign", "key", cwd=project)
    assert r.returncode == 0, r.stderr
    lock = loads((project / "pypm.lock").read_text())
    me = lock.root()
    assert me is not None and me.version == "0.1.1" and lock.signature
    assert pypm("run", "python", "-c", "pass", cwd=project).returncode == 0  # the signed lock is trusted


def test_layout_is_kept_unless_an_array_grows_past_one_entry(pypm, world):
    server, project = world
    path = project / "pyproject.toml"
    path.write_text(path.read_text() + '\n[dependency-groups]\nlint = ["zeta", "alpha"]\ndocs = ["zeta"]\n')
    assert pypm("add", "--frozen", "--group", "lint", "mid", cwd=project).returncode == 0
    assert pypm("add", "--frozen", "--group", "docs", "mid", cwd=project).returncode == 0
    text = path.read_text()
    assert 'lint = ["zeta", "alpha", "mid"]\n' in text  # several on one line: stays on one line
    assert 'docs = [\n    "mid",\n    "zeta",\n]\n' in text  # from one entry to two: one per line


def test_add_from_a_requirements_file(pypm, world):
    """`pypm add -r requirements.txt` (as uv's): its requirements in order, with what pip files
    hold: comments, continuations, `--hash` options (the lock keeps hashes), `-r` includes
    (relative to the file), `-e DIR` and plain paths (relative to the file), and pip's source
    options, which are said and skipped. What it cannot take is refused naming the line, with
    pyproject.toml untouched."""
    from tests.e2e.test_path_deps import write_lib

    server, project = world
    write_lib(project.parent / "libs" / "shared", "shared")
    write_lib(project.parent / "libs" / "util", "util")
    reqs = project / "reqs"
    reqs.mkdir()
    (reqs / "base.txt").write_text("mid==3.1.4 \\\n    --hash=sha256:00  # pinned by pip-compile\n"
                                   "-e ../../libs/shared\n")
    (reqs / "all.txt").write_text("# the whole set\n--index-url https://example.invalid/simple\n-r base.txt\n\n"
                                  "tool>=5 ; python_version >= '3.9'\n../../libs/util\n")
    before = (project / "pyproject.toml").read_text()
    r = pypm("add", "-r", "reqs/all.txt", "--raw", cwd=project)
    assert r.returncode == 0, r.stderr
    assert f"warning: {reqs / 'all.txt'}:2: `--index-url https://example.invalid/simple` is not applied" in r.stderr
    doc = tomllib.loads((project / "pyproject.toml").read_text())
    assert doc["project"]["dependencies"] == ["alpha>=1", "mid==3.1.4", "shared", "tool>=5; python_version >= '3.9'",
                                              "util", "zeta"], doc["project"]["dependencies"]
    assert doc["tool"]["pypm"]["sources"] == {"shared": {"path": "../libs/shared", "editable": True},
                                              "util": {"path": "../libs/util"}}
    assert installed(project / ".venv") == {"alpha": "1.2", "zeta": "2.0", "mid": "3.1.4", "helper": "1.0",
                                            "tool": "5.0", "shared": "0.3.0", "util": "0.3.0"}
    # refused, naming the file and the line; nothing changed
    (project / "pyproject.toml").write_text(before)
    (reqs / "bad.txt").write_text("lib\n-c constraints.txt\n")
    r = pypm("add", "-r", "reqs/bad.txt", cwd=project)
    assert r.returncode == 2 and f"{reqs / 'bad.txt'}:2: `-c constraints.txt` is not something" in r.stderr, r.stderr
    assert (project / "pyproject.toml").read_text() == before
    r = pypm("add", "-r", "reqs/missing.txt", cwd=project)
    assert r.returncode == 2 and "cannot read the requirements file" in r.stderr and "Traceback" not in r.stderr
    r = pypm("add", cwd=project)
    assert r.returncode == 2 and "needs a requirement or -r FILE" in r.stderr, r.stderr
