"""Which locked packages a selection (main deps, extras, groups) needs, in one environment or all.

Pure: a walk over the lock's graph. With `env` (a PEP 508 marker environment) edge markers
are evaluated and the result is what to install there; with `env=None` every edge is
followed, which is what export and verification want.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

from .errors import LockError
from .lockfile import Dependency, Lock, LockedPackage, canonical_name

__all__ = ["Selection", "selection_of", "select_packages", "entry_dependencies"]


@dataclass(frozen=True)
class Selection:
    main: bool = True  # the project's [project] dependencies
    extras: frozenset[str] = frozenset()  # of the project; "*" is every extra
    groups: frozenset[str] = frozenset({"dev"})  # PEP 735 groups
    include_project: bool = True  # the root package itself (editable), when it is not virtual
    # A workspace (the lock's `members`): `--package NAME` starts from those members instead of
    # the root; `--all-packages` from the root and every member.
    packages: frozenset[str] = frozenset()
    all_packages: bool = False
    # `--no-install-package NAME` (as uv's): left out of the install, though the selection reaches
    # it; its own dependencies are not (sync._sync_planned applies it; export does not).
    no_install: frozenset[str] = frozenset()

    @classmethod
    def from_flags(cls, *, extras: Sequence[str] = (), all_extras: bool = False, no_dev: bool = False,
                   groups: Sequence[str] = (), only_groups: Sequence[str] = (), no_install_project: bool = False,
                   packages: Sequence[str] = (), all_packages: bool = False,
                   no_install_packages: Sequence[str] = ()) -> "Selection":
        if no_install_packages:
            from dataclasses import replace

            base = cls.from_flags(extras=extras, all_extras=all_extras, no_dev=no_dev, groups=groups,
                                  only_groups=only_groups, no_install_project=no_install_project,
                                  packages=packages, all_packages=all_packages)
            return replace(base, no_install=frozenset(canonical_name(x) for x in no_install_packages))
        if packages or all_packages:
            from dataclasses import replace

            base = cls.from_flags(extras=extras, all_extras=all_extras, no_dev=no_dev, groups=groups,
                                  only_groups=only_groups, no_install_project=no_install_project)
            if packages and not all_packages:  # the members alone: not the root's own requirements
                # (the groups stay: they name the members' own, `dev` by default, as uv)
                base = replace(base, main=False, extras=frozenset(), include_project=False)
            return replace(base, packages=frozenset(canonical_name(x) for x in packages), all_packages=all_packages)
        g = {canonical_name(x) for x in groups}
        if only_groups:
            return cls(main=False, extras=frozenset(), groups=frozenset(canonical_name(x) for x in only_groups),
                       include_project=False)
        if not no_dev:
            g.add("dev")
        ex = frozenset({"*"}) if all_extras else frozenset(canonical_name(x) for x in extras)
        return cls(main=True, extras=ex, groups=frozenset(g), include_project=not no_install_project)


def selection_of(args: object) -> Selection:
    """The selection flags on a command's parsed arguments (sync's, run's, shell's: absent ones at
    their defaults), for SyncOptions and run's freshness check alike."""
    def g(name: str) -> list[str]:
        return list(getattr(args, name, None) or [])

    return Selection.from_flags(extras=g("extra"), all_extras=bool(getattr(args, "all_extras", False)),
                                no_dev=bool(getattr(args, "no_dev", False)), groups=g("group"),
                                only_groups=g("only_group"),
                                no_install_project=bool(getattr(args, "no_install_project", False)),
                                packages=g("package"), all_packages=bool(getattr(args, "all_packages", False)),
                                no_install_packages=g("no_install_package"))


def _edge_applies(dep: Dependency, env: Mapping[str, str] | None) -> bool:
    if env is None or not dep.marker:
        return True
    from packaging.markers import InvalidMarker, Marker

    try:
        return Marker(dep.marker).evaluate(dict(env, extra=""))
    except InvalidMarker as e:
        raise LockError(f"pypm.lock: the edge to {dep.name}=={dep.version} has an invalid marker {dep.marker!r} ({e})",
                        hint="re-create the lock with `pypm lock`") from None


def entry_dependencies(lock: Lock, selection: Selection) -> list[Dependency]:
    """The root package's edges the selection starts from (main deps, extras, groups), in a stable
    order; raises LockError when the lock has no root package."""
    root = lock.root()
    if root is None:
        raise LockError("pypm.lock has no root package (source = editable or virtual)",
                        hint="re-create it with `pypm lock`")
    out: list[Dependency] = []
    if selection.main:
        out += root.dependencies
    wanted_extras = set(root.optional_dependencies) if "*" in selection.extras else set(selection.extras)
    # An unknown extra or group name is the caller's to reject (it knows pyproject.toml); an
    # extra with no dependencies simply has no table here.
    for e in sorted(wanted_extras):
        out += root.optional_dependencies.get(e, [])
    only_members = bool(selection.packages) and not selection.all_packages
    for g in sorted(selection.groups) if not only_members else ():
        out += root.dependency_groups.get(g, [])
    members = sorted(lock.members) if selection.all_packages else sorted(selection.packages)
    for name in members:  # a member's edge: the member itself (editable), then its dependencies
        found = [p for p in lock.by_name(name) if not p.is_root]
        if name == canonical_name(root.name) and not selection.all_packages:
            raise LockError(f"{name} is the workspace's root, not one of its members",
                            hint="leave out --package for the root's own selection (or use --all-packages)")
        if name not in lock.members or len(found) != 1:
            have = ", ".join(sorted(lock.members)) or "none"
            raise LockError(f"pypm.lock: {name} is not a member of the workspace (its members: {have})",
                            hint="name a member in --package, or run `pypm lock` after changing the members")
        out.append(Dependency(name=found[0].name, version=found[0].version))
        for g in sorted(selection.groups):  # the member's own dependency groups
            out += found[0].dependency_groups.get(g, [])
    return out


def select_packages(lock: Lock, selection: Selection, env: Mapping[str, str] | None = None
                    ) -> list[LockedPackage]:
    """The packages to install, root excluded, sorted by name; raises LockError on a dangling edge."""
    roots = entry_dependencies(lock, selection)
    index = {p.key: p for p in lock.packages}

    seen: dict[tuple[str, str], LockedPackage] = {}
    # (package key, extras requested of it) pairs already expanded, so a package reached
    # again with a new extra still gets that extra's edges followed.
    expanded: set[tuple[tuple[str, str], str]] = set()
    stack: list[Dependency] = [d for d in roots if _edge_applies(d, env)]
    while stack:
        dep = stack.pop()
        key = (canonical_name(dep.name), dep.version)
        pkg = index.get(key)
        if pkg is None:
            raise LockError(f"pypm.lock names {dep.name}=={dep.version} as a dependency but has no such package",
                            hint="re-create it with `pypm lock`")
        seen[key] = pkg
        for extra in ("",) + tuple(dep.extras):
            if (key, extra) in expanded:
                continue
            expanded.add((key, extra))
            edges = pkg.dependencies if extra == "" else pkg.optional_dependencies.get(canonical_name(extra), [])
            stack.extend(d for d in edges if _edge_applies(d, env))
    root = lock.root()
    assert root is not None  # entry_dependencies raised LockError above when the lock has no root
    seen.pop(root.key, None)
    return sorted(seen.values(), key=lambda p: (canonical_name(p.name), p.version))
