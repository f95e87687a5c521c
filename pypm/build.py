"""PEP 517/660 builds inside the sandbox, from a build env of locked wheels, and the build cache.

`build_wheel` (sync's seam) and `build_command` (`pypm build`) both go through `_build`:
a venv in a temporary directory holding exactly the locked build packages (hard links into
the verified cache, pypm's own installer, no pip), then the backend's hooks through
`pyproject_hooks` with a runner that executes each hook inside the sandbox
(`pypm.build_sandbox`): no network, only the source tree, the output directory and tmpfs
writable, a clean environment with SOURCE_DATE_EPOCH.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Mapping, Sequence

from .buildenv import build_closure, build_environment, build_packages_of, missing_requirements
from .errors import BuildError, ExitCode

if TYPE_CHECKING:  # pragma: no cover
    from .installer import LinkMode

__all__ = ["build_wheel", "build_command", "read_build_system", "build_key", "cached_build", "remember_build",
           "sdist_epoch", "project_epoch", "build_environment", "BUILD_FORMAT", "discover_build_requires",
           "build_packages_of", "network_allowed", "mark_build_network", "prepare_metadata", "MissingBuildRequirements"]

# PEP 517: a project without [build-system] is built with setuptools' legacy backend.
DEFAULT_BACKEND = "setuptools.build_meta:__legacy__"
# Part of every build cache key: bump when the way pypm builds changes what a build produces
# (v2: builds run in the sandbox at fixed paths with SOURCE_DATE_EPOCH).
BUILD_FORMAT = "pypm-build-2"


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


# --------------------------------------------------------------------------- SOURCE_DATE_EPOCH

def sdist_epoch(sdist: Path) -> int:
    """SOURCE_DATE_EPOCH for a build of `sdist`: the mtime of its top-level PKG-INFO (the moment
    the sdist was made), else its newest member's; never before 1980 (ZIP's first date)."""
    import tarfile
    import zipfile

    from .build_sandbox import MIN_EPOCH

    best, pkg_info = 0, None
    try:
        if sdist.name.endswith(".zip"):
            with zipfile.ZipFile(sdist) as zf:
                import calendar

                for i in zf.infolist():
                    t = calendar.timegm((*i.date_time, 0, 0, 0))
                    best = max(best, t)
                    if i.filename.count("/") == 1 and i.filename.endswith("/PKG-INFO"):
                        pkg_info = t
        else:
            with tarfile.open(sdist) as tf:
                for m in tf:
                    best = max(best, int(m.mtime))
                    if m.name.count("/") == 1 and m.name.endswith("/PKG-INFO"):
                        pkg_info = int(m.mtime)
    except (OSError, tarfile.TarError, zipfile.BadZipFile, EOFError) as e:
        raise BuildError(f"cannot read the source distribution {sdist.name}: {e}",
                         hint="clear it from the cache (`pypm cache clean`) and sync again") from None
    return max(MIN_EPOCH, pkg_info if pkg_info is not None else best)


def project_epoch(root: Path) -> int:
    """SOURCE_DATE_EPOCH for a build of the project: its last git commit's time when it is a
    git work tree (as `git log -1 --format=%ct`), else 1980-01-01 (ZIP's first date)."""
    import subprocess

    from .build_sandbox import MIN_EPOCH

    git = shutil.which("git")
    if git is None:
        return MIN_EPOCH
    try:  # core.fsmonitor=false: a repository's config must not make us run its commands
        out = subprocess.run([git, "-c", "core.fsmonitor=false", "-C", str(root), "log", "-1", "--format=%ct"],
                             stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return MIN_EPOCH
    text = out.stdout.strip()
    return max(MIN_EPOCH, int(text)) if out.returncode == 0 and text.isdigit() else MIN_EPOCH


# --------------------------------------------------------------------------- one build

def _unpack_sdist(path: Path, dest: Path) -> Path:
    """Extract an sdist safely (tarfile's `data` filter refuses links out and absolute paths)."""
    import tarfile
    import zipfile

    from .errors import InstallError

    dest.mkdir(parents=True)
    if path.name.endswith(".zip"):
        with zipfile.ZipFile(path) as zf:
            for n in zf.namelist():
                if n.startswith("/") or ".." in Path(n).parts:
                    raise InstallError(f"{path.name}: unsafe path {n!r} in the source distribution")
            zf.extractall(dest)
    else:
        try:
            with tarfile.open(path) as tf:
                tf.extractall(dest, filter="data")
        except tarfile.FilterError as e:
            raise InstallError(f"{path.name}: unsafe member in the source distribution: {e}") from None
        except (tarfile.TarError, EOFError, OSError) as e:
            raise BuildError(f"cannot unpack the source distribution {path.name}: {e}",
                             hint="clear it from the cache (`pypm cache clean`) and sync again") from None
    entries = list(dest.iterdir())
    return entries[0] if len(entries) == 1 and entries[0].is_dir() else dest


def _build(source: Path, out_dir: Path, *, kind: str, build_packages: Sequence[Any], interpreter: Any,
           cache: Any, link_mode: LinkMode | None, fetchers: Sequence[Any], label: str | None, network: bool,
           epoch: int | None, sdist: Path | None = None, requires_only: bool = False,
           limits: Sequence[tuple[str, int]] = ()) -> Any:
    """Build `kind` ("wheel" | "editable" | "sdist") of `source` (or of the archive `sdist`); its path.

    `requires_only`: run only get_requires_for_build_<kind> and return the requirements it
    names that `build_packages` do not satisfy (what `pypm lock` adds to the build set).
    """
    from pyproject_hooks import BackendUnavailable, BuildBackendHookCaller, HookMissing

    _quiet_backend_warnings()

    from .build_sandbox import OUT_INSIDE, SRC_INSIDE, BuildBox, hook_runner
    from .config import cache_dir

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="pypm-build-"))
    try:
        if sdist is not None:
            # Bound at /build/src/<top dir>: the same path in every build of this sdist.
            source = _unpack_sdist(sdist, tmp / "src")
            source_inside = f"{SRC_INSIDE}/{source.name if source != tmp / 'src' else 'source'}"
            epoch = sdist_epoch(sdist) if epoch is None else epoch
            protect: tuple[str, ...] = ()
        else:
            # The project is seen at its real path: an editable wheel points there.
            source = Path(source).resolve()
            source_inside = str(source)
            epoch = project_epoch(source) if epoch is None else epoch
            protect = tuple(str(source / n) for n in (".venv", ".git")
                            if (source / n).exists() and not (source / n).is_symlink())
        what = {"wheel": "a wheel", "editable": "an editable wheel", "sdist": "an sdist",
                "metadata": "the metadata"}[kind]
        what = f"{what} of {label or source}"
        _requires, backend, backend_path = read_build_system(source)

        env_dir = tmp / "env"
        build_environment(build_packages, interpreter, cache, env_dir, link_mode=link_mode, fetchers=fetchers,
                          label=label or str(source))
        work = tmp / "out"
        work.mkdir()
        box = BuildBox(source=source, source_inside=source_inside, env_dir=env_dir, out_dir=work,
                       log_path=tmp / "build.log", source_date_epoch=epoch, network=network,
                       cache_dir=str(getattr(cache, "root", None) or cache_dir()), protect=protect,
                       limits=tuple(limits))
        hooks = BuildBackendHookCaller(str(source), backend, backend_path=backend_path,
                                       python_executable=str(env_dir / "bin" / "python"), runner=hook_runner(box))
        try:
            if kind == "sdist":
                extra = hooks.get_requires_for_build_sdist()
            else:
                extra = hooks.get_requires_for_build_editable() if kind == "editable" \
                    else hooks.get_requires_for_build_wheel()
            missing = missing_requirements(extra, env_dir, interpreter)
            if requires_only:
                return missing
            if missing:
                raise MissingBuildRequirements(
                    f"the build backend {backend} of {label or source} also needs {', '.join(missing)}, "
                    "which the lock's build dependencies do not provide", missing,
                    hint="lock again with `pypm lock --refresh`, which asks the backend what its build needs "
                    "(a lock made by an older pypm did not ask a project directory's)")
            # The hooks are given the directory as the sandbox sees it (pyproject_hooks only abspath()s it).
            if kind == "metadata":
                # PEP 517's prepare_metadata_for_build_wheel; a backend without it builds the wheel,
                # and pyproject_hooks takes its .dist-info (all of it in the sandbox).
                info = hooks.prepare_metadata_for_build_wheel(OUT_INSIDE, _allow_fallback=True)
                meta = work / info / "METADATA" if isinstance(info, str) and "/" not in info else None
                if meta is None or not meta.is_file():
                    raise BuildError(f"the build backend {backend} of {label or source} reported the metadata "
                                     f"directory {info!r}, which it did not write",
                                     hint="report it to the package's maintainers")
                return meta.read_bytes()
            if kind == "sdist":
                name = hooks.build_sdist(OUT_INSIDE)
            elif kind == "editable":
                name = hooks.build_editable(OUT_INSIDE)
            else:
                name = hooks.build_wheel(OUT_INSIDE)
        except BuildError:
            raise
        except HookMissing:
            raise BuildError(f"the build backend {backend} of {label or source} cannot build editable wheels (PEP 660)",
                             hint="upgrade the backend in [build-system] requires, or use --no-install-project") from None
        except BackendUnavailable as e:
            why = "\n".join((getattr(e, "traceback", "") or str(e)).strip().splitlines()[-8:])
            raise BuildError(f"the build backend {backend} of {label or source} could not be imported "
                             f"in its build environment:\n{why}",
                             hint="check [build-system] build-backend and requires, then `pypm lock`") from None
        except Exception as e:  # the backend's own failure (CalledProcessError) with its output
            if not hasattr(e, "returncode"):
                raise
            if e.returncode in (_KILLED_BY_SIGINT, _KILLED_BY_SIGTERM):
                # Ctrl-C (or SIGTERM): the terminal's SIGINT reached the backend, or the sandbox
                # passed on the signal pypm's process got (this thread waits for it with the
                # signal blocked, so the interpreter never sees it): the command was interrupted,
                # not a failed build.
                from .errors import Terminated

                raise (KeyboardInterrupt if e.returncode == _KILLED_BY_SIGINT else Terminated)() from None
            how = f"the backend {backend} exited with status {e.returncode}"
            raise BuildError(f"building {what} failed in the sandbox: {how}; its output ends with:\n"
                             f"{_tail(box.log_path)}",
                             hint="fix the error above in the package's build configuration, or pin a version "
                             "that ships a wheel") from None
        if not isinstance(name, str) or "/" in name or not (work / name).is_file():
            raise BuildError(f"the build backend {backend} of {label or source} reported {name!r}, "
                             f"which it did not write", hint="report it to the package's maintainers")
        final = out_dir / name
        os.replace(work / name, final)
        return final
    finally:
        _rmtree(tmp)


# Builds that run at once (a sync's wheels, a lock's metadata): each is a sandboxed backend
# process, so as many as there are cores, at most 2 (beyond, they compete with the downloads, the
# resolver and each other, and each holds a build environment's memory).
PARALLEL_BUILDS = max(1, min(2, os.cpu_count() or 1))


def wait_result(fut: Any) -> Any:
    """`fut.result()` for a build (or an unpack) the main thread waits on, waited for in slices of
    0.2 s. Why: the kernel may hand a signal sent to pypm (SIGTERM from a CI runner, SIGINT to
    pypm alone) to any thread that does not block it (a download or unpack thread; the sandboxes'
    threads leave it alone: sandbox.caller._supervise), and Python runs its handler, which raises
    Terminated or KeyboardInterrupt, only in the main thread, when that next runs bytecode.
    Blocked in a wait without a timeout, the main thread would only notice when the build ended
    (minutes)."""
    from concurrent.futures import wait

    while not fut.done():
        wait([fut], timeout=0.2)
    return fut.result()


class RunningBuilds:
    """The builds running now, each by its sandbox's first process held as a pidfd, so that a
    command that failed or was interrupted can stop them at once (`interrupt`) rather than wait
    for backends that may run for minutes. Shared by the lock's metadata builds and the sync's
    wheel builds.

    The process is reported by the sandbox as soon as it exists (sandbox.caller.watch_spawns),
    on the build's thread, which alone reaps it: the pidfd is taken while the pid still names it,
    so the signal never reaches a process that reused the pid. (Until stop 36 the processes were
    found in /proc/self/task/TID/children, which a kernel without CONFIG_PROC_CHILDREN lacks.)"""

    def __init__(self) -> None:
        import threading

        self._fds: set[int] = set()
        self._lock = threading.Lock()  # (a pidfd is closed only under it: never signalled once reused)

    @contextmanager
    def running(self) -> Iterator[None]:
        """Around one build on the calling thread."""
        from sandbox.caller import watch_spawns

        mine: list[int] = []

        def seen(pid: int) -> None:
            try:
                fd = os.pidfd_open(pid)
            except OSError:
                return  # (gone already: nothing to stop)
            with self._lock:
                self._fds.add(fd)
                mine.append(fd)

        try:
            with watch_spawns(seen):
                yield
        finally:
            with self._lock:
                for fd in mine:
                    self._fds.discard(fd)
                    os.close(fd)

    def interrupt(self) -> None:
        """SIGINT to each running build's sandbox, which passes it on to the backend, as it does a
        terminal's Ctrl-C."""
        import signal

        with self._lock:
            for fd in self._fds:
                try:
                    signal.pidfd_send_signal(fd, signal.SIGINT)
                except OSError:
                    pass  # it ended meanwhile


_KILLED_BY_SIGINT = 128 + 2  # the sandbox's status for a command killed by SIGINT (128+N)
_KILLED_BY_SIGTERM = 128 + 15


def _quiet_backend_warnings() -> None:
    """pyproject_hooks (1.1+) re-raises the warnings a backend's hook emitted as BuildBackendWarning
    in this process, where they would be printed on pypm's stderr: a dozen lines of setuptools'
    deprecation notices for each old sdist, addressed to the package's authors, on every cold
    sync. The backend's output, warnings included, is kept in the build's log and shown when the
    build fails (as uv shows it). (filterwarnings replaces an identical filter: calling it for
    every build adds nothing.)"""
    import warnings

    try:
        from pyproject_hooks import BuildBackendWarning
    except ImportError:  # older pyproject_hooks: it does not forward them
        return
    warnings.filterwarnings("ignore", category=BuildBackendWarning)


class MissingBuildRequirements(BuildError):
    """The backend asked for requirements (get_requires_for_build_*) its environment lacks."""

    def __init__(self, message: str, missing: Sequence[str], *, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.missing = list(missing)


def prepare_metadata(source: Path, *, build_packages: Sequence[Any], interpreter: Any, cache: Any,
                     network: bool = False, label: str | None = None,
                     limits: Sequence[tuple[str, int]] = ()) -> bytes:
    """The core metadata (METADATA's bytes) of `source` (an sdist archive, or a project directory),
    from its backend's prepare_metadata_for_build_wheel, run in the sandbox with `build_packages`
    installed: for `pypm lock`, when an sdist's PKG-INFO cannot be trusted to hold its
    dependencies (Metadata older than 2.2, or marked Dynamic), or a path or git dependency's
    [project] table leaves them to the backend. Raises MissingBuildRequirements when the backend
    asks for more than `build_packages` provide."""
    source = Path(source)
    with tempfile.TemporaryDirectory(prefix="pypm-metadata-") as out:
        meta: bytes = _build(source, Path(out), kind="metadata", build_packages=build_packages,
                             interpreter=interpreter, cache=cache, link_mode=None, fetchers=(), label=label,
                             network=network, epoch=None, sdist=source if source.is_file() else None, limits=limits)
    return meta


def _tail(log: Path, lines: int = 60) -> str:
    try:
        text = log.read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def _rmtree(path: Path) -> None:
    # A backend may leave read-only files or directories in its tree (umask, chmod): make them
    # writable so the whole temporary tree goes.
    def fix(func: Any, p: str, _exc: Any) -> None:
        try:
            os.chmod(os.path.dirname(p), 0o700)
            os.chmod(p, 0o700)
            func(p)
        except OSError:
            pass

    shutil.rmtree(path, onerror=fix)


def build_wheel(source: Path, out_dir: Path, *, editable: bool, build_packages: Sequence[Any],
                interpreter: Any, cache: Any, link_mode: LinkMode | None = None,
                fetchers: Sequence[Any] = (), label: str | None = None, network: bool = False,
                source_date_epoch: int | None = None, limits: Sequence[tuple[str, int]] = ()) -> Path:
    """Build a wheel (PEP 660 editable when `editable`) of `source` into `out_dir`, in the sandbox.

    `source`: a source tree (the project: built in place, seen at its real path) or an sdist
    archive (unpacked into a temporary tree, seen at /build/src/<top dir>). `build_packages`: the
    locked packages (`LockedPackage`) that make up the build environment (the lock's
    `build-dependencies` of this project or sdist, with their closure); each must have a wheel for
    `interpreter`. `network`: the lock's `build-network` for it. `label` names what is built in
    messages (e.g. "cext==1.0 (cext-1.0.tar.gz)"). `limits`: `[tool.pypm.build] limits`, the
    sandbox's resource limits for the backend. Raises BuildError with the backend's output.
    """
    source = Path(source)
    sdist = source if source.is_file() else None
    wheel: Path = _build(source, out_dir, kind="editable" if editable else "wheel", build_packages=build_packages,
                         interpreter=interpreter, cache=cache, link_mode=link_mode, fetchers=fetchers, label=label,
                         network=network, epoch=source_date_epoch, sdist=sdist, limits=limits)
    return wheel


def discover_build_requires(sdist: Path, *, build_packages: Sequence[Any], interpreter: Any, cache: Any,
                            network: bool = False, label: str | None = None,
                            limits: Sequence[tuple[str, int]] = ()) -> list[str]:
    """What the sdist's backend asks for through get_requires_for_build_wheel (run in the
    sandbox, with `build_packages` installed) beyond what those packages provide."""
    with tempfile.TemporaryDirectory(prefix="pypm-requires-") as out:
        missing = _build(sdist, Path(out), kind="wheel", build_packages=build_packages, interpreter=interpreter,
                         cache=cache, link_mode=None, fetchers=(), label=label, network=network, epoch=None,
                         sdist=sdist, requires_only=True, limits=limits)
    return list(missing)


# --------------------------------------------------------------------------- the build cache
# A built wheel is stored in the wheel cache like any other (content-addressed); a small JSON
# file under `built/` maps the build's inputs to it, so an unchanged sdist or project is not
# rebuilt on the next sync.

def build_key(kind: str, *parts: str) -> str:
    """A cache key over everything a build depends on: the caller passes the source's hash, the
    target tag, the build env's file hashes and the build settings; BUILD_FORMAT is always in."""
    import hashlib

    return hashlib.sha256("\0".join((BUILD_FORMAT, kind, *parts)).encode()).hexdigest()


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


# --------------------------------------------------------------------------- `pypm build`

def build_command(ctx: Any, project: Any, args: Any) -> int:
    """`pypm build [--sdist] [--wheel] [-o DIR]`: the project's sdist, then a wheel built from that
    sdist (as `python -m build` does); `--wheel` alone builds the wheel from the tree."""
    from .cache import Cache
    from .errors import ProjectError
    from .interpreter import find_project_interpreter
    from .locking import ensure_lock

    if project.is_virtual:
        raise ProjectError(f"{project.pyproject} has no [build-system] table: there is nothing to build",
                           hint='add [build-system] (e.g. requires = ["setuptools>=68"], '
                           'build-backend = "setuptools.build_meta")')
    want_sdist = bool(getattr(args, "sdist", False))
    want_wheel = bool(getattr(args, "wheel", False))
    if not want_sdist and not want_wheel:
        want_sdist = want_wheel = True
    out_dir = Path(ctx.directory) / getattr(args, "out_dir", "dist")
    from .project import find_workspace, load_project

    # A workspace member is built with the build dependencies the workspace's lock pins for it
    ws = find_workspace(project.root)
    locked_project = load_project(ws[0]) if ws is not None else project
    lock = ensure_lock(ctx, locked_project, locked=bool(getattr(args, "locked", False)),
                       frozen=bool(getattr(args, "frozen", False)), offline=bool(getattr(args, "offline", False)))
    root = lock.root() if ws is None else next((p for p in lock.by_name(ws[1]) if not p.is_root), None)
    requires = list((project.build_system or {}).get("requires", ()) or ())
    if requires and not (root is not None and root.build_dependencies):
        from .errors import LockError

        raise LockError(f"pypm.lock pins no build dependencies for the project {project.name} "
                        f"({', '.join(requires)}): a build would not use locked bits",
                        hint="make [build-system] requires resolvable (see the warning of `pypm lock`), "
                        "then run `pypm lock`")
    interp = find_project_interpreter(getattr(args, "python", None), locked_project)
    packages = build_packages_of(lock, root, interp.markers)
    from .plan import refuse_unhashed

    refuse_unhashed(packages)
    network = network_allowed(project, project.normalized_name) or bool(root is not None and root.build_network)
    made: list[Path] = []
    if project.tool.plugins:
        from . import plugins

        plugins.fire(project, "pre-build", venv=None, interpreter=str(interp.executable))
    with Cache(offline=bool(getattr(args, "offline", False)), base_dir=project.root) as cache:
        common: dict[str, Any] = dict(build_packages=packages, interpreter=interp, cache=cache,
                                      label=f"the project {project.name}", network=network, link_mode=None,
                                      fetchers=(), limits=project.tool.build_limits)
        epoch = project_epoch(project.root)
        sdist = None
        if want_sdist:
            sdist = _build(project.root, out_dir, kind="sdist", epoch=epoch, **common)
            made.append(sdist)
        if want_wheel:
            if sdist is not None:
                wheel = _build(sdist, out_dir, kind="wheel", epoch=epoch, sdist=sdist, **common)
            else:
                wheel = _build(project.root, out_dir, kind="wheel", epoch=epoch, **common)
            made.append(wheel)
    if project.tool.plugins:
        from . import plugins

        plugins.fire(project, "post-build", venv=None, interpreter=str(interp.executable))
    for m in made:
        print(m)
    ctx.info(f"Built {', '.join(m.name for m in made)} in {out_dir} (in the sandbox"
             f"{', with network' if network else ', no network'})")
    return ExitCode.OK


def network_allowed(project: Any, name: str) -> bool:
    """`[tool.pypm.build] network`: true (every build) or a list of package names."""
    from .lockfile import canonical_name

    value = project.tool.build.get("network", False)
    if isinstance(value, bool):
        return value
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        from .errors import ProjectError

        raise ProjectError(f"{project.pyproject}: [tool.pypm.build] network must be true/false or a list of "
                           f"package names, not {value!r}", hint='e.g. network = ["pkg-that-downloads"]')
    return canonical_name(name) in {canonical_name(v) for v in value}


def mark_build_network(ctx: Any, project: Any, packages: Sequence[Any]) -> None:
    """Set `build-network = true` on each locked package that may be built from source (the
    project, packages with an sdist) and that `[tool.pypm.build] network` allows the network,
    so a reviewer of pypm.lock sees it; warn about listed names that are not in the lock."""
    from .lockfile import canonical_name

    value = project.tool.build.get("network", False)
    if value is False:
        return
    names = {canonical_name(p.name) for p in packages}
    for p in packages:
        buildable = p.is_root and not project.is_virtual or (p.sdist is not None)
        p.build_network = bool(buildable and network_allowed(project, p.name))
    if isinstance(value, list):
        for v in value:
            if canonical_name(v) not in names:
                ctx.info(f"warning: {project.pyproject}: [tool.pypm.build] network names {v}, "
                         "which is not in the lock")


def _build_config_token(directory: Path) -> str:
    """What a backend's get_requires_for_build_* answer depends on, as one sha256: setup.py,
    setup.cfg and pyproject.toml without what `pypm add`, `remove` and `version` change (the
    project's version, dependency lists and dependency groups) and pypm's own table. Asking
    setuptools costs ~0.4 s here: keyed by the whole file, every `pypm add` to a buildable
    project paid it. A backend whose answer follows the dependency lists (hatch's
    `require-runtime-dependencies` build hooks) is asked again with `pypm lock --refresh`, which
    the build's error names."""
    import hashlib
    import json
    import tomllib

    h = hashlib.sha256()
    for name in ("pyproject.toml", "setup.py", "setup.cfg"):
        try:
            data = (directory / name).read_bytes()
        except OSError:
            h.update(f"{name}: none\0".encode())
            continue
        if name == "pyproject.toml":
            try:
                doc = tomllib.loads(data.decode("utf-8"))
                project = doc.get("project")
                if isinstance(project, dict):
                    for key in ("version", "dependencies", "optional-dependencies"):
                        project.pop(key, None)
                doc.pop("dependency-groups", None)
                tool = doc.get("tool")
                if isinstance(tool, dict):
                    tool.pop("pypm", None)
                data = json.dumps(doc, sort_keys=True, default=str).encode()
            except (UnicodeDecodeError, tomllib.TOMLDecodeError):
                pass  # (its bytes, then: the backend will say what is wrong)
        h.update(f"{name}: {len(data)}\0".encode() + data)
    return h.hexdigest()


def _lock_interpreter(project: Any, state: dict[str, Any]) -> Any:
    """The interpreter a lock's backend questions run with (sync's choice), found once per lock
    (`state`, shared by its calls)."""
    if "interpreter" not in state:
        from .interpreter import find_interpreter

        state["interpreter"] = find_interpreter(project.tool.python, state.get("requires_python"),
                                                pyproject=project.pyproject)
    return state["interpreter"]


# What a directory's backend asked for beyond its locked [build-system] requires:
# <cache>/build-requires/<key>.json, {"missing": [...]}, key over directory_backend_extras' inputs.
BUILD_REQUIRES_DIR = "build-requires"


def directory_backend_extras(ctx: Any, project: Any, directory: Path, kind: str, name: str, label: str,
                             deps: Sequence[Any], lookup: Any, state: dict[str, Any]) -> list[str]:
    """For `pypm lock`: what the backend of a project directory (the project itself, a path or
    git dependency) asks for through get_requires_for_build_<kind> ("editable" or "wheel") beyond
    its locked build set `deps`, as backend_extras asks an sdist's: hatchling's editable build asks
    for `editables`, which no [build-system] requires names. Asked in the build sandbox, once per
    change of what the answer depends on, which the cache keys: the directory, its build
    configuration (_build_config_token), the build set's versions and the interpreter;
    `state["refresh"]` (`pypm lock --refresh`) asks again. Failures are warnings: the build itself
    checks again and names what is missing."""
    import hashlib
    import json

    from .cache import Cache
    from .config import cache_dir
    from .errors import PypmError

    try:
        interp = _lock_interpreter(project, state)
        closure = build_closure(lookup, name, deps, interp.markers)
        key = hashlib.sha256("\0".join(
            ["1", kind, os.path.realpath(directory), _build_config_token(Path(directory)), interp.describe(),
             *sorted(f"{p.name}=={p.version}" for p in closure)]).encode()).hexdigest()
        record = Path(cache_dir()) / BUILD_REQUIRES_DIR / key[:2] / f"{key}.json"
        if not state.get("refresh"):
            try:
                missing = json.loads(record.read_text(encoding="utf-8"))["missing"]
                if isinstance(missing, list) and all(isinstance(m, str) for m in missing):
                    return list(missing)
            except (OSError, ValueError, KeyError, TypeError):
                pass
        ctx.debug(f"asking the build backend of {label} what its {kind} build needs")
        with Cache(offline=bool(state.get("offline", False)), base_dir=project.root) as cache, \
                tempfile.TemporaryDirectory(prefix="pypm-requires-") as out:
            missing = list(_build(directory, Path(out), kind=kind, build_packages=closure, interpreter=interp,
                                  cache=cache, link_mode=None, fetchers=(), label=label,
                                  network=network_allowed(project, name), epoch=None, requires_only=True,
                                  limits=project.tool.build_limits))
    except PypmError as e:
        ctx.info(f"warning: could not ask the build backend of {label} what else its {kind} build needs: "
                 f"{e.message.splitlines()[0]}")
        return []
    try:
        from .index import _write_atomic

        record.parent.mkdir(parents=True, exist_ok=True)
        _write_atomic(record, json.dumps({"missing": missing}).encode())
    except OSError:
        pass  # (asked again next time)
    return missing


def backend_extras(ctx: Any, project: Any, pkg: Any, deps: Sequence[Any], lookup: Any,
                   state: dict[str, Any]) -> list[str]:
    """For `pypm lock`: what the backend of the sdist-only package `pkg` asks for (its
    get_requires_for_build_wheel, run in the sandbox with the build set `deps` already locked)
    beyond that set. `lookup(name, version)` finds a locked package; `state` is shared between
    calls of one lock (the interpreter, found once). Failures are warnings: the build itself
    checks again and names what is missing."""
    from .cache import Cache
    from .errors import PypmError

    label = f"{pkg.name}=={pkg.version} ({pkg.sdist.filename})"
    try:
        interp = _lock_interpreter(project, state)
        with Cache(offline=bool(state.get("offline", False)), base_dir=project.root) as cache:
            sdist = cache.fetch(pkg.sdist, package=pkg.name)
            return discover_build_requires(sdist, build_packages=build_closure(lookup, pkg.name, deps, interp.markers),
                                           interpreter=interp, cache=cache,
                                           network=network_allowed(project, pkg.name), label=label,
                                           limits=project.tool.build_limits)
    except PypmError as e:
        ctx.info(f"warning: could not ask the build backend of {label} what else it needs to build: "
                 f"{e.message.splitlines()[0]}")
        return []
