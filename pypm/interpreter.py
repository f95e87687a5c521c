"""The target interpreter: find it, ask it once what it is, and derive its wheel tags.

The target is queried by running one small script in it (stdlib only, so it works in any
CPython/PyPy 3.8+ with nothing installed); the JSON answer is cached on disk keyed by the
executable's path, size and mtime, so each interpreter is asked only once. Wheel tags are
computed here, in pypm's process, with `packaging.tags` fed the target's facts.
"""

from __future__ import annotations

import json
import os
import functools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ProjectError, UsageError

__all__ = ["Interpreter", "query_interpreter", "find_interpreter", "QUERY_FORMAT"]

QUERY_FORMAT = 1  # bump when _QUERY_SCRIPT's output changes: old cache entries are then ignored

# Runs inside the target. Stdlib only, Python 3.8 syntax. Mirrors packaging.markers.default_environment.
_QUERY_SCRIPT = r"""
import json, os, platform, sys, sysconfig
def fv(info):
    v = "{0.major}.{0.minor}.{0.micro}".format(info)
    if info.releaselevel != "final":
        v += info.releaselevel[0] + str(info.serial)
    return v
try:
    glibc = os.confstr("CS_GNU_LIBC_VERSION")
except (AttributeError, OSError, ValueError):
    glibc = None
ph = "/@@PREFIX@@"
sv = {"base": ph, "platbase": ph, "installed_base": ph, "installed_platbase": ph, "userbase": ph}
schemes = sysconfig.get_scheme_names()
scheme = "venv" if "venv" in schemes else ("posix_prefix" if os.name == "posix" else "nt")
paths = sysconfig.get_paths(scheme=scheme, vars=sv, expand=True)
base_exe = getattr(sys, "_base_executable", None) or sys.executable
if sys.prefix != sys.base_prefix and base_exe == sys.executable:
    # < 3.11 inside a venv: _base_executable may still name the venv's own python
    cand = os.path.join(sys.base_prefix, "bin", "python%d.%d" % sys.version_info[:2])
    if os.path.exists(cand):
        base_exe = cand
print(json.dumps({
    "executable": sys.executable,
    "base_executable": base_exe,
    "prefix": sys.prefix,
    "base_prefix": sys.base_prefix,
    "version": list(sys.version_info[:3]),
    "implementation": sys.implementation.name,
    "cache_tag": sys.implementation.cache_tag,
    "markers": {
        "implementation_name": sys.implementation.name,
        "implementation_version": fv(sys.implementation.version),
        "os_name": os.name,
        "platform_machine": platform.machine(),
        "platform_release": platform.release(),
        "platform_system": platform.system(),
        "platform_version": platform.version(),
        "python_full_version": platform.python_version(),
        "platform_python_implementation": platform.python_implementation(),
        "python_version": ".".join(platform.python_version_tuple()[:2]),
        "sys_platform": sys.platform,
    },
    "platform": sysconfig.get_platform(),
    "abiflags": getattr(sys, "abiflags", ""),
    "soabi": sysconfig.get_config_var("SOABI"),
    "gil_disabled": bool(sysconfig.get_config_var("Py_GIL_DISABLED")),
    "debug": hasattr(sys, "gettotalrefcount"),
    "maxsize_64": sys.maxsize > 2 ** 32,
    "glibc": glibc,
    "mac_ver": platform.mac_ver()[0],
    "paths": paths,
    "placeholder": ph,
}))
"""


@dataclass(frozen=True)
class Interpreter:
    """What pypm needs to know about a target Python. Plain data; build with `query_interpreter`."""

    executable: Path  # the path it was found at (not resolved)
    base_executable: Path  # the interpreter a venv's bin/python should point at
    base_prefix: Path
    version: tuple[int, int, int]
    implementation: str  # sys.implementation.name: "cpython", "pypy"
    markers: dict[str, str]  # PEP 508 marker environment
    tags: tuple[str, ...]  # supported wheel tags, most preferred first ("cp311-cp311-manylinux_2_28_x86_64")
    venv_paths: dict[str, str]  # sysconfig keys -> path relative to a venv root ("lib/python3.11/site-packages")
    cache_tag: str  # "cpython-311": names __pycache__ files
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def version_str(self) -> str:
        return ".".join(map(str, self.version))

    def tag_priority(self) -> dict[str, int]:
        """tag -> rank (0 is best); a wheel's rank is the best rank of its tags."""
        return {t: i for i, t in enumerate(self.tags)}

    def wheel_rank(self, filename: str) -> int | None:
        """Rank of a wheel filename for this interpreter (lower is better), None if incompatible."""
        from packaging.utils import InvalidWheelFilename, parse_wheel_filename

        try:
            _, _, _, wtags = parse_wheel_filename(filename)
        except InvalidWheelFilename:
            return None
        prio = self._prio()
        ranks = [prio[str(t)] for t in wtags if str(t) in prio]
        return min(ranks) if ranks else None

    def _prio(self) -> dict[str, int]:
        cached = self.raw.get("_prio")
        if cached is None:
            cached = self.raw["_prio"] = self.tag_priority()
        return cached

    def describe(self) -> str:
        return f"{self.implementation} {self.version_str} ({self.executable})"


# --------------------------------------------------------------------------- tags

def _manylinux_platforms(arch: str, glibc: tuple[int, int]) -> list[str]:
    # Written out instead of packaging._manylinux.platform_tags, which reads *this* process's
    # glibc; the target's may differ (e.g. an interpreter from another sysroot).
    if arch not in {"x86_64", "i686", "aarch64", "armv7l", "ppc64", "ppc64le", "s390x", "riscv64", "loongarch64"}:
        return []
    legacy = {(2, 17): "manylinux2014", (2, 12): "manylinux2010", (2, 5): "manylinux1"}
    legacy_arches = {"x86_64", "i686"}
    m2014_arches = legacy_arches | {"aarch64", "armv7l", "ppc64", "ppc64le", "s390x"}
    major, minor = glibc
    oldest = 5 if arch in legacy_arches else 17  # manylinux never went below these
    out: list[str] = []
    for m in range(minor, oldest - 1, -1):
        out.append(f"manylinux_{major}_{m}_{arch}")
        alias = legacy.get((major, m))
        if alias and arch in (m2014_arches if m == 17 else legacy_arches):
            out.append(f"{alias}_{arch}")
    return out


def _musl_version(executable: str) -> tuple[int, int] | None:
    try:  # packaging reads the ELF interpreter of the given executable: the target's, not ours
        from packaging._musllinux import _get_musl_version

        v = _get_musl_version(executable)
    except Exception:  # private API; absence only costs the musllinux tags
        return None
    return (v.major, v.minor) if v else None


@functools.cache
def _linux_tag_first() -> bool:
    """Does the installed packaging rank `linux_<arch>` before the manylinux tags?"""
    import sys

    if not sys.platform.startswith("linux"):
        return False
    from packaging.tags import platform_tags

    first = next(iter(platform_tags()), "")
    return first.startswith("linux_")


def _platforms(raw: dict[str, Any]) -> list[str]:
    plat = re.sub(r"[^\w]+", "_", raw["platform"]).lower()  # "linux-x86_64" -> "linux_x86_64"
    if plat.startswith("linux_"):
        arch = plat[len("linux_"):]
        if arch == "x86_64" and not raw["maxsize_64"]:
            arch = "i686"
        elif arch == "aarch64" and not raw["maxsize_64"]:
            arch = "armv8l"
        out: list[str] = []
        if raw.get("glibc"):
            m = re.match(r"glibc (\d+)\.(\d+)", raw["glibc"])
            if m:
                out += _manylinux_platforms(arch, (int(m.group(1)), int(m.group(2))))
        else:
            musl = _musl_version(raw["executable"])
            if musl:
                out += [f"musllinux_{musl[0]}_{m}_{arch}" for m in range(musl[1], -1, -1)]
        # Where the plain `linux_<arch>` tag ranks changed between packaging releases (26.3
        # moved it ahead of manylinux); follow the installed packaging so pypm and pip agree.
        return [f"linux_{arch}"] + out if _linux_tag_first() else out + [f"linux_{arch}"]
    if plat.startswith("macosx_"):
        from packaging.tags import mac_platforms

        parts = raw.get("mac_ver") or ""
        ver = tuple(int(x) for x in parts.split(".")[:2]) if parts else None
        mac_arch = plat.rsplit("_", 1)[-1] if not plat.endswith("universal2") else None
        return list(mac_platforms(ver, mac_arch))  # type: ignore[arg-type]  # (major, minor), parsed as packaging does
    return [plat]


def compute_tags(raw: dict[str, Any]) -> tuple[str, ...]:
    """The target's supported tags in priority order (packaging.tags with the target's facts)."""
    from packaging import tags as pt

    major, minor = raw["version"][:2]
    platforms = _platforms(raw)
    impl = raw["implementation"]
    if impl == "cpython":
        abi = f"cp{major}{minor}" + ("t" if raw.get("gil_disabled") else "") + ("d" if raw.get("debug") else "")
        if (major, minor) < (3, 8):
            abi = f"cp{major}{minor}{raw.get('abiflags', '')}"
        found = list(pt.cpython_tags((major, minor), [abi], platforms))
        found += pt.compatible_tags((major, minor), f"cp{major}{minor}", platforms)
    else:
        interp = {"pypy": "pp", "graalpy": "graalpy"}.get(impl, impl) + f"{major}{minor}"
        soabi = raw.get("soabi") or ""
        abis = ["-".join(soabi.split("-")[:2]).replace(".", "_").replace("-", "_")] if soabi else []
        found = list(pt.generic_tags(interp, abis, platforms))
        found += pt.compatible_tags((major, minor), interp, platforms)
    seen: dict[str, None] = {}
    for t in found:
        seen.setdefault(str(t), None)
    return tuple(seen)


# --------------------------------------------------------------------------- query + cache

def _cache_file(executable: Path) -> Path | None:
    from .config import cache_dir

    try:
        st = os.stat(executable)  # follows symlinks: a re-pointed python3 link changes the key
    except OSError:
        return None
    key = f"{QUERY_FORMAT}\0{os.path.abspath(executable)}\0{os.path.realpath(executable)}\0{st.st_size}\0{st.st_mtime_ns}"
    from .fastpath import sha256

    return cache_dir() / "interpreters" / (sha256(key.encode()).hexdigest()[:32] + ".json")


def _from_raw(executable: Path, raw: dict[str, Any]) -> Interpreter:
    ph = raw["placeholder"]
    venv_paths: dict[str, str] = {}
    for k, v in raw["paths"].items():
        if v.startswith(ph + "/") or v == ph:
            venv_paths[k] = v[len(ph) + 1:]
    major, minor = raw["version"][:2]
    venv_paths.setdefault("purelib", f"lib/python{major}.{minor}/site-packages")
    venv_paths.setdefault("platlib", venv_paths["purelib"])
    venv_paths.setdefault("scripts", "bin")
    venv_paths.setdefault("data", "")
    # pip and installer put a venv's headers under include/site/pythonX.Y/<dist>
    venv_paths["headers"] = f"include/site/python{major}.{minor}"
    return Interpreter(
        executable=executable,
        base_executable=Path(raw["base_executable"]),
        base_prefix=Path(raw["base_prefix"]),
        version=tuple(raw["version"]),
        implementation=raw["implementation"],
        markers=dict(raw["markers"]),
        tags=tuple(raw["tags"]),
        venv_paths=venv_paths,
        cache_tag=raw.get("cache_tag") or f"cpython-{major}{minor}",
        raw=raw,
    )


_NO_ANSWER = "did not answer the query (not a Python interpreter?)"


class QueryFailed(Exception):
    """Internal: the candidate could not be run (not a user error by itself)."""


def _run_query(executable: Path) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    import subprocess

    try:
        proc = subprocess.run([str(executable), "-I", "-S", "-c", _QUERY_SCRIPT], capture_output=True,
                              text=True, timeout=30, env=env, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.SubprocessError) as e:
        raise QueryFailed(f"cannot run: {e}") from None
    if proc.returncode != 0:
        first = next((ln.strip() for ln in proc.stderr.splitlines() if ln.strip()), "(no output)")
        raise QueryFailed(f"exit status {proc.returncode}: {first}")
    try:
        raw: dict[str, Any] = json.loads(proc.stdout)  # its shape is checked in _query, as every answer's
    except ValueError:
        raise QueryFailed(_NO_ANSWER) from None
    return raw


def _own_answer(path: Path) -> dict[str, Any] | None:
    """The query's answer for `path` computed in this process, when `path` is the very binary
    this process runs on outside any venv: the subprocess would answer the same, and costs a
    process start (~20 ms of CPU; ~10 ms of the first sync on a cold cache). None when that is
    not certain.

    The query script itself runs here (one source of truth); only the four facts that depend on
    how the interpreter was started are replaced by what `path`, started bare, would report.
    Conditions, each because the subprocess could otherwise answer differently:
    - the same file (device and inode, symlinks followed) as this process's base interpreter;
    - installed as <our base prefix>/bin/<name>, so its prefix search finds our base prefix;
    - no pyvenv.cfg beside it or one level up (that would make it a venv's python);
    - no PYTHONHOME here (the subprocess runs without PYTHON* variables; our prefix would not).
    """
    import sys

    if os.environ.get("PYTHONHOME") is not None:
        return None
    own = getattr(sys, "_base_executable", None) or sys.executable
    try:
        if not own or not os.path.samefile(path, own):
            return None
    except OSError:
        return None
    real = os.path.realpath(path)
    if os.path.dirname(real) != os.path.join(os.path.realpath(sys.base_prefix), "bin"):
        return None
    if any(os.path.exists(os.path.join(d, "pyvenv.cfg")) for d in (path.parent, path.parent.parent)):
        return None
    out: list[str] = []
    namespace = {"__name__": "__pypm_query__", "print": out.append}
    exec(compile(_QUERY_SCRIPT, "<pypm interpreter query>", "exec"), namespace)
    raw: dict[str, Any] = json.loads(out[0])
    raw.update(executable=str(path), base_executable=str(path), prefix=sys.base_prefix,
               base_prefix=sys.base_prefix)
    return raw


def query_interpreter(executable: str | os.PathLike[str], *, use_cache: bool = True) -> Interpreter:
    """Describe the interpreter at `executable` (cached on disk). Raises ProjectError if it cannot run."""
    path = Path(os.path.abspath(executable))
    try:
        return _query(path, use_cache=use_cache)
    except QueryFailed as e:
        raise ProjectError(f"cannot use {path} as the target interpreter: {e}",
                           hint="pass --python with a working interpreter (a version such as 3.11, or a path)") from None


# The answers of wrappers (a pyenv shim: a script that picks the Python it runs each time it is
# started), kept for the life of this process only. Their answer is never written to the disk
# cache (below), and asking costs a process start or two (~200-500 ms for a pyenv shim): a lock
# that read the metadata of four legacy sdists asked every shim on PATH four times (~2 s). What a
# wrapper picks could change between two commands, not within one. Failures are kept too (a shim
# of a version that is not installed fails the same way each time): {path: answer or message}.
_WRAPPED: dict[str, "Interpreter | QueryFailed"] = {}


def _query(path: Path, *, use_cache: bool = True) -> Interpreter:
    if use_cache and (kept := _WRAPPED.get(str(path))) is not None:
        if isinstance(kept, QueryFailed):
            raise QueryFailed(str(kept))
        return kept
    try:
        return _query_uncached(path, use_cache=use_cache)
    except QueryFailed as e:
        if use_cache and _is_wrapper(path):
            _WRAPPED[str(path)] = e
        raise


def _is_wrapper(path: Path) -> bool:
    # A script (#!) rather than a binary: what it runs is decided when it runs.
    try:
        with open(path, "rb") as f:
            return f.read(2) == b"#!"
    except OSError:
        return False


def _query_uncached(path: Path, *, use_cache: bool) -> Interpreter:
    cf = _cache_file(path) if use_cache else None
    if cf is not None and cf.is_file():
        try:
            raw = json.loads(cf.read_text())
            if raw.get("format") == QUERY_FORMAT:
                return _from_raw(path, raw)
        except (OSError, ValueError, KeyError, TypeError, AttributeError):  # AttributeError: not a JSON object
            pass  # unreadable cache entry: ask the interpreter again and overwrite it
    if not path.exists():
        raise QueryFailed("no such file")
    raw = _own_answer(path) or _run_query(path)
    try:
        raw["format"] = QUERY_FORMAT
        raw["tags"] = list(compute_tags(raw))
        interp = _from_raw(path, raw)
    except (KeyError, TypeError, ValueError, AttributeError):  # other JSON ([], 42, a partial object)
        raise QueryFailed(_NO_ANSWER) from None
    # A wrapper (e.g. a pyenv shim) may run a different Python tomorrow with the same bytes:
    # cache only answers from the real binary.
    if cf is not None and os.path.realpath(path) == os.path.realpath(raw["executable"]):
        try:
            cf.parent.mkdir(parents=True, exist_ok=True)
            tmp = cf.with_name(f".{cf.name}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps(raw, sort_keys=True))
            os.replace(tmp, cf)
        except OSError:
            pass  # a read-only cache only costs a re-query next time
    elif use_cache:
        _WRAPPED[str(path)] = interp  # (for this process only: see _WRAPPED)
    return interp


# --------------------------------------------------------------------------- discovery

_NAME = re.compile(r"^python3(\.\d+)?$")
_VERSION_REQ = re.compile(r"^(?:python|cpython|py)?\s*(\d+)(?:\.(\d+))?(?:\.(\d+))?$", re.I)


def _path_candidates() -> list[Path]:
    """python3 and python3.X on PATH, in PATH order (names sorted newest-first within a dir)."""
    out: list[Path] = []
    seen: set[str] = set()
    for d in os.environ.get("PATH", "").split(os.pathsep):
        if not d:
            continue
        try:
            names = [n for n in os.listdir(d) if _NAME.match(n)]
        except OSError:
            continue
        names.sort(key=lambda n: (0, -int(n.split(".")[1])) if "." in n else (1, 0))
        for n in names:
            p = Path(d) / n
            if str(p) in seen or not os.access(p, os.X_OK) or p.is_dir():
                continue
            seen.add(str(p))
            out.append(p)
    return out


def _query_all(paths: list[Path], into: dict[Path, "Interpreter | str"]) -> None:
    """Query several candidates at once; failures are kept as their message (for the error listing)."""
    def one(p: Path) -> "Interpreter | str":
        try:
            return _query(p)
        except QueryFailed as e:
            return str(e)

    if len(paths) <= 1:
        for p in paths:
            into[p] = one(p)
        return
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=min(8, len(paths))) as ex:
        for p, r in zip(paths, ex.map(one, paths)):
            into[p] = r


def _satisfies(version: tuple[int, int, int], requires_python: str | None) -> bool:
    if not requires_python:
        return True
    from packaging.specifiers import SpecifierSet

    return SpecifierSet(requires_python).contains(".".join(map(str, version)), prereleases=True)


def find_project_interpreter(flag: str | None, project: Any) -> Interpreter:
    """The interpreter for `project`'s venv: `--python flag` when given, else its [tool.pypm]
    python (named as that setting in errors), else the newest that satisfies requires-python."""
    if flag:
        return find_interpreter(flag, project.requires_python)
    return find_interpreter(project.tool.python, project.requires_python, pyproject=project.pyproject)


def find_interpreter(request: str | None, requires_python: str | None, *,
                     pyproject: str | os.PathLike[str] | None = None) -> Interpreter:
    """The interpreter for a venv.

    `request`: None (newest python3.X on PATH that satisfies `requires_python`), a version
    ("3.11", "3.11.4", "cpython3.12", ">=3.10,<3.13"), a path, or a command name on PATH.
    `pyproject`: the pyproject.toml the request comes from (`[tool.pypm] python`), so that an
    error names that setting and file rather than a --python flag nobody gave.
    Raises ProjectError (listing what was found) when nothing fits.
    """
    rp = requires_python or None
    if pyproject is None:
        said, fix = f"--python {request!r}", "pass --python with"
    else:
        said, fix = f"[tool.pypm] python = {request!r} in {pyproject}", "set [tool.pypm] python to"
    if request and (os.sep in request or request.startswith(".") or Path(request).is_file()):
        try:
            interp = query_interpreter(Path(request).expanduser())
        except ProjectError as e:
            if pyproject is None:
                raise
            raise ProjectError(f"{e.message} ({said})",
                               hint=f"{fix} a working interpreter (a version such as 3.11, or a path)") from None
        if not _satisfies(interp.version, rp):
            raise ProjectError(f"{said} is Python {interp.version_str}, which does not satisfy "
                               f"requires-python `{rp}`",
                               hint=f"{fix} a matching interpreter, or change requires-python in pyproject.toml")
        return interp

    want = None
    if request:
        m = _VERSION_REQ.match(request.strip())
        if m:
            parts = [int(g) for g in m.groups() if g is not None]
            want = lambda v: list(v[: len(parts)]) == parts  # noqa: E731
        elif re.match(r"^\s*(==|!=|<=|>=|<|>|~=)", request):
            from packaging.specifiers import InvalidSpecifier, SpecifierSet

            try:
                spec = SpecifierSet(request)
            except InvalidSpecifier:
                raise UsageError(f"{said} is not a valid version specifier",
                                 hint=f"{fix} a version such as 3.11, a specifier such as '>=3.10', or a path") from None
            want = lambda v: spec.contains(".".join(map(str, v)), prereleases=True)  # noqa: E731
        else:
            import shutil

            on_path = shutil.which(request)
            if not on_path:
                raise UsageError(f"{said}: no such interpreter on PATH",
                                 hint=f"{fix} a version such as 3.11, a specifier such as '>=3.10', or a path")
            return find_interpreter(on_path, rp, pyproject=pyproject)

    cands = _path_candidates()
    order = {c: i for i, c in enumerate(cands)}
    found: dict[Path, Interpreter | str] = {}

    def best_so_far() -> Interpreter | None:
        ok = [(i.version, -order[c], i) for c, i in found.items() if isinstance(i, Interpreter)
              and _satisfies(i.version, rp) and (want is None or want(i.version))]
        return max(ok, key=lambda t: t[:2])[2] if ok else None  # newest; first on PATH among equals

    # Asking an interpreter costs a process start (~20 ms; ~200 ms for a pyenv shim), so ask in
    # parallel, and ask python3.X only while X could still beat the best answer so far.
    _query_all([c for c in cands if c.name == "python3"], found)
    by_minor: dict[int, list[Path]] = {}
    for c in cands:
        if c.name != "python3":
            by_minor.setdefault(int(c.name.split(".")[1]), []).append(c)
    for minor in sorted(by_minor, reverse=True):
        best = best_so_far()
        if best is not None and (3, minor) < best.version[:2]:
            break
        _query_all(by_minor[minor], found)
    best = best_so_far()
    if best is not None:
        return best
    report = [f"{c}: {r}" if isinstance(r, str) else f"{c}: Python {r.version_str}"
              for c in cands if (r := found.get(c)) is not None]
    what = said if request else "a Python"
    needs = f" satisfying requires-python `{rp}`" if rp else ""
    listing = "\n    ".join(report) if report else "(no python3 or python3.X on PATH)"
    raise ProjectError(f"no interpreter found for {what}{needs}; found:\n    {listing}",
                       hint="install a matching Python and put it on PATH, or "
                            + (f"{fix} its path" if request else "pass --python PATH"))
