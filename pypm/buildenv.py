"""The build environment: a venv holding exactly a package's locked build dependencies."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

from .errors import BuildError

if TYPE_CHECKING:  # pragma: no cover
    from .installer import LinkMode

__all__ = ["build_environment", "build_packages_of", "build_closure", "missing_requirements"]


def build_packages_of(lock: Any, pkg: Any, env: Mapping[str, str] | None = None) -> list[Any]:
    """The locked packages that make up `pkg`'s build environment: its build-dependencies and
    their runtime closure (through `dependencies`, and `optional-dependencies` for an edge with
    extras). With `env` (the target interpreter's PEP 508 environment), edges whose marker
    does not hold there are left out, as sync leaves them out of the venv."""
    from packaging.markers import Marker

    from .errors import LockError
    from .lockfile import canonical_name

    if pkg is None:
        return []
    menv = dict(env, extra="") if env is not None else None
    out: dict[tuple[str, str], Any] = {}
    extras_done: set[tuple[tuple[str, str], str]] = set()
    stack = list(pkg.build_dependencies)
    while stack:
        d = stack.pop()
        if menv is not None and d.marker and not Marker(d.marker).evaluate(menv):
            continue
        key = (canonical_name(d.name), d.version)
        p = out.get(key) or lock.get(d.name, d.version)
        if p is None:
            raise LockError(f"pypm.lock names {d.name}=={d.version} as a build dependency of {pkg.name} "
                            "but has no such package", hint="re-create it with `pypm lock`")
        for extra in d.extras:
            if (key, canonical_name(extra)) not in extras_done:
                extras_done.add((key, canonical_name(extra)))
                opt = p.optional_dependencies
                stack.extend(opt.get(canonical_name(extra)) or opt.get(extra) or [])
        if key not in out:
            out[key] = p
            stack.extend(p.dependencies)
    return sorted(out.values(), key=lambda p: p.key)


def build_closure(get: Callable[[str, str], Any], name: str, build_dependencies: Sequence[Any],
                  env: Mapping[str, str] | None = None) -> list[Any]:
    """`build_packages_of` for a package whose build set is resolved but not (yet) in a lock:
    `get(name, version)` finds a resolved package, `build_dependencies` are its edges."""
    from types import SimpleNamespace

    return build_packages_of(SimpleNamespace(get=get),
                             SimpleNamespace(name=name, build_dependencies=list(build_dependencies)), env)


def build_environment(build_packages: Sequence[Any], interpreter: Any, cache: Any, env_dir: Path, *,
                      link_mode: LinkMode | None = None, fetchers: Sequence[Any] = (), label: str = "") -> None:
    """Make `env_dir` a venv holding exactly `build_packages` (locked wheels, verified by the cache).

    Scripts get `#!/build/env/bin/python`: the venv is seen at that fixed path inside the sandbox.
    """
    from dataclasses import replace

    from .build_sandbox import ENV_INSIDE
    from .installer import install_wheel
    from .plan import choose_file
    from .venv import create_venv

    entries = []
    for p in build_packages:
        kind, f = choose_file(p, interpreter.tags, interpreter.describe())
        if kind != "wheel":
            raise BuildError(f"build dependency {p.name}=={p.version} of {label} has no wheel for "
                             f"{interpreter.describe()}; building build dependencies from source is not supported",
                             hint="pin a version of it that ships wheels in [build-system] requires")
        if not f.has_valid_hash():  # sync refuses such a lock first; `pypm build` relies on this
            from .errors import LockError

            raise LockError(f"pypm.lock has no usable sha256 for {p.name}=={p.version} ({f.filename}), "
                            f"a build dependency of {label}", hint="fill in the hashes with `pypm lock --refresh`")
        entries.append((p, f))
    # fetchers: plugin wheel fetchers (e.g. s3cache), tried before the index as for the venv's wheels.
    got = cache.fetch_many([(p.name, f) for p, f in entries], fetchers=fetchers) if entries else {}
    trees = cache.unpack_many([(p.name, f) for p, f in entries], got) if entries else {}
    layout = create_venv(env_dir, interpreter)
    layout = replace(layout, python=Path(ENV_INSIDE) / "bin" / "python")  # only used for shebangs
    for _p, f in entries:
        install_wheel(layout, trees[f.sha256], wheel_filename=f.filename, wheel_sha256=f.sha256,
                      link_mode=link_mode)


def missing_requirements(requirements: Sequence[str], env_dir: Path, interpreter: Any) -> list[str]:
    """Requirements the backend asked for (get_requires_for_build_*) that the env lacks."""
    from importlib.metadata import PathDistribution

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    have: dict[str, str] = {}
    for key in ("purelib", "platlib"):
        for d in (env_dir / interpreter.venv_paths[key]).glob("*.dist-info"):
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
