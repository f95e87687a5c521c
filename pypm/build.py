"""PEP 517/660 builds in an isolated, throwaway build environment made from locked wheels.

`build_wheel` is the one seam: it creates a venv in a temporary directory, installs the
pinned build requirements into it from the cache (pypm's own installer, no pip), and
calls the backend through `pyproject_hooks` in a subprocess running that venv's python.
This first version runs the backend unsandboxed; the sandboxed-build issue wraps the
subprocess runner, nothing else.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Mapping, Sequence

from .errors import BuildError, ExitCode

__all__ = ["build_wheel", "build_command", "read_build_system", "build_key", "cached_build", "remember_build"]

# PEP 517: a project without [build-system] is built with setuptools' legacy backend.
DEFAULT_BACKEND = "setuptools.build_meta:__legacy__"


def read_build_system(source: Path) -> tuple[list[str], str, list[str] | None]:
    """(requires, build-backend, backend-path) of the project or unpacked sdist at `source`."""
    import tomllib

    pyproject = source / "pyproject.toml"
    data: Mapping[str, Any] = {}
    if pyproject.is_file():
        try:
            data = tomllib.loads(pyproject.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
            raise BuildError(f"{pyproject}: invalid TOML: {e}", hint="fix the file, then run the command again") from None
    bs = data.get("build-system") or {}
    requires = list(bs.get("requires", ["setuptools>=40.8.0"]))
    backend = bs.get("build-backend") or DEFAULT_BACKEND
    backend_path = bs.get("backend-path")
    return requires, backend, backend_path


def _runner(env_dir: Path, log: list[str]):
    """A pyproject_hooks runner: the build env's python, a clean environment, output captured."""
    import subprocess

    def run(cmd: Sequence[str], cwd: str | None = None, extra_environ: Mapping[str, str] | None = None) -> None:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("PYTHON", "PIP_", "VIRTUAL_ENV", "__PYVENV"))}
        env.update(extra_environ or {})
        env["VIRTUAL_ENV"] = str(env_dir)
        env["PATH"] = os.pathsep.join([str(env_dir / "bin"), env.get("PATH", os.defpath)])
        env["PIP_CONFIG_FILE"] = os.devnull  # a backend that shells out to pip must not see extra indexes
        proc = subprocess.run(list(cmd), cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        out = proc.stdout.decode("utf-8", "replace")
        log.append(out)
        if proc.returncode != 0:
            raise subprocess.CalledProcessError(proc.returncode, cmd, output=out)

    return run


def _missing(requirements: Sequence[str], env_dir: Path, interpreter: Any) -> list[str]:
    """Requirements the backend asked for (get_requires_for_build_*) that the env lacks."""
    from importlib.metadata import PathDistribution

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    site = env_dir / interpreter.venv_paths["purelib"]
    have: dict[str, str] = {}
    for d in site.glob("*.dist-info"):
        meta = PathDistribution(d).metadata
        if meta and meta["Name"]:
            have[canonicalize_name(meta["Name"])] = meta["Version"]
    env = dict(interpreter.markers, extra="")
    out = []
    for r in requirements:
        req = Requirement(r)
        if req.marker and not req.marker.evaluate(env):
            continue
        v = have.get(canonicalize_name(req.name))
        if v is None or (req.specifier and not req.specifier.contains(v, prereleases=True)):
            out.append(r)
    return out


def build_wheel(source: Path, out_dir: Path, *, editable: bool, build_packages: Sequence[Any],
                interpreter: Any, cache: Any, link_mode: str | None = None,
                fetchers: Sequence[Any] = (), label: str | None = None) -> Path:
    """Build a wheel (PEP 660 editable when `editable`) of the source tree at `source` into `out_dir`.

    `build_packages`: the locked packages (`LockedPackage`) that make up the build environment
    (the lock's `build-dependencies` of this project or sdist). Each must have a wheel for
    `interpreter`. `label` names what is built in messages (e.g. "cext==1.0 (cext-1.0.tar.gz)").
    Raises BuildError with the backend's output when the build fails.
    """
    from pyproject_hooks import BackendUnavailable, BuildBackendHookCaller, HookMissing

    from .installer import install_wheel
    from .plan import choose_file
    from .venv import create_venv

    source = Path(source).resolve()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    _requires, backend, backend_path = read_build_system(source)
    what = f"{'an editable wheel' if editable else 'a wheel'} of {label or source}"

    entries = []
    for p in build_packages:
        kind, f = choose_file(p, interpreter.tags, interpreter.describe())
        if kind != "wheel":
            raise BuildError(f"build dependency {p.name}=={p.version} of {label or source} has no wheel for "
                             f"{interpreter.describe()}; building build dependencies from source is not supported",
                             hint="pin a version of it that ships wheels in [build-system] requires")
        entries.append((p, f))
    # fetchers: plugin wheel fetchers (e.g. s3cache), tried before the index as for the venv's wheels.
    got = cache.fetch_many([(p.name, f) for p, f in entries], fetchers=fetchers) if entries else {}
    trees = cache.unpack_many([(p.name, f) for p, f in entries], got) if entries else {}

    tmp = Path(tempfile.mkdtemp(prefix="pypm-build-"))
    try:
        env_dir = tmp / "env"
        layout = create_venv(env_dir, interpreter)
        for _p, f in entries:
            install_wheel(layout, trees[f.sha256], wheel_filename=f.filename, wheel_sha256=f.sha256,
                          link_mode=link_mode)
        log: list[str] = []
        hooks = BuildBackendHookCaller(str(source), backend, backend_path=backend_path,
                                       python_executable=str(env_dir / "bin" / "python"),
                                       runner=_runner(env_dir, log))
        try:
            extra = (hooks.get_requires_for_build_editable() if editable else hooks.get_requires_for_build_wheel())
            missing = _missing(extra, env_dir, interpreter)
            if missing:
                raise BuildError(f"the build backend {backend} of {source} also needs {', '.join(missing)}, "
                                 "which the lock's build dependencies do not provide",
                                 hint="add them to [build-system] requires and run `pypm lock`")
            work = tmp / "out"
            work.mkdir()
            name = hooks.build_editable(str(work)) if editable else hooks.build_wheel(str(work))
        except BuildError:
            raise
        except HookMissing:
            raise BuildError(f"the build backend {backend} of {source} cannot build editable wheels (PEP 660)",
                             hint="upgrade the backend in [build-system] requires, or use --no-install-project") from None
        except BackendUnavailable as e:
            raise BuildError(f"the build backend {backend} of {source} could not be imported: {e.message or ''}".strip(),
                             hint="check [build-system] build-backend and requires") from None
        except Exception as e:  # the backend's own failure (CalledProcessError) with its output
            out = "".join(log).strip()
            tail = "\n".join(out.splitlines()[-40:])
            how = f"the backend {backend} exited with status {e.returncode}" if hasattr(e, "returncode") else str(e)
            raise BuildError(f"building {what} failed: {how}; its output ends with:\n{tail}",
                             hint="fix the error above in the package's build configuration, or pin a version "
                             "that ships a wheel") from None
        final = out_dir / name
        os.replace(work / name, final)
        return final
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# --------------------------------------------------------------------------- the build cache
# A built wheel is stored in the wheel cache like any other (content-addressed); a small JSON
# file under `built/` maps the build's inputs to it, so an unchanged sdist or project is not
# rebuilt on the next sync.

def build_key(kind: str, *parts: str) -> str:
    """A cache key over everything a build depends on (source hash, target tag, build env files)."""
    import hashlib

    return hashlib.sha256("\0".join((kind, *parts)).encode()).hexdigest()


def _key_file(cache: Any, key: str) -> Path:
    return Path(cache.root) / "built" / key[:2] / f"{key}.json"


def cached_build(cache: Any, key: str) -> Any:
    """The FileEntry of a wheel built earlier from these inputs and still in the cache, else None."""
    import json

    from .lockfile import FileEntry

    try:
        d = json.loads(_key_file(cache, key).read_text(encoding="utf-8"))
        entry = FileEntry(d["filename"], d["url"], d["sha256"], d["size"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return entry if cache.cached_wheel(entry) is not None else None


def remember_build(cache: Any, key: str, wheel: Path, package: str) -> Any:
    """Copy a freshly built wheel into the cache and record it under `key`; its FileEntry."""
    import json

    from .lockfile import FileEntry, file_sha256, write_atomic

    entry = FileEntry(wheel.name, wheel.as_uri(), file_sha256(wheel), wheel.stat().st_size)
    cache.fetch(entry, package=package)
    f = _key_file(cache, key)
    f.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(f, json.dumps({"filename": entry.filename, "url": entry.url, "sha256": entry.sha256,
                                "size": entry.size}) + "\n")
    return entry


def build_command(ctx: Any, project: Any, args: Any) -> int:
    """`pypm build`: not part of this first version (sync builds editables and sdists itself)."""
    raise BuildError("`pypm build` is not available yet in this version",
                     hint="`pypm sync` builds the project (editable) and sdists as needed")
    return ExitCode.OK  # pragma: no cover
