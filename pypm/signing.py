"""Signed locks: Ed25519 keys (`pypm keygen`), `pypm lock --sign`, and the trusted-keys check.

What is signed is the lock root (`pypm.merkle.lock_root`, docs/lock-format.md §14): a Merkle
root over the parsed TOML of every `[[package]]` and of the header, so any edit of a version,
marker, URL, size, hash or edge, and any added or removed package, changes it. `cryptography`
is imported only when a key is used; `pypm run` reaches this module only when
`[tool.pypm] trusted-keys` is set.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from .errors import ExitCode, IntegrityError, LockError, ProjectError, UsageError
from .lockfile import Lock

__all__ = ["ALGORITHM", "key_id", "signed_message", "sign_lock", "verify_lock_signature", "require_signed_lock",
           "load_trusted_keys", "keygen_command", "SignatureStatus", "trusted_lock"]

ALGORITHM = "ed25519"
_DOMAIN = b"pypm-lock-v1\x00"  # domain separation: a lock signature is never valid for anything else
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_B64KEY = re.compile(r"^[A-Za-z0-9+/]{43}=?$")  # 32 bytes in standard base64


def key_id(raw_public: bytes) -> str:
    """sha256 hex of the raw 32-byte Ed25519 public key."""
    return hashlib.sha256(raw_public).hexdigest()


def signed_message(root_hex: str) -> bytes:
    return _DOMAIN + bytes.fromhex(root_hex)


# --------------------------------------------------------------------------- keys

def _raw_public(key: Any) -> bytes:
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    raw: bytes = key.public_bytes(Encoding.Raw, PublicFormat.Raw)
    return raw


def _load_private(path: Path) -> Any:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise UsageError(f"--sign {path}: no such key file", hint="create one with `pypm keygen -o PATH`") from None
    except OSError as e:
        raise UsageError(f"--sign {path}: cannot read the key: {e.strerror}") from None
    try:
        key = load_pem_private_key(data, password=None)
    except TypeError:
        raise UsageError(f"--sign {path}: the private key is encrypted; pypm reads unencrypted PEM keys only",
                         hint="decrypt it (`openssl pkey -in KEY -out PLAIN`) into a file only you can read") from None
    except ValueError:
        raise UsageError(f"--sign {path} is not a PEM private key",
                         hint="pass the private key `pypm keygen` wrote (not the .pub file)") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise UsageError(f"--sign {path} is a {type(key).__name__.replace('PrivateKey', '')} key; lock signatures "
                         "use Ed25519", hint="create an Ed25519 key with `pypm keygen -o PATH`")
    return key


def _public_from_text(data: bytes, what: str) -> bytes:
    """Raw public key from a PEM public key or a base64 raw key (one line)."""
    text = data.decode("ascii", errors="replace").strip()
    if "-----BEGIN" in text:
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
        from cryptography.hazmat.primitives.serialization import load_pem_public_key

        if "PRIVATE KEY" in text:
            raise ProjectError(f"{what} is a private key; trusted-keys must name public keys",
                               hint="use the .pub file `pypm keygen` wrote beside it (and keep the private key out "
                               "of the repository)")
        try:
            key = load_pem_public_key(data)
        except ValueError:
            raise ProjectError(f"{what} is not a valid PEM public key") from None
        if not isinstance(key, Ed25519PublicKey):
            raise ProjectError(f"{what} is not an Ed25519 public key", hint="lock signatures use Ed25519 keys")
        return _raw_public(key)
    first = text.split()[0] if text else ""
    raw = _b64key(first)
    if raw is None:
        raise ProjectError(f"{what} holds neither a PEM public key nor a base64 Ed25519 key")
    return raw


def _b64key(s: str) -> bytes | None:
    if not _B64KEY.match(s):
        return None
    try:
        raw = base64.b64decode(s + "=" * (-len(s) % 4), validate=True)
    except (binascii.Error, ValueError):
        return None
    return raw if len(raw) == 32 else None


def load_trusted_keys(entries: Sequence[Any], base_dir: Path) -> dict[str, bytes]:
    """{key-id: raw public key} of `[tool.pypm] trusted-keys`: each entry a base64 raw Ed25519
    public key (44 characters) or a path (relative to the project) to a .pub file."""
    if isinstance(entries, str) or not isinstance(entries, (list, tuple)):
        raise ProjectError(f"{base_dir / 'pyproject.toml'}: [tool.pypm] trusted-keys must be an array of strings",
                           hint='e.g. trusted-keys = ["keys/release.pub"]')
    out: dict[str, bytes] = {}
    for e in entries:
        if not isinstance(e, str) or not e.strip():
            raise ProjectError(f"{base_dir / 'pyproject.toml'}: [tool.pypm] trusted-keys holds {e!r}, "
                               "not a key or a path", hint='e.g. trusted-keys = ["keys/release.pub"]')
        raw = _b64key(e.strip())
        if raw is None:
            p = Path(e).expanduser()
            p = p if p.is_absolute() else base_dir / p
            what = f"[tool.pypm] trusted-keys entry {e!r} ({p})"
            try:
                raw = _public_from_text(p.read_bytes(), what)
            except FileNotFoundError:
                raise ProjectError(f"{what}: no such file", hint="fix the path (relative to the project directory) "
                                   "or give the base64 public key `pypm keygen` printed") from None
            except OSError as err:
                raise ProjectError(f"{what}: cannot read it: {err.strerror}") from None
        out[key_id(raw)] = raw
    return out


# --------------------------------------------------------------------------- sign and verify

def _lock_doc(lock: Lock) -> dict[str, Any]:
    import tomllib

    from .lockfile import dumps

    return tomllib.loads(dumps(replace(lock, signature={})))


def sign_lock(lock: Lock, key_path: Path) -> Lock:
    """The lock with a `[signature]` over its root (by the Ed25519 private key in `key_path`)."""
    from .merkle import lock_root

    key = _load_private(Path(key_path))
    root = lock_root(_lock_doc(lock))
    sig = key.sign(signed_message(root))
    return replace(lock, signature={"algorithm": ALGORITHM, "key-id": key_id(_raw_public(key.public_key())),
                                    "root": root, "signature": base64.b64encode(sig).decode("ascii")})


@dataclass(frozen=True)
class SignatureStatus:
    """What `verify_lock_signature` found; None where a check could not be made."""

    signed: bool
    root: str | None = None  # the root the signature covers
    key_id: str | None = None
    intact: bool | None = None  # the lock's recomputed root equals `root`
    valid: bool | None = None  # the Ed25519 signature verifies with the trusted key `key_id`
    trusted: bool | None = None  # `key_id` is in trusted-keys

    @property
    def ok(self) -> bool:
        return bool(self.signed and self.intact and self.valid and self.trusted)


def _parse(path: Path) -> dict[str, Any]:
    import tomllib

    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise LockError(f"{path} does not exist", hint="run `pypm lock --sign KEY`") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise LockError(f"{path}: cannot read it: {e}", hint="re-create it with `pypm lock --sign KEY`") from None


def verify_lock_signature(doc: Mapping[str, Any], trusted: Mapping[str, bytes] | None, *, where: str = "pypm.lock"
                          ) -> SignatureStatus:
    """Check the `[signature]` of a parsed lock: root recomputed, Ed25519 checked with the trusted
    key it names (`trusted` None: with no key list, the signature cannot be checked, only the root).
    Raises IntegrityError only for a malformed table."""
    from .merkle import lock_root

    sig = doc.get("signature")
    if not sig:
        return SignatureStatus(signed=False, root=None, key_id=None, intact=None, valid=None, trusted=None)
    bad = IntegrityError(f"{where}: the [signature] table is malformed (it needs algorithm = \"ed25519\", a 64-hex "
                         "`root` and `key-id`, and a base64 `signature`)", hint="sign the lock again with "
                         "`pypm lock --sign KEY`, or restore it from version control")
    if not isinstance(sig, Mapping) or sig.get("algorithm", ALGORITHM) != ALGORITHM:
        raise bad
    root, kid, b64 = sig.get("root"), sig.get("key-id"), sig.get("signature")
    if not (isinstance(root, str) and _HEX64.match(root) and isinstance(kid, str) and _HEX64.match(kid)
            and isinstance(b64, str)):
        raise bad
    try:
        signature = base64.b64decode(b64, validate=True)
    except (binascii.Error, ValueError):
        raise bad from None
    try:
        actual = lock_root(doc)
    except ValueError as e:
        raise IntegrityError(f"{where}: {e}", hint="restore pypm.lock from version control") from None
    intact = actual == root
    if trusted is None:
        return SignatureStatus(signed=True, root=root, key_id=kid, intact=intact, valid=None, trusted=None)
    if kid not in trusted:
        return SignatureStatus(signed=True, root=root, key_id=kid, intact=intact, valid=None, trusted=False)
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        Ed25519PublicKey.from_public_bytes(trusted[kid]).verify(signature, signed_message(root))
        valid = True
    except InvalidSignature:
        valid = False
    return SignatureStatus(signed=True, root=root, key_id=kid, intact=intact, valid=valid, trusted=True)


def _short(kid: str) -> str:
    return kid[:16]


def require_signed_lock(lock_path: Path, trusted_entries: Sequence[Any], *, base_dir: Path) -> None:
    """Refuse (IntegrityError, exit 6) a lock that is unsigned, altered since it was signed, signed
    by a key not in trusted-keys, or whose signature does not verify; the message says which."""
    trusted = load_trusted_keys(trusted_entries, base_dir)
    lock_path = Path(lock_path)
    st = verify_lock_signature(_parse(lock_path), trusted, where=str(lock_path))
    keys = ", ".join(_short(k) for k in sorted(trusted))
    resign = "if the change is intended, sign it again with `pypm lock --sign KEY`; otherwise restore pypm.lock " \
             "from version control"
    if not st.signed:
        raise IntegrityError(f"{lock_path} is not signed, and [tool.pypm] trusted-keys requires a lock signed by one "
                             f"of: {keys}", hint="sign it with `pypm lock --sign KEY` (a lock that `pypm lock` or a "
                             "sync re-locked is unsigned until it is signed again)")
    assert st.key_id is not None
    if not st.trusted:
        raise IntegrityError(f"{lock_path} is signed by key {_short(st.key_id)}, which is not in [tool.pypm] "
                             f"trusted-keys ({keys})", hint="sign it with a trusted key, or add this key's .pub file "
                             "to trusted-keys if you trust it")
    if not st.valid:
        raise IntegrityError(f"{lock_path}: the signature does not verify with trusted key {_short(st.key_id)} "
                             "(the [signature] table was altered)", hint=resign)
    if not st.intact:
        raise IntegrityError(f"{lock_path} was changed after it was signed: its entries hash to a different root "
                             f"than the one key {_short(st.key_id)} signed ({_short(st.root or '')}…)", hint=resign)


def trusted_lock(ctx: Any, project: Any, opts: Any, lock_for: Callable[[Any, Any, Any], Lock]) -> Lock:
    """sync's lock when `[tool.pypm] trusted-keys` is set: the signed lock, used as it is.

    The lock on disk is checked first, and sync never re-locks (`lock_for` is called as with
    `--locked`): a new lock would be unsigned, so re-locking would only replace the signed file
    with one that is then refused.
    """
    from .errors import StaleLockError
    from .lockfile import LOCK_NAME

    path = project.root / LOCK_NAME
    keys = project.tool.trusted_keys
    if path.exists():
        require_signed_lock(path, keys, base_dir=project.root)
    try:
        lock = lock_for(ctx, project, replace(opts, locked=not opts.frozen))
    except StaleLockError:
        what = "is out of date with pyproject.toml" if path.exists() else "does not exist"
        raise StaleLockError(f"{path} {what}; with [tool.pypm] trusted-keys set, sync does not re-lock (a new lock "
                             "would be unsigned)", hint="run `pypm lock --sign KEY` with a trusted key, review the "
                             "result and commit it") from None
    require_signed_lock(path, keys, base_dir=project.root)
    return lock


# --------------------------------------------------------------------------- `pypm keygen`

def keygen_command(ctx: Any, args: Any) -> int:
    """`pypm keygen [-o PATH]`: PATH (PEM PKCS#8 private key, mode 600) and PATH.pub (PEM public key)."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import (Encoding, NoEncryption, PrivateFormat,
                                                              PublicFormat)

    out = Path(args.output).expanduser()
    out = out if out.is_absolute() else Path(ctx.directory) / out
    pub = out.with_name(out.name + ".pub")
    for p in (out, pub):
        if p.exists() or p.is_symlink():
            raise UsageError(f"{p} already exists; pypm keygen never overwrites a key",
                             hint="choose another path with -o, or remove the old key first")
    if not out.parent.is_dir():
        raise UsageError(f"{out.parent} is not a directory", hint="create it first, or choose another path with -o")
    key = Ed25519PrivateKey.generate()
    private_pem = key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    public_pem = key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    raw = _raw_public(key.public_key())
    # O_EXCL and mode 600 from the first byte: the private key is never readable by others, even briefly
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(private_pem)
        os.chmod(out, 0o600)  # whatever the umask said
        fd = os.open(pub, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        with os.fdopen(fd, "wb") as f:
            f.write(public_pem)
    except BaseException:
        out.unlink(missing_ok=True)
        pub.unlink(missing_ok=True)
        raise
    ctx.info(f"wrote the private key to {out} (mode 600: keep it secret) and the public key to {pub}")
    print(f"key-id: {key_id(raw)}")
    print(f"public key (base64, for [tool.pypm] trusted-keys): {base64.b64encode(raw).decode('ascii')}")
    return ExitCode.OK
