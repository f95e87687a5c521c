"""Fork merging: the pinned sets the resolver found, one per marker region, joined into one graph
whose nodes and edges carry the markers under which they apply (what pypm.lock records)."""

from __future__ import annotations

from typing import Any

from .markers import Bits
from .resolver import PYTHON, Cand, Edge, Node, Req, Resolution, RootSpec, _Branch, _root_reqs, _State

__all__ = ["merge_branches"]

def merge_branches(state: _State, root: RootSpec, done: list[_Branch]) -> Resolution:
    """One graph out of the branches: nodes, edges with markers, and each package's marker."""
    u = state.u
    # Branches with the same pins are one branch (their regions are joined).
    grouped: dict[tuple[tuple[str, str], ...], list[int]] = {}
    for i, (_, _, mapping, _) in enumerate(done):
        sig = tuple(sorted((k, str(c.version)) for k, c in mapping.items() if k != PYTHON))
        grouped.setdefault(sig, []).append(i)
    merged = []
    for sig, idx in sorted(grouped.items(), key=lambda kv: kv[1][0]):
        bits = 0
        for i in idx:
            bits |= done[i][0]
        first = done[idx[0]]
        merged.append((bits, first[1], first[2], first[3]))

    # (parent, section, dep name, dep version, dep extras) -> _EdgeAcc
    edges: dict[tuple[Any, str, str, str, tuple[str, ...]], _EdgeAcc] = {}
    nodes: dict[tuple[str, str], Node] = {}

    def add_edge(parent: Any, section: str, r: Req, target: Cand) -> None:
        key = (parent, section, r.name, str(target.version), r.extras)
        acc = edges.get(key)
        if acc is None:
            acc = edges[key] = _EdgeAcc(r.marker, r.exact)
        acc.bits |= r.bits
        acc.req_bits |= r.full_bits

    for bbits, p, mapping, _ in merged:
        p.branch = bbits  # requirements below are cut to the (joined) region of this branch
        _, per = _root_reqs(p, root)
        for entry, reqs in per.items():
            for r in reqs:
                add_edge(("root", entry), "", r, mapping[r.name])
        for ident, c in sorted(mapping.items()):
            if ident == PYTHON or c.extra:
                continue
            nk = (c.name, str(c.version))
            meta = state.metadata(c)
            if nk not in nodes:
                nodes[nk] = Node(name=c.name, version=str(c.version), files=list(c.files),
                                 requires_python=meta.requires_python)
            extras_here = sorted(x.extra for x in mapping.values() if x.name == c.name and x.extra)
            for section in [""] + extras_here:
                for r in p.make_reqs(meta.requires_dist, section, c, str(c)):
                    # An edge whose target was not resolved for it lies outside the scope the
                    # package was needed in: it never applies, so it is left out.
                    t = mapping.get(r.name)
                    if t is not None and r.specifier.contains(t.version, prereleases=True):
                        add_edge(nk, section, r, t)

    # Reachability per entry point: bits of (node, extra) states, to a fixpoint.
    out_edges: dict[Any, list[tuple[tuple[str, str], tuple[str, ...], Bits]]] = {}
    for (parent, section, name, version, extras), acc in edges.items():
        out_edges.setdefault((parent, section), []).append(((name, version), extras, acc.bits))
    entries = sorted({k[0][1] for k in out_edges if k[0][0] == "root"})
    reach_total: dict[tuple[str, str], Bits] = {}
    for entry in entries:
        reach: dict[tuple[Any, str], Bits] = {}
        work: list[tuple[Any, str]] = []

        def feed(target: tuple[str, str], extras: tuple[str, ...], bits: Bits) -> None:
            for ex in ("",) + extras:
                st = (target, ex)
                old = reach.get(st, 0)
                if bits & ~old:
                    reach[st] = old | bits
                    work.append(st)

        for target, extras, bits in out_edges.get((("root", entry), ""), []):
            feed(target, extras, bits)
        while work:
            st = work.pop()
            st_bits = reach[st]
            for target, extras, bits in out_edges.get(st, []):
                if st_bits & bits:
                    feed(target, extras, st_bits & bits)
        for (nk, ex), bits in reach.items():
            if ex or not bits:
                continue
            reach_total[nk] = reach_total.get(nk, 0) | bits
            node = nodes[nk]
            if entry == "":
                node.main = True
            elif entry.startswith("extra:"):
                node.extras.add(entry[6:])
            else:
                node.groups.add(entry[6:])

    kept = {nk for nk, b in reach_total.items() if b}
    for nk in list(nodes):
        if nk not in kept:
            del nodes[nk]
        else:
            nodes[nk].marker = u.to_marker(reach_total[nk])

    def edge_marker(acc: _EdgeAcc, parent_bits: Bits) -> str | None:
        if (acc.req_bits & parent_bits) == (acc.bits & parent_bits):
            # No fork cut this edge: its own marker says it best (kept verbatim when inexact).
            if not acc.exact:
                return acc.text
            return u.to_marker(acc.req_bits)
        m = u.to_marker(acc.bits)
        return f"({acc.text}) and ({m})" if not acc.exact and acc.text and m else m

    root_deps: list[Edge] = []
    root_opt: dict[str, list[Edge]] = {}
    root_groups: dict[str, list[Edge]] = {}
    for (parent, section, name, version, extras), acc in sorted(edges.items(), key=lambda kv: repr(kv[0])):
        if (name, version) not in kept or not acc.bits:
            continue
        if parent[0] == "root":
            e = Edge(name, version, edge_marker(acc, u.full), extras)
            entry = parent[1]
            if entry == "":
                root_deps.append(e)
            elif entry.startswith("extra:"):
                root_opt.setdefault(entry[6:], []).append(e)
            else:
                root_groups.setdefault(entry[6:], []).append(e)
            continue
        if parent not in kept:
            continue
        e = Edge(name, version, edge_marker(acc, reach_total[parent]), extras)
        node = nodes[parent]
        if section:
            node.optional_dependencies.setdefault(section, []).append(e)
        else:
            node.dependencies.append(e)
    forks = [m for m in (u.to_marker(b) for b, *_ in merged) if m] if len(merged) > 1 else []
    return Resolution(root_deps, root_opt, root_groups, nodes, sorted(forks))


class _EdgeAcc:
    __slots__ = ("text", "exact", "bits", "req_bits")

    def __init__(self, text: str | None, exact: bool) -> None:
        self.text = text
        self.exact = exact
        self.bits: Bits = 0  # where the edge applies, over every branch that has it
        self.req_bits: Bits = 0  # where its marker holds
