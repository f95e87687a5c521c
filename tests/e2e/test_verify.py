"""End-to-end `pypm verify`: real wheels on a local index, a real `pypm lock` and `pypm sync`,
then a venv or a lock tampered with by hand."""

from __future__ import annotations

import base64
import csv
import hashlib
import json
import re
import subprocess
import zipfile

import pytest

from pypm.merkle import leaf_hash, node_hash
from tests.e2e.test_sync import site_packages, write_project


@pytest.fixture
def synced(pypm, dists, index_server, tmp_path):
    """A project on a local index (alpha -> beta, alpha with a console script, a `#!python` script
    and data), locked and synced; returns (project, server, wheels, sync seconds)."""
    a = dists.wheel("alpha", "1.0", requires_dist=["beta>=1"],
                    modules={"alpha/__init__.py": "from beta import B\nA = 'alpha ' + B\ndef main():\n    print(A)\n",
                             "alpha/sub/util.py": "U = 1\n"},
                    entry_points={"console_scripts": {"alpha-hello": "alpha:main"}},
                    data={"data/share/alpha/readme.txt": b"alpha data\n",
                          "scripts/alpha-raw": b"#!python\nimport alpha\nprint(alpha.A)\n"})
    b = dists.wheel("beta", "2.0", modules={"beta/__init__.py": "B = 'beta'\n", "beta/more.py": "M = 2\n"})
    dists.wheel("beta", "1.0")  # another real file on the same index, for the swapped-hash test
    server = index_server()
    project = write_project(tmp_path / "proj", deps=["alpha"], tool=f'index-url = "{server.url}"\n')
    pypm("lock", cwd=project, check=True)
    r = pypm("sync", cwd=project, check=True)
    m = re.search(r"Synced .* in (\d+\.\d+)s", r.stderr)
    assert m is not None, r.stderr
    took = float(m.group(1))  # as sync measures itself
    return project, server, {"alpha": a, "beta": b}, took


def verify(pypm, project, *flags):
    return pypm("verify", *flags, cwd=project)


def lines(r) -> list[str]:
    return [re.sub(r"\s+", " ", x.strip()) for x in r.stdout.splitlines() if x.strip()]


def test_clean_venv_verifies_and_faster_than_the_sync(pypm, synced):
    project, _, wheels, sync_took = synced
    r = verify(pypm, project, "--venv")
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout == "" and "everything matches" in r.stderr
    m = re.search(r"verified (\d+) files of 2 packages in \.venv in (\d+\.\d+)s", r.stderr)
    assert m and int(m.group(1)) >= 12, r.stderr
    took = float(m.group(2))  # both as the commands measure themselves (no interpreter start-up)
    assert took < sync_took / 2, f"verify took {took:.2f}s, the sync {sync_took:.2f}s"
    assert verify(pypm, project).returncode == 0  # no flag means --venv


def test_recorded_root_is_the_documented_tree_of_the_wheel(synced):
    """The root in the dist-info is recomputed here from the wheel's bytes with the §14 rules."""
    project, _, wheels, _ = synced
    [info] = site_packages(project / ".venv").glob("beta-2.0.dist-info")
    rec = json.loads((info / "pypm_source.json").read_text())
    with zipfile.ZipFile(wheels["beta"]) as zf:
        leaves = sorted((i.filename.encode(), hashlib.sha256(zf.read(i)).digest())
                        for i in zf.infolist() if not i.is_dir())
    level = [leaf_hash(p.decode(), d) for p, d in leaves]
    while len(level) > 1:
        level = [node_hash(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)] + (
            [level[-1]] if len(level) % 2 else [])
    assert rec["merkle-root"] == level[0].hex()
    assert rec["wheel-sha256"] == rec["sha256"] == hashlib.sha256(wheels["beta"].read_bytes()).hexdigest()


def test_edited_deleted_and_added_files_are_reported_by_package_and_path(pypm, synced):
    project, _, _, _ = synced
    venv = project / ".venv"
    sp = site_packages(venv)
    rel = lambda p: str(p.relative_to(project))  # noqa: E731
    # one byte, in place: the file is a hard link into the cache, so this edits the cache's copy too
    target = sp / "beta" / "__init__.py"
    with open(target, "r+b") as f:
        f.seek(0)
        f.write(b"C")
    (sp / "alpha" / "sub" / "util.py").unlink()
    (sp / "alpha" / "evil.py").write_text("import os\n")
    (sp / "zz-evil.pth").write_text("import os\n")
    (venv / "bin" / "alpha-hello").write_text("#!/bin/sh\necho pwned\n")
    r = verify(pypm, project, "--venv")
    assert r.returncode == 1, r.stdout + r.stderr
    out = lines(r)
    assert f"modified beta 2.0 {rel(target)}" in out
    assert f"missing alpha 1.0 {rel(sp / 'alpha' / 'sub' / 'util.py')}" in out
    assert f"added alpha 1.0 {rel(sp / 'alpha' / 'evil.py')}" in out
    assert f"added (no package) {rel(sp / 'zz-evil.pth')}" in out
    assert f"modified alpha 1.0 {rel(venv / 'bin' / 'alpha-hello')}" in out
    assert len(out) == 5, out
    assert "5 problem(s)" in r.stderr


def test_an_edited_record_cannot_hide_an_edited_file(pypm, synced):
    project, _, _, _ = synced
    sp = site_packages(project / ".venv")
    target = sp / "beta" / "more.py"
    data = b"M = 'evil'\n"
    target.unlink()  # (not in place this time: the cache's copy stays intact)
    target.write_bytes(data)
    [info] = sp.glob("beta-2.0.dist-info")
    rows = list(csv.reader((info / "RECORD").read_text().splitlines()))
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    rows = [[p, f"sha256={digest}", str(len(data))] if p == "beta/more.py" else [p, h, s] for p, h, s in rows]
    with open(info / "RECORD", "w", newline="") as f:
        csv.writer(f, lineterminator="\n").writerows(rows)
    r = verify(pypm, project, "--venv")
    assert r.returncode == 1
    assert lines(r) == [f"modified beta 2.0 {target.relative_to(project)}"]


def test_rewritten_script_and_pyc_rules(pypm, synced):
    """A `#!python` script is checked past the shebang the installer wrote; bytecode beside its
    source is not an added file, bytecode without one is."""
    project, _, _, _ = synced
    venv = project / ".venv"
    raw = venv / "bin" / "alpha-raw"
    assert raw.read_text().startswith(f"#!{venv / 'bin' / 'python'}")
    sp = site_packages(venv)
    subprocess.run([str(venv / "bin" / "python"), "-m", "compileall", "-q", str(sp / "alpha")], check=True)
    assert list((sp / "alpha" / "sub" / "__pycache__").glob("util.*.pyc"))
    assert verify(pypm, project).returncode == 0
    (sp / "alpha" / "__pycache__" / "ghost.cpython-311.pyc").write_bytes(b"\0" * 16)
    raw.write_text(raw.read_text().replace("print(alpha.A)", "print('x')"))
    r = verify(pypm, project)
    assert r.returncode == 1
    assert sorted(lines(r)) == sorted([
        f"added alpha 1.0 {(sp / 'alpha' / '__pycache__' / 'ghost.cpython-311.pyc').relative_to(project)}",
        f"modified alpha 1.0 {raw.relative_to(project)}"])


def test_an_altered_install_record_is_reported(pypm, synced):
    project, _, _, _ = synced
    [info] = site_packages(project / ".venv").glob("beta-2.0.dist-info")
    src = info / "pypm_source.json"
    rec = json.loads(src.read_text())
    rec["merkle-root"] = "0" * 64
    src.write_text(json.dumps(rec))
    r = verify(pypm, project)
    assert r.returncode == 1
    [line] = lines(r)
    assert line.startswith("package beta 2.0") and "Merkle root 0000000000000000" in line


def test_a_package_not_in_the_lock_is_reported(pypm, synced, dists):
    project, _, _, _ = synced
    sp = site_packages(project / ".venv")
    info = sp / "stray-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: stray\nVersion: 1.0\n")
    (sp / "stray.py").write_text("")
    (info / "RECORD").write_text("stray.py,,\nstray-1.0.dist-info/METADATA,,\nstray-1.0.dist-info/RECORD,,\n")
    r = verify(pypm, project)
    assert r.returncode == 1
    [line] = lines(r)
    assert line.startswith("package stray 1.0") and "not installed by pypm" in line


def test_verify_without_a_venv_or_lock_says_what_to_do(pypm, tmp_path):
    project = write_project(tmp_path / "p")
    r = pypm("verify", cwd=project)
    assert r.returncode == 3 and "pypm.lock does not exist" in r.stderr and "hint:" in r.stderr
    (project / "pypm.lock").write_text('version = 1\nrequires-python = ">=3.9"\ncontent-hash = "sha256:x"\n'
                                       'package = []\n')
    r = pypm("verify", "--venv", cwd=project)
    assert r.returncode == 1 and ".venv does not exist" in r.stderr and "pypm sync" in r.stderr


# --------------------------------------------------------------------------- --lock

def test_verify_lock_passes_on_an_honest_lock(pypm, synced):
    project, _, _, _ = synced
    r = verify(pypm, project, "--lock")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "2 locked files against their index" in r.stderr


def test_verify_lock_catches_a_hash_swapped_for_another_real_files_hash(pypm, synced, dists):
    project, _, wheels, _ = synced
    lock = project / "pypm.lock"
    real = hashlib.sha256(wheels["beta"].read_bytes()).hexdigest()
    other = hashlib.sha256((dists.dir / "beta-1.0-py3-none-any.whl").read_bytes()).hexdigest()
    text = lock.read_text()
    assert text.count(real) == 1
    lock.write_text(text.replace(real, other))
    r = verify(pypm, project, "--lock")
    assert r.returncode == 1
    [line] = lines(r)
    assert line.startswith("lock beta 2.0 beta-2.0-py3-none-any.whl")
    assert f"pypm.lock has sha256 {other}, the index serves {real}" in line


def test_verify_lock_catches_a_moved_url_and_a_stale_lock(pypm, synced):
    project, server, _, _ = synced
    lock = project / "pypm.lock"
    lock.write_text(lock.read_text().replace(server.file_url("alpha-1.0-py3-none-any.whl"),
                                             "http://127.0.0.1:9/elsewhere/alpha-1.0-py3-none-any.whl"))
    pyproject = project / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace('dependencies = ["alpha"]', 'dependencies = ["alpha>=1"]'))
    r = verify(pypm, project, "--lock")
    assert r.returncode == 1
    out = lines(r)
    assert any(x.startswith("lock alpha 1.0 alpha-1.0-py3-none-any.whl (pypm.lock has URL http://127.0.0.1:9/")
               for x in out), out
    assert any(x.startswith("lock pypm.lock content-hash does not match pyproject.toml") for x in out), out


# --------------------------------------------------------------------------- wheels pypm built itself

def test_sdist_built_and_editable_installs_are_verified_against_the_wheel_pypm_built(pypm, dists, index_server,
                                                                                      tmp_path):
    """The lock names an sdist (or nothing, for the project): the tree is the built wheel's,
    found through the install record's wheel-sha256."""
    from tests.e2e.test_sync import BACKEND, app_sdist, write_lock

    sd = app_sdist(dists)
    server = index_server()
    project = write_project(tmp_path / "p", name="proj", deps=["app"], editable=True)
    (project / "_backend.py").write_text(BACKEND.replace('NAME, VERSION = "app"', 'NAME, VERSION = "proj"'))
    write_lock(project, server, [], sdists=[sd], main=["app"], name="proj", editable=True)
    pypm("sync", "--frozen", cwd=project, check=True)
    sp = site_packages(project / ".venv")
    for info in ("app-0.1.0.dist-info", "proj-0.1.0.dist-info"):
        rec = json.loads((sp / info / "pypm_source.json").read_text())
        assert len(rec["merkle-root"]) == 64 and rec["wheel-sha256"] != rec["sha256"]
    r = verify(pypm, project)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "of 2 packages" in r.stderr
    (sp / "app" / "__init__.py").write_text("GREETING = 'evil'\n")
    (sp / "_app_editable.pth").write_text("/tmp\n")
    r = verify(pypm, project)
    assert r.returncode == 1
    assert sorted(lines(r)) == [f"modified app 0.1.0 {(sp / 'app' / '__init__.py').relative_to(project)}",
                                f"modified proj 0.1.0 {(sp / '_app_editable.pth').relative_to(project)}"]


def test_a_whole_package_removed_is_reported(pypm, synced):
    project, _, _, _ = synced
    sp = site_packages(project / ".venv")
    import shutil

    shutil.rmtree(sp / "beta")
    shutil.rmtree(sp / "beta-2.0.dist-info")
    r = verify(pypm, project)
    assert r.returncode == 1
    assert lines(r) == ["missing beta 2.0 the whole package: pypm.lock selects it for this venv and it is not "
                        "installed"]
