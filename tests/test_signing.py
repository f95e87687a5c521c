"""Signed locks: keygen, `lock --sign`, and sync/run refusing unsigned, altered or untrusted locks."""

from __future__ import annotations

import base64
import hashlib
import stat
import tomllib
from pathlib import Path
from types import SimpleNamespace

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat, load_pem_public_key

from pypm.errors import IntegrityError, ProjectError, UsageError
from pypm.lockfile import Dependency, FileEntry, Lock, LockedPackage, dumps, loads
from pypm.merkle import lock_root
from pypm.signing import (key_id, keygen_command, load_trusted_keys, require_signed_lock, sign_lock,
                          signed_message)
from tests.e2e.test_sync import write_project


def _ctx(d: Path) -> SimpleNamespace:
    return SimpleNamespace(directory=d, info=lambda m: None, quiet=True)


def _keygen(d: Path, name: str = "key") -> tuple[Path, Path]:
    keygen_command(_ctx(d), SimpleNamespace(output=name))
    return d / name, d / f"{name}.pub"


def _lock() -> Lock:
    f = FileEntry("idna-3.7-py3-none-any.whl", "http://127.0.0.1:1/files/idna-3.7-py3-none-any.whl", "1" * 64, 66)
    return Lock(requires_python=">=3.9", content_hash="sha256:" + "0" * 64, packages=[
        LockedPackage("idna", "3.7", {"registry": "http://127.0.0.1:1/simple/"}, wheels=[f]),
        LockedPackage("app", "0.1.0", {"virtual": "."}, dependencies=[Dependency("idna", "3.7")]),
    ])


# --------------------------------------------------------------------------- unit

def test_keygen_writes_a_private_key_only_the_owner_reads_and_a_public_key(tmp_path, capsys):
    priv, pub = _keygen(tmp_path)
    assert stat.S_IMODE(priv.stat().st_mode) == 0o600
    assert priv.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    key = load_pem_public_key(pub.read_bytes())
    raw = key.public_bytes(Encoding.Raw, PublicFormat.Raw)
    out = capsys.readouterr().out
    assert f"key-id: {hashlib.sha256(raw).hexdigest()}" in out
    assert base64.b64encode(raw).decode() in out
    with pytest.raises(UsageError, match="already exists"):
        _keygen(tmp_path)


def test_signature_is_ed25519_over_the_documented_message(tmp_path):
    priv, pub = _keygen(tmp_path)
    signed = sign_lock(_lock(), priv)
    sig = signed.signature
    doc = tomllib.loads(dumps(signed))
    assert sig["algorithm"] == "ed25519" and sig["root"] == lock_root(doc)
    raw = load_pem_public_key(pub.read_bytes()).public_bytes(Encoding.Raw, PublicFormat.Raw)
    assert sig["key-id"] == key_id(raw) == hashlib.sha256(raw).hexdigest()
    # what a third party does: verify(signature, b"pypm-lock-v1\0" + root bytes)
    Ed25519PublicKey.from_public_bytes(raw).verify(base64.b64decode(sig["signature"]),
                                                   b"pypm-lock-v1\x00" + bytes.fromhex(sig["root"]))
    assert signed_message(sig["root"]) == b"pypm-lock-v1\x00" + bytes.fromhex(sig["root"])
    # the written lock reads back with its signature and still verifies
    (tmp_path / "pypm.lock").write_text(dumps(signed))
    assert loads(dumps(signed), path=tmp_path / "pypm.lock").signature == sig
    require_signed_lock(tmp_path / "pypm.lock", [str(pub)], base_dir=tmp_path)


@pytest.mark.parametrize("edit,message", [
    (lambda t: t.replace('version = "3.7"', 'version = "3.8"'), "changed after it was signed"),
    (lambda t: t.replace("1" * 64, "2" * 64), "changed after it was signed"),
    (lambda t: t.replace("/files/idna", "/evil/idna"), "changed after it was signed"),
    (lambda t: t + '\n[[package]]\nname = "evil"\nversion = "1"\nsource = { registry = "x" }\n',
     "changed after it was signed"),
    (lambda t: t.replace('root = "', 'root = "0') [:-1], None),  # a malformed table
])
def test_any_edit_is_refused(tmp_path, edit, message):
    priv, pub = _keygen(tmp_path)
    path = tmp_path / "pypm.lock"
    path.write_text(edit(dumps(sign_lock(_lock(), priv))))
    with pytest.raises(IntegrityError, match=message or "malformed|does not verify"):
        require_signed_lock(path, [str(pub)], base_dir=tmp_path)


def test_a_re_signed_root_without_the_key_does_not_verify(tmp_path):
    priv, pub = _keygen(tmp_path)
    path = tmp_path / "pypm.lock"
    lock = sign_lock(_lock(), priv)
    edited = _lock()
    edited.packages[0].version = "3.8"
    forged = dict(lock.signature, root=lock_root(tomllib.loads(dumps(edited))))
    from dataclasses import replace

    path.write_text(dumps(replace(edited, signature=forged)))
    with pytest.raises(IntegrityError, match="does not verify with trusted key"):
        require_signed_lock(path, [str(pub)], base_dir=tmp_path)


def test_unsigned_and_untrusted_locks_are_refused_with_the_reason(tmp_path):
    priv, pub = _keygen(tmp_path, "a")
    _, other_pub = _keygen(tmp_path, "b")
    path = tmp_path / "pypm.lock"
    path.write_text(dumps(_lock()))
    with pytest.raises(IntegrityError, match="is not signed") as e:
        require_signed_lock(path, [str(pub)], base_dir=tmp_path)
    assert "pypm lock --sign" in str(e.value)
    path.write_text(dumps(sign_lock(_lock(), priv)))
    with pytest.raises(IntegrityError, match="not in \\[tool.pypm\\] trusted-keys"):
        require_signed_lock(path, ["b.pub"], base_dir=tmp_path)  # relative to the project
    require_signed_lock(path, ["b.pub", "a.pub"], base_dir=tmp_path)


def test_trusted_keys_accept_base64_raw_keys_and_name_bad_entries(tmp_path):
    priv, pub = _keygen(tmp_path)
    raw = load_pem_public_key(pub.read_bytes()).public_bytes(Encoding.Raw, PublicFormat.Raw)
    b64 = base64.b64encode(raw).decode()
    assert load_trusted_keys([b64], tmp_path) == {key_id(raw): raw}
    (tmp_path / "line.pub").write_text(b64 + " comment\n")
    assert load_trusted_keys(["line.pub"], tmp_path) == {key_id(raw): raw}
    with pytest.raises(ProjectError, match="no such file"):
        load_trusted_keys(["missing.pub"], tmp_path)
    with pytest.raises(ProjectError, match="is a private key"):
        load_trusted_keys([str(priv)], tmp_path)
    with pytest.raises(ProjectError, match="array of strings"):
        load_trusted_keys("a.pub", tmp_path)


def test_signing_with_a_bad_key_file_says_so(tmp_path):
    with pytest.raises(UsageError, match="no such key file"):
        sign_lock(_lock(), tmp_path / "nope")
    _, pub = _keygen(tmp_path)
    with pytest.raises(UsageError, match="not a PEM private key"):
        sign_lock(_lock(), pub)


# --------------------------------------------------------------------------- end to end: lock --sign, sync, run

@pytest.fixture
def signed_project(pypm, dists, index_server, tmp_path):
    dists.wheel("alpha", "1.0", requires_dist=["beta"])
    dists.wheel("beta", "2.0")
    dists.wheel("beta", "2.1")
    server = index_server()
    keys = tmp_path / "keys"
    keys.mkdir()
    pypm("keygen", "-o", keys / "release", check=True)
    pypm("keygen", "-o", keys / "intruder", check=True)
    project = write_project(tmp_path / "proj", deps=["alpha", "beta==2.0"],
                            tool=f'index-url = "{server.url}"\ntrusted-keys = ["../keys/release.pub"]\n')
    r = pypm("lock", "--sign", keys / "release", cwd=project)
    assert r.returncode == 0, r.stderr
    assert "[signature]" in (project / "pypm.lock").read_text()
    return project, keys, server


def test_untouched_signed_lock_syncs_and_runs(pypm, signed_project):
    project, _, _ = signed_project
    r = pypm("sync", "--locked", cwd=project)
    assert r.returncode == 0, r.stderr
    r = pypm("run", "--no-sandbox", "python", "-c", "import alpha, beta; print('ok')", cwd=project)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr
    assert pypm("verify", cwd=project).returncode == 0


@pytest.mark.parametrize("what", ["version", "url", "hash", "added package"])
def test_hand_edited_signed_lock_fails_in_sync(pypm, signed_project, dists, what):
    project, _, server = signed_project
    path = project / "pypm.lock"
    text = path.read_text()
    b20 = "beta-2.0-py3-none-any.whl"
    if what == "version":
        text = text.replace('name = "beta"\nversion = "2.0"', 'name = "beta"\nversion = "2.1"')
    elif what == "url":
        text = text.replace(server.file_url(b20), server.file_url(b20).replace("/files/", "/evil/"))
    elif what == "hash":
        real = hashlib.sha256((dists.dir / b20).read_bytes()).hexdigest()
        other = hashlib.sha256((dists.dir / "beta-2.1-py3-none-any.whl").read_bytes()).hexdigest()
        text = text.replace(real, other)
    else:
        text += '\n[[package]]\nname = "evil"\nversion = "1.0"\nsource = { registry = "http://127.0.0.1:9/" }\n'
    assert text != path.read_text()
    path.write_text(text)
    r = pypm("sync", "--frozen", cwd=project)
    assert r.returncode == 6, r.stderr
    assert "was changed after it was signed" in r.stderr and "pypm lock --sign" in r.stderr
    assert not (project / ".venv" / ".pypm" / "state.json").exists()


def test_lock_signed_by_an_untrusted_key_is_refused(pypm, signed_project):
    project, keys, _ = signed_project
    r = pypm("lock", "--refresh", "--sign", keys / "intruder", cwd=project)
    assert r.returncode == 0, r.stderr
    r = pypm("sync", cwd=project)
    assert r.returncode == 6
    assert "which is not in [tool.pypm] trusted-keys" in r.stderr


def test_an_unsigned_lock_is_refused(pypm, signed_project):
    project, _, _ = signed_project
    r = pypm("lock", "--refresh", cwd=project)  # re-written without --sign: unsigned
    assert r.returncode == 0, r.stderr
    r = pypm("sync", cwd=project)
    assert r.returncode == 6 and "is not signed" in r.stderr


def test_run_checks_the_signature_on_its_fast_path(pypm, signed_project):
    """Nothing changed in pyproject.toml or pypm.lock (so run skips the sync), but the trusted key
    file now holds another key: run refuses before starting the command."""
    project, keys, _ = signed_project
    pypm("sync", cwd=project, check=True)
    r = pypm("-v", "run", "--no-sandbox", "python", "-c", "print('ran')", cwd=project)
    assert r.returncode == 0 and "not syncing" in r.stderr, r.stderr
    (keys / "release.pub").write_bytes((keys / "intruder.pub").read_bytes())
    r = pypm("-v", "run", "--no-sandbox", "python", "-c", "print('ran')", cwd=project)
    assert r.returncode == 6 and "ran" not in r.stdout
    assert "not in [tool.pypm] trusted-keys" in r.stderr


def test_run_without_trusted_keys_does_not_load_the_signing_module(pypm, tmp_path):
    """The check costs nothing when trusted-keys is unset: `-X importtime` shows no pypm.signing."""
    import sys

    project = write_project(tmp_path / "p")
    (project / "pypm.lock").write_text(dumps(Lock(requires_python=">=3.9", content_hash="sha256:x", packages=[
        LockedPackage("app", "0.1.0", {"virtual": "."})])))
    pypm("sync", "--frozen", cwd=project, check=True)
    import subprocess

    r = subprocess.run([sys.executable, "-X", "importtime", "-m", "pypm", "run", "--frozen", "--no-sandbox", "true"],
                       cwd=project, env=pypm.env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "pypm.signing" not in r.stderr and "cryptography" not in r.stderr


def test_signing_a_current_lock_signs_it_as_it_is_without_resolving(pypm, signed_project):
    """What was reviewed is what gets signed: no index request, the entries byte for byte the same."""
    project, keys, server = signed_project
    path = project / "pypm.lock"
    before = path.read_text()
    server.clear_requests()
    r = pypm("lock", "--sign", keys / "intruder", cwd=project)
    assert r.returncode == 0, r.stderr
    assert server.requests == []
    after = path.read_text()
    strip = lambda t: t[t.index("\n[[package]]"):]  # noqa: E731 - everything after [signature]
    assert strip(after) == strip(before) and after != before
    assert tomllib.loads(after)["signature"]["root"] == tomllib.loads(before)["signature"]["root"]


def test_verify_reports_the_signature_state(pypm, signed_project):
    project, keys, _ = signed_project
    pypm("sync", cwd=project, check=True)
    r = pypm("verify", cwd=project)
    assert r.returncode == 0 and "signed by key" in r.stderr and "a trusted key" in r.stderr, r.stderr
    path = project / "pypm.lock"
    path.write_text(path.read_text().replace('requires-python = ">=3.9"', 'requires-python = ">=3.8"'))
    r = pypm("verify", cwd=project)
    assert r.returncode == 1
    assert r.stdout.split()[:2] == ["signature", "pypm.lock"] and "changed after key" in r.stdout


def test_a_stale_signed_lock_is_not_replaced_by_an_unsigned_one(pypm, signed_project):
    """With trusted-keys, sync never re-locks: the new lock would be unsigned (and refused)."""
    project, keys, _ = signed_project
    path = project / "pypm.lock"
    before = path.read_text()
    pyproject = project / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace('"beta==2.0"', '"beta>=2.0"'))
    r = pypm("sync", cwd=project)
    assert r.returncode == 1, r.stderr
    assert "out of date with pyproject.toml" in r.stderr and "does not re-lock" in r.stderr
    assert "pypm lock --sign KEY" in r.stderr
    assert path.read_text() == before and not (project / ".venv").exists()
    pypm("lock", "--sign", keys / "release", cwd=project, check=True)
    assert pypm("sync", cwd=project).returncode == 0
