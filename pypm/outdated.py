"""`pypm outdated`: for each locked package, the newest version its constraints allow and the newest of all.

"Allowed" holds everything else in the lock fixed: the newest release (not yanked, with a file
for the oldest Python the lock supports) that satisfies every requirement on the package —
the project's own (pyproject.toml: dependencies, extras, groups) and those of the locked
versions of the packages that depend on it (their Requires-Dist, from the index). A move that
needs a dependent to move too shows as "latest" beyond "allowed". Pre-releases count only when
the locked version is one. Exit 1 when any package's locked version is older than the latest.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any, Iterable

from .errors import ExitCode, LockError, PypmError
from .lockfile import LOCK_NAME, Lock, LockedPackage, canonical_name

__all__ = ["Row", "outdated_command", "find_outdated", "render_table"]


@dataclass(frozen=True)
class Row:
    name: str
    locked: str
    allowed: str | None  # None: the index offers nothing that satisfies the constraints
    latest: str | None  # None: the index offers no usable release at all
    outdated: bool
    source: str


def outdated_command(ctx: Any, project: Any, args: Any) -> int:
    """`pypm outdated [--format table|json]`: exit 0 when every locked package is current, else 1."""
    from .lockfile import read

    path = project.root / LOCK_NAME
    if not path.exists():
        raise LockError(f"{path} does not exist: nothing is locked yet", hint="run `pypm lock` first")
    lock = read(path)
    rows = find_outdated(ctx, project, lock, index_url=getattr(args, "index_url", None),
                         extra_index_urls=list(getattr(args, "extra_index_url", []) or []),
                         find_links=list(getattr(args, "find_links", []) or []),
                         offline=bool(getattr(args, "offline", False)))
    old = [r for r in rows if r.outdated]
    if getattr(args, "format", "table") == "json":
        print(json.dumps([asdict(r) for r in rows], indent=2))
    elif old:
        print(render_table(old))
    if old:
        ctx.info(f"{len(old)} of {len(rows)} locked packages have newer versions")
        return ExitCode.FAILURE
    ctx.info(f"all {len(rows)} locked packages are current")
    return ExitCode.OK


def render_table(rows: Iterable[Row]) -> str:
    table = [("Package", "Locked", "Allowed", "Latest")] + [
        (r.name, r.locked, r.allowed or "-", r.latest or "-") for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(4)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in table)


# --------------------------------------------------------------------------- the search

def _lowest_python(*requires_python: str | None) -> str | None:
    """The oldest CPython 3.x.y that satisfies every given Requires-Python (None: none does)."""
    from packaging.specifiers import InvalidSpecifier, SpecifierSet

    try:
        specs = [SpecifierSet(r or "") for r in requires_python]
    except InvalidSpecifier:
        return None
    for minor in range(0, 40):
        for patch in range(0, 30):
            v = f"3.{minor}.{patch}"
            if all(s.contains(v, prereleases=True) for s in specs):
                return v
    return None


def find_outdated(ctx: Any, project: Any, lock: Lock, *, index_url: str | None = None,
                  extra_index_urls: list[str] | None = None, find_links: list[str] | None = None,
                  offline: bool = False) -> list[Row]:
    """One Row per locked package from an index (or find-links), sorted by name and version.

    Each package is looked up where the lock says it came from, unless index options are given:
    then every package is looked up there.
    """
    from packaging.requirements import InvalidRequirement, Requirement
    from packaging.specifiers import SpecifierSet
    from packaging.version import InvalidVersion, Version

    from .config import cache_dir
    from .index import IndexClient, PackageNotFound

    pkgs = [p for p in lock.sorted_packages() if not p.is_root and p.index_source() is not None]
    override = bool(index_url or extra_index_urls or find_links)
    clients: dict[Any, Any] = {}

    def client_for(p: LockedPackage) -> Any:
        key: Any = "override" if override else p.index_source()
        if key not in clients:
            if override:
                idx = ([index_url] if index_url else []) + list(extra_index_urls or [])
                clients[key] = IndexClient(idx, list(find_links or []), cache_dir=cache_dir(), offline=offline,
                                           warn=lambda m: ctx.info(f"warning: {m}"))
            else:
                kind, where = key
                clients[key] = IndexClient([where] if kind == "registry" else [],
                                           [where] if kind == "find-links" else [], cache_dir=cache_dir(),
                                           offline=offline, warn=lambda m: ctx.info(f"warning: {m}"))
        return clients[key]

    try:
        by_client: dict[int, tuple[Any, set[str]]] = {}
        for p in pkgs:
            c = client_for(p)
            by_client.setdefault(id(c), (c, set()))[1].add(canonical_name(p.name))
        for c, names in by_client.values():
            c.prefetch(sorted(names))

        # requirements on each name: the project's own, then each dependent's Requires-Dist
        constraints: dict[str, list[SpecifierSet]] = {}

        def add(req_text: str, only: str | None = None) -> None:
            try:
                req = Requirement(req_text)
            except InvalidRequirement:
                return
            n = canonical_name(req.name)
            if only is None or n == only:
                constraints.setdefault(n, []).append(req.specifier)

        reqs = list(project.dependencies)
        for group in (*project.optional_dependencies.values(), *project.dependency_groups.values()):
            reqs += list(group)
        for r in reqs:
            add(r)
        files_of: dict[tuple[str, str], Any] = {}
        for p in pkgs:
            if not (p.dependencies or p.optional_dependencies):
                continue
            f = _one_file(client_for(p), p)
            if f is not None:
                files_of[p.key] = f
        for c, _ in by_client.values():
            c.prefetch_metadata([f for p in pkgs if (f := files_of.get(p.key)) is not None
                                 and client_for(p) is c])
        for p in pkgs:
            f = files_of.get(p.key)
            if f is None:
                continue
            targets = {canonical_name(d.name) for d in p.dependencies}
            targets |= {canonical_name(d.name) for ds in p.optional_dependencies.values() for d in ds}
            try:
                md = client_for(p).metadata(f)
            except PypmError as e:  # one unreadable metadata file must not hide the rest
                ctx.info(f"warning: cannot read the metadata of {p.name} {p.version} ({e}); its requirements are "
                         "not counted")
                continue
            for r in md.requires_dist:
                try:
                    n = canonical_name(Requirement(r).name)
                except InvalidRequirement:
                    continue
                if n in targets:
                    add(r, n)

        lock_lowest = _lowest_python(lock.requires_python)
        rows = []
        for p in pkgs:
            name = canonical_name(p.name)
            try:
                locked = Version(p.version)
            except InvalidVersion:
                continue
            try:
                files = client_for(p).project_files(name)
            except PackageNotFound:
                files = []
            pre = locked.is_prerelease
            versions: dict[Version, list[Any]] = {}
            for f in files:
                if f.yanked is not None:
                    continue
                try:
                    v = Version(f.version)
                except InvalidVersion:
                    continue
                if v.is_prerelease and not pre:
                    continue
                versions.setdefault(v, []).append(f)
            latest = max(versions, default=None)
            # The Python floor a newer release must support: the oldest Python the lock supports
            # where the locked release can be installed (a package locked only for newer Pythons,
            # in a fork of the lock, is not held back by the lock's overall floor).
            floors = [x for f in versions.get(locked, []) if (x := _lowest_python(lock.requires_python,
                                                                                  f.requires_python))]
            lowest = min(floors, key=Version) if floors else lock_lowest

            specs = constraints.get(name, [])
            allowed = max((v for v, fs in versions.items()
                           if all(s.contains(v, prereleases=True) for s in specs) and _python_ok(fs, lowest)),
                          default=None)
            src = p.index_source()
            rows.append(Row(name, p.version, str(allowed) if allowed else None, str(latest) if latest else None,
                            bool(latest and latest > locked), src[1] if src else ""))
        return rows
    finally:
        for c in clients.values():
            c.close()


def _python_ok(files: list[Any], lowest: str | None) -> bool:
    """Some file of the release installs on Python `lowest` (an unparsable Requires-Python does not)."""
    from packaging.specifiers import InvalidSpecifier, SpecifierSet

    if lowest is None:
        return True
    for f in files:
        try:
            if not f.requires_python or SpecifierSet(f.requires_python).contains(lowest, prereleases=True):
                return True
        except InvalidSpecifier:
            continue
    return False


def _one_file(client: Any, p: LockedPackage) -> Any:
    """The index's entry for one of the package's locked files (a wheel if there is one)."""
    from .index import PackageNotFound

    try:
        served = {f.filename: f for f in client.project_files(p.name)}
    except PackageNotFound:
        return None
    for e in sorted(p.files(), key=lambda e: not e.filename.endswith(".whl")):
        if e.filename in served:
            return served[e.filename]
    return None
