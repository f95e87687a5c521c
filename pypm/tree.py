"""`pypm tree`: the locked dependency graph drawn as a tree, as `uv tree` draws it.

Read from pypm.lock (re-locked first when stale, as `pypm sync` would; `--frozen` uses it as it
is). The lock is universal, so the tree is too: an edge that holds only under a marker shows it
(`tomli v2.2.1 ; python_version < "3.11"`), an edge from an extra or a group says which
(`(extra: socks)`, `(group: dev)`). A package already drawn with its dependencies is drawn again
as `(*)` without them; `--no-dedupe` draws every subtree in full (a cycle still stops, at `(cycle)`).
In a workspace, the members the root does not reach are drawn after it, each as a tree of its
own. `render_tree` is pure: a Lock in, lines out.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterable

from .errors import ExitCode, UsageError
from .lockfile import Dependency, Lock, LockedPackage, canonical_name

if TYPE_CHECKING:  # pragma: no cover
    import argparse

    from .project import Project

__all__ = ["render_tree", "tree_command"]


@dataclass(frozen=True)
class _Edge:
    """One line of the tree: `pkg` reached through a dependency, with what to say about it."""

    pkg: LockedPackage
    extras: tuple[str, ...] = ()  # the extras of `pkg` this edge turns on
    marker: str | None = None
    via: str = ""  # "extra: X" / "group: G" / "" (a plain dependency)

    def label(self) -> str:
        text = canonical_name(self.pkg.name)
        if self.extras:
            text += f"[{','.join(sorted(self.extras))}]"
        text += f" v{self.pkg.version}"
        if self.via:
            text += f" ({self.via})"
        if self.marker:
            text += f" ; {self.marker}"
        return text


class _Graph:
    def __init__(self, lock: Lock) -> None:
        self.lock = lock
        self._by_key = {p.key: p for p in lock.packages}

    def target(self, dep: Dependency) -> LockedPackage | None:
        return self._by_key.get((canonical_name(dep.name), dep.version))

    def edges(self, pkg: LockedPackage, extras: Iterable[str] = (), *, no_dev: bool = False) -> list[_Edge]:
        """What `pkg` depends on (with `extras` of it on): for the project itself, its extras and
        groups too, each edge saying which."""
        out: list[_Edge] = []

        def add(deps: Iterable[Dependency], via: str) -> None:
            for d in deps:
                t = self.target(d)
                if t is not None:  # a lock that names a missing package fails to load; kept for safety
                    out.append(_Edge(t, tuple(d.extras), d.marker, via))

        add(pkg.dependencies, "")
        wanted = set(pkg.optional_dependencies) if pkg.is_root else set(extras)
        for extra in sorted(wanted):
            add(pkg.optional_dependencies.get(extra, ()), f"extra: {extra}")
        if pkg.is_root or pkg.dependency_groups:  # (a workspace member's own groups too)
            for group in sorted(pkg.dependency_groups):
                if not (no_dev and group == "dev"):
                    add(pkg.dependency_groups[group], f"group: {group}")
        return sorted(out, key=lambda e: (e.via != "", e.via, canonical_name(e.pkg.name), e.pkg.version))

    def dependents(self, no_dev: bool) -> dict[tuple[str, str], list[_Edge]]:
        """For `--invert`: each package's key -> the edges from the packages that need it (an edge
        from P to C is drawn under C as P, with the edge's marker and origin: `P (extra: X)` is P's
        extra X needing C. The extras of C it turns on are C's, not P's: not shown)."""
        rev: dict[tuple[str, str], list[_Edge]] = {}
        for p in self.lock.packages:
            seen_extras = set(p.optional_dependencies) if not p.is_root else set()
            for e in self.edges(p, seen_extras, no_dev=no_dev):
                rev.setdefault(e.pkg.key, []).append(_Edge(p, (), e.marker, e.via))
        for edges in rev.values():
            edges.sort(key=lambda e: (canonical_name(e.pkg.name), e.pkg.version))
        return rev


def render_tree(lock: Lock, *, depth: int | None = None, invert: bool = False, packages: Iterable[str] = (),
                no_dev: bool = False, dedupe: bool = True) -> list[str]:
    """The tree's lines (see the module's docstring). `packages`: start from these instead of the
    project (with `invert`: from these instead of every package nothing else in the lock needs...
    i.e. every leaf)."""
    graph = _Graph(lock)
    names = [canonical_name(n) for n in packages]
    if names:
        missing = [n for n in names if not lock.by_name(n)]
        if missing:
            raise UsageError(f"--package {', '.join(missing)}: not in pypm.lock",
                             hint="name a package the lock holds (`pypm tree` shows them all)")
        roots = [_Edge(p) for n in names for p in sorted(lock.by_name(n), key=lambda p: p.version)]
    elif invert:
        # The leaves: every package that depends on nothing, each drawn with what needs it
        roots = [_Edge(p) for p in sorted(lock.packages, key=lambda p: (canonical_name(p.name), p.version))
                 if not p.is_root and not graph.edges(p, p.optional_dependencies)]
    else:
        root = lock.root()
        if root is None:
            return []
        roots = [_Edge(root)]
        # A workspace's members that nothing of the root's reaches: drawn as trees of their own
        reached: set[tuple[str, str]] = set()
        todo = [root]
        while todo:
            p = todo.pop()
            if p.key not in reached:
                reached.add(p.key)
                todo += [e.pkg for e in graph.edges(p, p.optional_dependencies, no_dev=no_dev)]
        roots += [_Edge(p) for m in sorted(lock.members) for p in lock.by_name(m)
                  if not p.is_root and p.key not in reached]

    rev = graph.dependents(no_dev) if invert else {}

    def children(e: _Edge) -> list[_Edge]:
        if invert:
            return rev.get(e.pkg.key, [])
        return graph.edges(e.pkg, e.extras, no_dev=no_dev)

    lines: list[str] = []
    drawn: set[tuple[str, str, tuple[str, ...]]] = set()

    def draw(e: _Edge, prefix: str, tail: str, level: int, path: frozenset[tuple[str, str]]) -> None:
        kids = children(e)
        key = (*e.pkg.key, tuple(sorted(e.extras)))
        if e.pkg.key in path:
            lines.append(prefix + tail + e.label() + " (cycle)")
            return
        if dedupe and kids and key in drawn:
            lines.append(prefix + tail + e.label() + " (*)")
            return
        lines.append(prefix + tail + e.label())
        drawn.add(key)
        if depth is not None and level >= depth:
            return
        inner = prefix + ("" if not tail else ("    " if tail == "└── " else "│   "))
        for i, k in enumerate(kids):
            draw(k, inner, "└── " if i == len(kids) - 1 else "├── ", level + 1, path | {e.pkg.key})

    for r in roots:
        draw(r, "", "", 0, frozenset())
    return lines


def tree_command(ctx: Any, project: Project, args: argparse.Namespace) -> int:
    from .locking import ensure_lock

    if args.depth is not None and args.depth < 0:
        raise UsageError(f"--depth {args.depth}: give 0 or more", hint="--depth 1 shows the direct dependencies only")
    lock = ensure_lock(ctx, project, locked=args.locked, frozen=args.frozen, offline=args.offline)
    lines = render_tree(lock, depth=args.depth, invert=args.invert, packages=args.package, no_dev=args.no_dev,
                        dedupe=not args.no_dedupe)
    sys.stdout.write("".join(line + "\n" for line in lines))
    return ExitCode.OK
