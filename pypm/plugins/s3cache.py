"""The `s3cache` plugin: a shared, content-addressed wheel cache in an S3-compatible bucket.

Objects live at `<prefix>/<sha256>/<filename>`. Before the index, sync asks the bucket
(`fetch_wheel`); every object is hashed on the way down and one that does not match the
lock's sha256 is reported and ignored (the cache then fetches from the index, and
post-sync overwrites the bad object). After sync, what the bucket lacked is uploaded.

Configuration, `[tool.pypm.s3cache]`: `bucket`, `prefix` (default "pypm/wheels"),
`endpoint` (an S3-compatible URL; default: AWS, or $AWS_ENDPOINT_URL), `region`,
`upload` (default true). `$PYPM_S3CACHE_BUCKET` / `$PYPM_S3CACHE_ENDPOINT` override the
file (CI points the same project at its own bucket). Credentials come from the standard
AWS environment/config (boto3's chain). No bucket: a one-line note, nothing else.

The bucket is an optimisation, never a reason to fail: when it is unreachable the plugin
says so once and sync goes on with the index.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import PluginError

# Heavy imports (boto3, hashlib, concurrent.futures) live in the functions that use them:
# this module is imported on `pypm run` of a project that enables the plugin.
__all__ = ["plugin", "S3Settings", "object_key"]

_KEYS = {"bucket", "prefix", "endpoint", "region", "upload"}
_CHUNK = 1 << 20


@dataclass(frozen=True)
class S3Settings:
    bucket: str | None
    prefix: str
    endpoint: str | None
    region: str | None
    upload: bool

    @classmethod
    def from_context(cls, ctx: Any) -> "S3Settings":
        cfg = dict(ctx.config)
        where = f"{ctx.project_root / 'pyproject.toml'}: [tool.pypm.s3cache]"
        unknown = set(cfg) - _KEYS
        if unknown:
            raise PluginError(f"{where} has unknown key(s) {', '.join(sorted(unknown))}",
                              hint=f"known keys: {', '.join(sorted(_KEYS))}")
        for key in ("bucket", "prefix", "endpoint", "region"):
            if key in cfg and not isinstance(cfg[key], str):
                raise PluginError(f"{where} `{key}` must be a string")
        if not isinstance(cfg.get("upload", True), bool):
            raise PluginError(f"{where} `upload` must be true or false")
        return cls(
            bucket=os.environ.get("PYPM_S3CACHE_BUCKET") or cfg.get("bucket") or None,
            prefix=str(cfg.get("prefix", "pypm/wheels")).strip("/"),
            endpoint=os.environ.get("PYPM_S3CACHE_ENDPOINT") or cfg.get("endpoint") or None,
            region=cfg.get("region") or None,
            upload=cfg.get("upload", True),
        )

    def where(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" + (f" at {self.endpoint}" if self.endpoint else "")


def object_key(prefix: str, sha256: str, filename: str) -> str:
    return f"{prefix}/{sha256}/{filename}" if prefix else f"{sha256}/{filename}"


@dataclass
class _Session:
    """Per (bucket settings) state for one pypm process: the client and what the bucket told us."""

    settings: S3Settings
    client: Any = None
    disabled: str | None = None  # why the bucket is not used any more in this process
    served: set[str] = field(default_factory=set)  # sha256s fetched from the bucket (so it has them)
    missed: dict[str, str] = field(default_factory=dict)  # sha256 -> filename the bucket did not have
    uploaded: set[str] = field(default_factory=set)  # sha256s this process put into the bucket
    bad: set[str] = field(default_factory=set)  # sha256s whose object did not verify: overwrite
    lock: threading.Lock = field(default_factory=threading.Lock)

    def s3(self) -> Any:
        with self.lock:
            if self.client is None:
                _require_boto3()
                import boto3  # only when a bucket is configured and actually used
                from botocore.config import Config

                self.client = boto3.session.Session().client(
                    "s3", endpoint_url=self.settings.endpoint, region_name=self.settings.region,
                    config=Config(retries={"max_attempts": 3, "mode": "standard"}, connect_timeout=5,
                                  read_timeout=60, max_pool_connections=16))
            return self.client


def _require_boto3() -> None:
    try:
        import boto3  # noqa: F401
    except ImportError as e:
        raise PluginError(f"the s3cache plugin needs boto3 to use a bucket ({e})",
                          hint="install pypm with its plugins extra: pip install 'pypm[plugins]', "
                               "or remove the bucket from [tool.pypm.s3cache]") from None


def _error_code(e: Exception) -> str:
    resp = getattr(e, "response", None)
    if isinstance(resp, dict):
        return str(resp.get("Error", {}).get("Code", ""))
    return ""


def _is_missing(e: Exception) -> bool:
    # S3 answers 403, not 404, for a missing key when the caller may not list the bucket
    # (no s3:ListBucket): treat it as a miss. Wrong credentials then show up at upload time.
    return _error_code(e) in ("404", "NoSuchKey", "NotFound", "403", "AccessDenied", "Forbidden")


class S3CachePlugin:
    def __init__(self) -> None:
        self._sessions: dict[S3Settings, _Session] = {}
        self._noted: set[str] = set()
        self._lock = threading.Lock()

    def _session(self, ctx: Any) -> _Session | None:
        settings = S3Settings.from_context(ctx)
        if settings.bucket is None:
            key = str(ctx.project_root)
            if key not in self._noted:
                self._noted.add(key)
                ctx.report("no bucket configured ([tool.pypm.s3cache] bucket or $PYPM_S3CACHE_BUCKET); "
                           "the shared wheel cache is off")
            return None
        with self._lock:
            return self._sessions.setdefault(settings, _Session(settings))

    def _disable(self, ctx: Any, sess: _Session, e: Exception) -> None:
        with sess.lock:
            if sess.disabled is None:
                sess.disabled = f"{type(e).__name__}: {e}"
                ctx.report(f"{sess.settings.where()} is not usable ({sess.disabled}); "
                           "going on without it for this command")

    # ---- hooks
    def pre_sync(self, ctx: Any) -> int:
        # Validates the table, notes a missing bucket once, and fails early (before any work)
        # when a bucket is configured but boto3 is not installed.
        if self._session(ctx) is not None:
            _require_boto3()
        return 0

    def fetch_wheel(self, ctx: Any, sha256: str, filename: str, dest: Path) -> bool:
        sess = self._session(ctx)
        if sess is None or sess.disabled:
            return False
        import hashlib
        key = object_key(sess.settings.prefix, sha256, filename)
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            obj = sess.s3().get_object(Bucket=sess.settings.bucket, Key=key)
            h = hashlib.sha256()
            with dest.open("wb") as f:
                for chunk in obj["Body"].iter_chunks(_CHUNK):
                    h.update(chunk)
                    f.write(chunk)
        except ClientError as e:
            dest.unlink(missing_ok=True)
            if _is_missing(e):
                with sess.lock:
                    sess.missed[sha256] = filename  # the cache now gets it elsewhere; post-sync uploads it
                return False
            self._disable(ctx, sess, e)
            return False
        except (BotoCoreError, OSError) as e:
            dest.unlink(missing_ok=True)
            self._disable(ctx, sess, e)
            return False
        digest = h.hexdigest()
        if digest != sha256:
            # Never hand over bytes that are not what was locked; post-sync replaces the object.
            dest.unlink(missing_ok=True)
            sess.bad.add(sha256)
            ctx.report(f"s3://{sess.settings.bucket}/{key} is corrupt (sha256 {digest}, expected {sha256}): "
                       "ignored; fetching it from the index")
            return False
        sess.served.add(sha256)
        return True

    def post_sync(self, ctx: Any) -> int:
        sess = self._session(ctx)
        if sess is None or sess.disabled or not sess.settings.upload:
            return 0
        from concurrent.futures import ThreadPoolExecutor

        from botocore.exceptions import BotoCoreError, ClientError

        from ..lockfile import file_sha256

        # What to offer the bucket: every file the fetcher was asked for and the bucket lacked
        # (that includes build dependencies, which are not in the plan), and the plan's
        # packages that were already in the local cache (the fetcher was not asked: HEAD them).
        candidates: dict[str, Path] = {}
        for sha, filename in sess.missed.items():
            path = _cached_file(sha, filename)
            if path is not None:
                candidates[sha] = path
        for p in ctx.packages:
            if p.sha256 in sess.served or p.sha256 in sess.uploaded or p.sha256 in candidates:
                continue
            path = Path(p.wheel_path) if p.wheel_path else _cached_file(p.sha256)
            if path is not None and path.is_file():
                candidates[p.sha256] = path
        # The build dependencies the local cache held already (`pypm lock` fetches them to ask a
        # project's backend what its build needs; or an earlier sync did): the fetcher was not
        # asked for them, and a second machine building the same packages needs them.
        for sha, path in _cached_build_files(ctx.lock_path):
            if sha not in sess.served and sha not in sess.uploaded:
                candidates.setdefault(sha, path)

        def needs_upload(item: tuple[str, Path]) -> bool:
            sha, path = item
            if sha in sess.bad or sha in sess.missed:
                return True
            try:
                sess.s3().head_object(Bucket=sess.settings.bucket,
                                      Key=object_key(sess.settings.prefix, sha, path.name))
                return False
            except ClientError as e:
                if _is_missing(e):
                    return True
                raise

        try:
            items = sorted(candidates.items())
            with ThreadPoolExecutor(max_workers=8) as pool:
                missing = [c for c, need in zip(items, pool.map(needs_upload, items)) if need]
            uploaded = 0
            for sha, path in missing:
                if file_sha256(path) != sha:  # never poison the bucket with a damaged local file
                    ctx.report(f"not uploading {path}: its sha256 is not the locked {sha}")
                    continue
                sess.s3().upload_file(str(path), sess.settings.bucket,
                                      object_key(sess.settings.prefix, sha, path.name),
                                      ExtraArgs={"Metadata": {"sha256": sha}})
                with sess.lock:
                    sess.bad.discard(sha)
                    sess.missed.pop(sha, None)
                    sess.uploaded.add(sha)
                uploaded += 1
        except (ClientError, BotoCoreError, OSError) as e:
            self._disable(ctx, sess, e)
            return 0
        if uploaded:
            ctx.report(f"uploaded {uploaded} file(s) the bucket lacked to {sess.settings.where()}")
        elif sess.served:
            ctx.report(f"{len(sess.served)} file(s) came from {sess.settings.where()}")
        return 0


def _cached_build_files(lock_path: str | None) -> list[tuple[str, Path]]:
    """(sha256, path) of each file in pypm's cache of the packages the lock's builds need (every
    package's build environment, pypm.buildenv.build_packages_of, on any platform)."""
    from ..buildenv import build_packages_of
    from ..errors import PypmError
    from ..lockfile import read

    if not lock_path:
        return []
    try:
        lock = read(Path(lock_path))
        needed = {p.key: p for pkg in lock.packages if pkg.build_dependencies for p in build_packages_of(lock, pkg)}
    except PypmError:
        return []
    out = []
    for p in needed.values():
        for f in p.files():
            path = _cached_file(f.sha256, f.filename) if f.sha256 else None
            if path is not None:
                out.append((f.sha256, path))
    return out


def _cached_file(sha256: str, filename: str | None = None) -> Path | None:
    """The complete file for `sha256` in pypm's content-addressed cache (layout: cache.py), if any.

    Used when the caller did not pass `wheel_path`; the upload hashes it again anyway."""
    from ..config import cache_dir

    d = cache_dir() / "wheels" / sha256[:2] / sha256
    if filename is not None:
        return d / filename if (d / filename).is_file() else None
    if not d.is_dir():
        return None
    files = [p for p in d.iterdir() if p.is_file() and not p.name.endswith((".part", ".json", ".tmp"))]
    return files[0] if len(files) == 1 else None


plugin = S3CachePlugin()
