"""Marker algebra for universal resolution: a PEP 508 marker as the set of environments it holds on.

Pure. A `Universe` is a finite grid of target environments (CPython/PyPy 3.0-3.19 with patch
levels 0-29, limited to the project's requires-python; Linux, macOS and Windows on two
machines each). A marker is compiled to the set of grid points where it is true, kept as
an int bitset, so satisfiability (`!= 0`), disjointness (`a & b == 0`), `and`, `or` and
`not` are exact and cheap, and `to_marker` writes a short marker back for the lock.
See docs/resolution.md for the approach and its limits.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any, Iterable

__all__ = ["Universe", "Bits", "MarkerInfo", "strip_extra"]

Bits = int  # one bit per environment point; see Universe.point_index

# (sys_platform, platform_system, os_name, platform_machine)
PLATFORMS: tuple[tuple[str, str, str, str], ...] = (
    ("linux", "Linux", "posix", "x86_64"),
    ("linux", "Linux", "posix", "aarch64"),
    ("darwin", "Darwin", "posix", "x86_64"),
    ("darwin", "Darwin", "posix", "arm64"),
    ("win32", "Windows", "nt", "AMD64"),
    ("win32", "Windows", "nt", "ARM64"),
)
# (implementation_name, platform_python_implementation)
IMPLS: tuple[tuple[str, str], ...] = (("cpython", "CPython"), ("pypy", "PyPy"))
MINORS = range(0, 20)  # Python 3.0 ... 3.19
PATCHES = range(0, 30)  # 3.x.0 ... 3.x.29
N_ENV = len(PLATFORMS) * len(IMPLS)
ENV_MASK = (1 << N_ENV) - 1
PY_POINTS: tuple[tuple[int, int], ...] = tuple((m, p) for m in MINORS for p in PATCHES)

_PY_VARS = {"python_version", "python_full_version"}
_ENV_VARS = {"sys_platform", "platform_system", "os_name", "platform_machine",
             "implementation_name", "platform_python_implementation"}


class MarkerInfo:
    """A compiled marker: its bitset and whether it was exact (no variable outside the universe)."""

    __slots__ = ("bits", "exact")

    def __init__(self, bits: Bits, exact: bool) -> None:
        self.bits = bits
        self.exact = exact


def _atom_str(atom: tuple[Any, Any, Any]) -> str:
    return " ".join(n.serialize() for n in atom)


def _atom_var(atom: tuple[Any, Any, Any]) -> str:
    from packaging._parser import Variable  # packaging's parsed marker nodes (see _parsed)

    lhs, _, rhs = atom
    return lhs.value if isinstance(lhs, Variable) else rhs.value


@lru_cache(maxsize=4096)
def _parsed(marker: str) -> list[Any]:
    # packaging exposes no public walk over a marker's structure; `_markers` (nested lists
    # of (lhs, op, rhs) tuples and "and"/"or" strings) has been stable since packaging 22.
    from packaging.markers import Marker

    return Marker(marker)._markers


def strip_extra(marker: str | None) -> str | None:
    """The marker with every `extra == ...` comparison taken as true (None when nothing is left)."""
    if not marker:
        return None
    tree = _parsed(marker)

    def walk(items: list[Any]) -> list[Any] | None:
        groups: list[list[Any]] = [[]]
        for item in items:
            if item == "or":
                groups.append([])
            elif item == "and":
                continue
            elif isinstance(item, list):
                sub = walk(item)
                if sub is None:
                    groups[-1].append(None)  # true
                else:
                    groups[-1].append(sub)
            elif _atom_var(item) == "extra":
                groups[-1].append(None)
            else:
                groups[-1].append(item)
        out: list[Any] = []
        for g in groups:
            parts = [x for x in g if x is not None]
            if not parts:
                return None  # one OR branch is always true -> the whole thing is
            term: list[Any] = []
            for x in parts:
                if term:
                    term.append("and")
                term.append(x)
            if out:
                out.append("or")
            out.append(term if len(term) > 1 else term[0])
        return out

    res = walk(tree)
    if res is None:
        return None
    from packaging.markers import Marker

    m = Marker("python_version >= '0'")
    m._markers = res if isinstance(res, list) else [res]
    return str(m)


class Universe:
    """The finite set of environments a universal lock serves, restricted to requires-python."""

    def __init__(self, requires_python: str = "") -> None:
        self.requires_python = requires_python
        self._atom_cache: dict[tuple[str, str | None], tuple[Bits, bool]] = {}
        self._compile_cache: dict[tuple[str, str | None], MarkerInfo] = {}
        self._py_masks = [ENV_MASK << (i * N_ENV) for i in range(len(PY_POINTS))]
        self.allowed_py = [i for i, (m, p) in enumerate(PY_POINTS) if self._py_ok(requires_python, m, p)]
        self.full: Bits = 0
        for i in self.allowed_py:
            self.full |= self._py_masks[i]
        # One bit at the start of every allowed Python's row: row * column puts a 12-bit env
        # row on every allowed Python at once (no carries, rows do not overlap).
        self._column: int = 0
        for i in self.allowed_py:
            self._column |= 1 << (i * N_ENV)
        self._wheel_cache: dict[str, Bits] = {}
        self._tag_cache: dict[tuple[str, str, str], Bits] = {}

    @staticmethod
    def _py_ok(spec: str, minor: int, patch: int) -> bool:
        if not spec:
            return True
        from packaging.specifiers import SpecifierSet

        return SpecifierSet(spec).contains(f"3.{minor}.{patch}", prereleases=True)

    # ------------------------------------------------------------------ building sets
    def py_bits(self, indices: Iterable[int]) -> Bits:
        b = 0
        for i in indices:
            b |= self._py_masks[i]
        return b & self.full

    def env_bits(self, envs: Iterable[int]) -> Bits:
        """All allowed Pythons on the given env indices (platform * 2 + impl)."""
        row = 0
        for e in envs:
            row |= 1 << e
        return row * self._column

    def python_bits(self, spec: str | None) -> Bits:
        """Where a requires-python specifier holds (every platform)."""
        if not spec:
            return self.full
        return self._python_bits(spec.strip())

    @lru_cache(maxsize=None)  # requires-python strings are few (hundreds), lookups many
    def _python_bits(self, spec: str) -> Bits:
        from packaging.specifiers import InvalidSpecifier, SpecifierSet

        try:
            ss = SpecifierSet(spec)
        except InvalidSpecifier:
            return self.full  # an unparsable requires-python is ignored, as pip does
        # The set holds where every one of its clauses holds (the points are final releases, so
        # no pre-release rule applies); clauses repeat across specifiers (">=3.8", "!=3.0.*"),
        # so each is evaluated once: was ~0.35 s of a 60-package lock.
        bits = self.full
        for clause in ss:
            bits &= self._clause_bits(str(clause))
        return bits

    @lru_cache(maxsize=None)
    def _clause_bits(self, clause: str) -> Bits:
        from packaging.specifiers import Specifier

        points = [_py_point_version(i) for i in self.allowed_py]
        keep = set(Specifier(clause).filter(points, prereleases=True))
        return self.py_bits(i for i, v in zip(self.allowed_py, points) if v in keep)

    def admits(self, spec: str | None, bits: Bits) -> bool:
        """Does requires-python `spec` hold on every Python present in `bits`?"""
        return not (bits & ~self.python_bits(spec))

    # ------------------------------------------------------------------ markers
    def compile(self, marker: str | None, extra: str | None = None) -> MarkerInfo:
        """The set where `marker` holds; `extra` is the value of the `extra` variable ("" = none)."""
        if not marker:
            return MarkerInfo(self.full, True)
        key = (marker, extra)
        hit = self._compile_cache.get(key)
        if hit is None:
            exact = [True]
            bits = self._eval(_parsed(marker), extra or "", exact)
            hit = self._compile_cache[key] = MarkerInfo(bits & self.full, exact[0])
        return hit

    def bits(self, marker: str | None, extra: str | None = None) -> Bits:
        return self.compile(marker, extra).bits

    def _eval(self, items: list[Any], extra: str, exact: list[bool]) -> Bits:
        result = 0
        term = self.full
        for item in items:
            if item == "or":
                result |= term
                term = self.full
            elif item == "and":
                continue
            elif isinstance(item, list):
                term &= self._eval(item, extra, exact)
            else:
                b, ex = self._atom(item, extra)
                if not ex:
                    exact[0] = False
                term &= b
        return result | term

    def _atom(self, atom: tuple[Any, Any, Any], extra: str) -> tuple[Bits, bool]:
        var = _atom_var(atom)
        text = _atom_str(atom)
        key = (text, extra if var == "extra" else None)
        hit = self._atom_cache.get(key)
        if hit is not None:
            return hit
        from packaging.markers import Marker

        m = Marker(text)
        if var == "extra":
            hit = (self.full if m.evaluate({"extra": extra}) else 0, True)
        elif var in _PY_VARS:
            idx = []
            for i in self.allowed_py:
                minor, patch = PY_POINTS[i]
                env = {"python_version": f"3.{minor}", "python_full_version": f"3.{minor}.{patch}"}
                if m.evaluate(env):
                    idx.append(i)
            hit = (self.py_bits(idx), True)
        elif var in _ENV_VARS:
            envs = []
            for pi, (sp, ps, osn, mach) in enumerate(PLATFORMS):
                for ii, (impl, pimpl) in enumerate(IMPLS):
                    env = {"sys_platform": sp, "platform_system": ps, "os_name": osn, "platform_machine": mach,
                           "implementation_name": impl, "platform_python_implementation": pimpl}
                    if m.evaluate(env):
                        envs.append(pi * len(IMPLS) + ii)
            hit = (self.env_bits(envs), True)
        else:
            # platform_release, platform_version, implementation_version, ...: outside the
            # universe. Taken as true (the dependency is kept); the caller keeps the text.
            hit = (self.full, False)
        self._atom_cache[key] = hit
        return hit

    # ------------------------------------------------------------------ wheels
    def wheel_bits(self, filename: str) -> Bits:
        """Where a wheel could be installed, from its compatibility tags (memoised: a hot path)."""
        # Hand-written instead of packaging's parse_wheel_filename: a big project page lists
        # tens of thousands of wheels and that parser (name, version, tag objects) was a fifth
        # of a cold lock's CPU. Only the three tag fields matter here; a file whose name or
        # version is invalid is dropped by the resolver when it parses the version. Memoised by
        # the tag triple, not the filename: a few hundred distinct triples instead of ~50k
        # (large) ints kept, ~14 MB on a 60-package lock.
        if not filename.endswith(".whl"):
            return 0
        parts = filename[:-4].split("-")
        if len(parts) not in (5, 6):
            return 0
        key = "-".join(parts[-3:]).lower()
        hit = self._wheel_cache.get(key)
        if hit is None:
            hit = self._wheel_cache[key] = self._triple_bits(*key.split("-"))
        return hit

    def _triple_bits(self, interps: str, abis: str, plats: str) -> Bits:
        out = 0
        for interp in interps.split("."):
            for abi in abis.split("."):
                for plat in plats.split("."):
                    key = (interp, abi, plat)
                    b = self._tag_cache.get(key)
                    if b is None:
                        b = self._tag_cache[key] = self._tag_bits(*key)
                    out |= b
        return out

    def _tag_bits(self, interpreter: str, abi: str, platform: str) -> Bits:
        pys, impls = _interpreter_points(interpreter, abi)
        plats = _platform_points(platform)
        if not pys or not impls or not plats:
            return 0
        envs = [p * len(IMPLS) + i for p in plats for i in impls]
        return self.env_bits(envs) & self.py_bits(i for i in self.allowed_py if PY_POINTS[i][0] in pys)

    def host_bits(self) -> tuple[Bits, Bits]:
        """The running interpreter's point of the grid (one bit) and its platform's row (that
        platform and implementation on every allowed Python); 0 where it is off the grid.

        A hint, not a target: the lock serves the whole universe. The resolver reads a release's
        metadata from one of its wheels and prefers the one this machine would install (see
        `_State.metadata_file`)."""
        import os
        import sys

        minor, patch = sys.version_info[1], min(sys.version_info[2], PATCHES[-1])
        machine = os.uname().machine
        impls = [i for i, _ in IMPLS]
        if sys.version_info[0] != 3 or sys.implementation.name not in impls:
            return 0, 0
        for pi, (sp, _ps, _osn, mach) in enumerate(PLATFORMS):
            if sys.platform == sp and machine == mach:
                env = pi * len(IMPLS) + impls.index(sys.implementation.name)
                point = 1 << (PY_POINTS.index((minor, patch)) * N_ENV + env) if minor in MINORS else 0
                return point & self.full, self.env_bits([env])
        return 0, 0

    # ------------------------------------------------------------------ writing back
    def to_marker(self, bits: Bits) -> str | None:
        """A short PEP 508 marker true exactly on `bits` (within the universe); None when always true."""
        bits &= self.full
        if bits == self.full:
            return None
        if bits == 0:
            return 'python_version < "0"'  # never true; callers normally drop such edges
        return _to_marker(self, bits)

    def env_pysets(self, bits: Bits) -> list[frozenset[int]]:
        """For each env index, the set of allowed Python point indices present in `bits`."""
        out: list[set[int]] = [set() for _ in range(N_ENV)]
        for i in self.allowed_py:
            row = (bits >> (i * N_ENV)) & ENV_MASK
            if row:
                for e in range(N_ENV):
                    if row >> e & 1:
                        out[e].add(i)
        return [frozenset(s) for s in out]

    def describe_python(self, bits: Bits) -> str:
        """The Python range present in `bits`, for messages ("3.9 - 3.12")."""
        minors = sorted({PY_POINTS[i][0] for i in self.allowed_py if (bits >> (i * N_ENV)) & ENV_MASK})
        if not minors:
            return "no Python"
        if len(minors) == 1:
            return f"3.{minors[0]}"
        if minors[-1] == MINORS[-1]:
            return f"3.{minors[0]} and newer"
        return f"3.{minors[0]} - 3.{minors[-1]}"


# ---------------------------------------------------------------------- tags

_PYTAG = re.compile(r"^(py|cp|pp)(\d)(\d*)$")


@lru_cache(maxsize=None)
def _py_point_version(i: int) -> Any:
    """PY_POINTS[i] as a packaging Version, parsed once (SpecifierSet.contains on a str parses it
    again on every call)."""
    from packaging.version import Version

    return Version("3.%d.%d" % PY_POINTS[i])


def _interpreter_points(interp: str, abi: str) -> tuple[set[int], list[int]]:
    """(minor versions, impl indices) a wheel's interpreter/abi tag admits (pip's compatible tags)."""
    m = _PYTAG.match(interp)
    if not m or m.group(2) != "3":
        return set(), []
    kind, minor_s = m.group(1), m.group(3)
    minor = int(minor_s) if minor_s else None
    if kind == "py":
        # pyXY wheels are offered to every Python >= X.Y (pip lists py3Y down to py30).
        return ({x for x in MINORS if minor is None or x >= minor}, [0, 1])
    if kind == "cp":
        if minor is None:
            return set(), []
        if abi == "abi3":
            return ({x for x in MINORS if x >= minor}, [0])
        return ({minor}, [0])
    # pp: PyPy
    return ({x for x in MINORS if minor is None or x == minor}, [1])


def _platform_points(plat: str) -> list[int]:
    if plat == "any":
        return list(range(len(PLATFORMS)))
    if "linux" in plat:
        if plat.endswith("_x86_64"):
            return [0]
        if plat.endswith("_aarch64"):
            return [1]
        return []
    if plat.startswith("macosx_"):
        if plat.endswith(("_x86_64", "_intel")):
            return [2]
        if plat.endswith("_arm64"):
            return [3]
        if plat.endswith(("_universal2", "_universal")):
            return [2, 3]
        return []
    if plat == "win_amd64":
        return [4]
    if plat == "win_arm64":
        return [5]
    return []


# ---------------------------------------------------------------------- marker writer

def _py_point_str(i: int) -> tuple[str, str]:
    minor, patch = PY_POINTS[i]
    if patch == 0:
        return "python_version", f"3.{minor}"
    return "python_full_version", f"3.{minor}.{patch}"


def _python_expr(u: Universe, s: frozenset[int]) -> str | None:
    """An expression over python_version for the point set `s`; points outside requires-python are free."""
    allowed = set(u.allowed_py)
    if s >= allowed:
        return None
    n = len(PY_POINTS)
    runs: list[tuple[int | None, int | None]] = []  # (lower incl, upper excl) point indices
    i = 0
    prev_no: int | None = None  # the last point that must be false
    while i < n:
        if i in s:
            lo = None if prev_no is None else prev_no + 1
            j = i
            while j < n and not (j in allowed and j not in s):
                j += 1
            runs.append((lo, j if j < n else None))
            prev_no = j
            i = j + 1
        else:
            if i in allowed:
                prev_no = i
            i += 1
    parts = [_run_expr(lo, hi) for lo, hi in runs]
    if len(runs) == 2 and runs[0][0] is None and runs[1][1] is None:
        hole_lo, hole_hi = runs[0][1], runs[1][0]
        if hole_lo is not None and hole_hi is not None:
            a, b = PY_POINTS[hole_lo], PY_POINTS[hole_hi]
            if a[1] == 0 and b == (a[0] + 1, 0):
                return f'python_version != "3.{a[0]}"'
    return " or ".join(parts)


def _run_expr(lo: int | None, hi: int | None) -> str:
    if lo is not None and hi is not None:
        a, b = PY_POINTS[lo], PY_POINTS[hi]
        if a[1] == 0 and b == (a[0] + 1, 0):
            return f'python_version == "3.{a[0]}"'
    out = []
    if lo is not None:
        var, v = _py_point_str(lo)
        out.append(f'{var} >= "{v}"')
    if hi is not None:
        var, v = _py_point_str(hi)
        out.append(f'{var} < "{v}"')
    return " and ".join(out) if out else 'python_version >= "3"'


def _platform_expr(plats: frozenset[int]) -> str | None:
    if len(plats) == len(PLATFORMS):
        return None
    by_os: dict[str, list[int]] = {}
    for pi, p in enumerate(PLATFORMS):
        by_os.setdefault(p[0], []).append(pi)
    full_os = [o for o, ps in by_os.items() if all(p in plats for p in ps)]
    partial = [(o, [p for p in ps if p in plats]) for o, ps in by_os.items()
               if o not in full_os and any(p in plats for p in ps)]
    if not partial and len(full_os) == len(by_os) - 1:
        missing = next(o for o in by_os if o not in full_os)
        return f'sys_platform != "{missing}"'
    terms = [f'sys_platform == "{o}"' for o in full_os]
    for o, ps in partial:
        for pi in ps:
            terms.append(f'sys_platform == "{o}" and platform_machine == "{PLATFORMS[pi][3]}"')
    return " or ".join(terms)


def _env_expr(envs: frozenset[int]) -> str | None:
    if len(envs) == N_ENV:
        return None
    n_impl = len(IMPLS)
    by_impl = [frozenset(e // n_impl for e in envs if e % n_impl == ii) for ii in range(n_impl)]
    if by_impl[0] == by_impl[1]:
        return _platform_expr(by_impl[0])
    terms = []
    for ii, plats in enumerate(by_impl):
        if not plats:
            continue
        impl = f'implementation_name == "{IMPLS[ii][0]}"'
        pe = _platform_expr(plats)
        terms.append(_and([impl, pe]))
    return " or ".join(terms)


def _paren(e: str) -> str:
    return f"({e})" if " or " in e else e


def _and(parts: list[str | None]) -> str:
    ps = [p for p in parts if p]
    if len(ps) == 1:
        return ps[0]
    return " and ".join(_paren(p) for p in ps)


def _to_marker(u: Universe, bits: Bits) -> str:
    sets = u.env_pysets(bits)
    distinct = sorted({s for s in sets if s}, key=lambda s: (-len(s), sorted(s)))
    terms: list[tuple[Bits, str]] = []
    for s in distinct:
        # Every env whose Python set contains `s` can share this term: the union stays exact.
        envs = frozenset(e for e in range(N_ENV) if sets[e] >= s)
        tb = u.env_bits(envs) & u.py_bits(s)
        terms.append((tb, _and([_python_expr(u, s), _env_expr(envs)])))
    # Drop terms the others already cover, largest first.
    terms.sort(key=lambda t: (-bin(t[0]).count("1"), t[1]))
    kept: list[tuple[Bits, str]] = []
    for i, (tb, text) in enumerate(terms):
        rest = 0
        for ob, _ in kept + terms[i + 1:]:
            rest |= ob
        if tb & ~rest:
            kept.append((tb, text))
    # Each term is an AND of parenthesised parts (or a bare OR), so plain " or " keeps the meaning.
    return " or ".join(sorted(t for _, t in kept))
