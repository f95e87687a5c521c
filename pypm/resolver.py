"""Universal resolution: a resolvelib provider over packaging, forking on marker branches.

Pure core: every file and metadata lookup goes through a `Finder` (the index client, or an
in-memory one in tests). `resolve()` returns a `Resolution` (a merged graph with markers);
`pypm.locking` turns it into a Lock. See docs/resolution.md for the approach and its limits.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Mapping, Protocol, Sequence

from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version
from resolvelib import AbstractProvider, BaseReporter, Resolver
from resolvelib.resolvers import ResolutionImpossible, ResolutionTooDeep

from .errors import BuildError, PypmError, ResolutionError
from .markers import Bits, Universe, strip_extra
from .simpleapi import Releases

__all__ = ["Finder", "ResolveOptions", "RootSpec", "Edge", "Node", "Resolution", "resolve", "PYTHON"]

PYTHON = "#python"  # the virtual identifier whose requirements are Requires-Python checks
PRERELEASE_DEFAULT = "if-necessary-or-explicit"


class Finder(Protocol):
    """What the resolver needs of an index (pypm.index.IndexClient fits)."""

    def project_files(self, name: str) -> list[Any]: ...  # list[DistFile]
    # Optional: def project_releases(self, name: str) -> Releases (files grouped by release, built
    # lazily); a finder without it has its project_files grouped by the resolver. With it and
    # def in_background(self, job: Callable[[], Any]) -> None, the resolver fetches ahead (_Lookahead).
    def metadata(self, f: Any) -> Any: ...  # CoreMetadata
    def prefetch(self, names: Iterable[str]) -> None: ...
    def prefetch_metadata(self, files: Iterable[Any]) -> None: ...


@dataclass(frozen=True)
class ResolveOptions:
    prerelease: str = PRERELEASE_DEFAULT
    exclude_newer: datetime | None = None
    no_build: bool = False
    no_binary: bool = False
    # canonical name -> versions to prefer (the old lock's pins); names to upgrade are left out
    preferences: Mapping[str, Sequence[str]] = field(default_factory=dict)
    initial_forks: Sequence[str] = ()  # markers of the old lock's forks, to keep them stable
    max_forks: int = 64
    max_rounds: int = 20000
    # An sdist whose PKG-INFO cannot be trusted (the finder raises SdistMetadataUnsupported): its
    # metadata from its build backend, in the sandbox (pypm.locking). None: the error stands.
    build_metadata: Callable[[Any], Any] | None = None


@dataclass(frozen=True)
class RootSpec:
    """The graph's entry points: the project's own requirement lists."""

    name: str
    requires_python: str
    dependencies: Sequence[str] = ()
    optional_dependencies: Mapping[str, Sequence[str]] = field(default_factory=dict)
    dependency_groups: Mapping[str, Sequence[str]] = field(default_factory=dict)


@dataclass(frozen=True, order=True)
class Edge:
    name: str  # canonical
    version: str
    marker: str | None
    extras: tuple[str, ...] = ()


@dataclass
class Node:
    name: str  # canonical
    version: str
    files: list[Any]  # DistFile: every file of the release the lock may pin
    marker: str | None = None  # where it is needed at all (None: everywhere)
    main: bool = False
    extras: set[str] = field(default_factory=set)  # root extras that pull it in
    groups: set[str] = field(default_factory=set)
    dependencies: list[Edge] = field(default_factory=list)
    optional_dependencies: dict[str, list[Edge]] = field(default_factory=dict)
    requires_python: str | None = None


@dataclass
class Resolution:
    root_dependencies: list[Edge]
    root_optional: dict[str, list[Edge]]
    root_groups: dict[str, list[Edge]]
    nodes: dict[tuple[str, str], Node]
    forks: list[str]  # resolution markers, when the graph forked


# ---------------------------------------------------------------------- requirements & candidates

@dataclass(frozen=True)
class Req:
    ident: str  # "name", "name[extra]" or PYTHON
    name: str  # canonical
    extra: str  # "" or the extra this identifier stands for
    specifier: SpecifierSet
    bits: Bits  # where the requirement applies, within the branch
    text: str  # for messages
    full_bits: Bits = 0  # where its marker holds, whatever the branch
    extras: tuple[str, ...] = ()  # the extras the requirement asked for (edges keep them)
    marker: str | None = None  # the marker without `extra ==` parts
    exact: bool = True  # marker fully inside the universe

    def is_pin(self) -> bool:
        return any(s.operator in ("==", "===") and not s.version.endswith(".*") for s in self.specifier)


if TYPE_CHECKING:
    from typing import TypedDict

    class _ReqCommon(TypedDict):
        """The fields `_Provider.make_reqs` gives every Req of one requirement string."""

        name: str
        specifier: SpecifierSet
        bits: Bits
        full_bits: Bits
        marker: str | None
        exact: bool
        extras: tuple[str, ...]


@dataclass(frozen=True)
class Cand:
    name: str
    version: Version
    extra: str
    files: tuple[Any, ...] = field(compare=False, hash=False)
    # Where the requirements that chose it apply: its Requires-Python must hold on all of it.
    scope: Bits = field(default=0, compare=False, hash=False)

    @property
    def ident(self) -> str:
        return f"{self.name}[{self.extra}]" if self.extra else self.name

    def __str__(self) -> str:
        return f"{self.name} {self.version}"


class _ForkNeeded(Exception):
    def __init__(self, regions: list[Bits]) -> None:
        super().__init__("fork")
        self.regions = regions


_REQS: dict[str, Requirement] = {}  # text -> parsed; read-only once made (shared by branches and threads)


def _parse_req(text: str, where: str) -> Requirement:
    # Memoised: every branch, the merge and the look-ahead parse the same metadata's requirements.
    try:
        return _REQS[text]
    except KeyError:
        pass
    try:
        r = _REQS[text] = Requirement(text)
        return r
    except InvalidRequirement as e:
        raise ResolutionError(f"{where} has an invalid requirement {text!r}: {e}",
                              hint="fix or report that package's metadata") from None


def _parse_time(s: str | None) -> datetime | None:
    if not s:
        return None
    try:
        t = datetime.fromisoformat(s.replace("Z", "+00:00"))
    except ValueError:
        return None
    return t if t.tzinfo else t.replace(tzinfo=timezone.utc)


# ---------------------------------------------------------------------- the shared state

class _Project:
    """One project's releases as the resolver walks them: each version, newest first, and each
    release's kept files once looked at."""

    __slots__ = ("releases", "texts", "order", "kept")

    def __init__(self, releases: Releases) -> None:
        self.releases = releases
        self.texts = dict(releases.newest_first())
        self.order = list(self.texts)
        self.kept: dict[Version, tuple[Version, list[Any]] | None] = {}


class _State:
    """What all branches share: the finder, the universe, memoised metadata and file lists."""

    def __init__(self, finder: Finder, universe: Universe, opts: ResolveOptions) -> None:
        self.finder = finder
        self.u = universe
        self.opts = opts
        self._versions: dict[str, dict[Version, list[Any]]] = {}
        self.dropped: dict[str, dict[str, str]] = {}
        self._meta: dict[tuple[str, Version], Any] = {}
        self._usable: dict[tuple[str, Bits, frozenset[Version]], tuple[dict[Version, list[Any]], list[str]]] = {}
        self._file_bits: dict[int, tuple[Bits, Bits | None]] = {}  # id(file) -> (requires-python, tags)
        self._picks: dict[tuple[str, Version], tuple[Sequence[Any], Any]] = {}  # see _metadata_file_of
        self._host = universe.host_bits()  # the running interpreter's grid point and row (metadata_file)
        self._projects: dict[str, _Project] = {}
        spawn = getattr(finder, "in_background", None)
        releases_of = getattr(finder, "project_releases", None)  # optional in a Finder (see there)
        self.lookahead = (_Lookahead(self, spawn, releases_of)
                          if spawn is not None and releases_of is not None else None)
        # (name, version, scope, pinned) -> (the release's version, its files) or None: `usable` one release at a time
        self._release_usable: dict[tuple[str, Version, Bits, bool], tuple[Version, list[Any]] | None] = {}

    # The resolver looks at releases lazily, newest first, one at a time (`project`, `release`,
    # `usable_release`): most projects need one or two of their hundreds of releases. `versions`
    # and `usable` evaluate every release; only error messages use them.

    def project(self, name: str) -> _Project:
        """The project's releases (fetching its pages on first use)."""
        p = self._projects.get(name)
        if p is None:
            get = getattr(self.finder, "project_releases", None)
            if get is not None:
                releases = get(name)
            else:  # a finder without releases (a test's in-memory one): group its file list here
                releases = Releases(name)
                releases.add_files(self.finder.project_files(name))
            p = self._projects[name] = _Project(releases)
        return p

    def _why_dropped(self, f: Any) -> str | None:
        """Why the options leave a file out, or None."""
        if f.kind == "wheel" and self.opts.no_binary:
            return "wheels refused by --no-binary"
        if f.kind == "sdist" and self.opts.no_build:
            return "sdists refused by --no-build"
        cutoff = self.opts.exclude_newer
        if cutoff is not None and (t := _parse_time(f.upload_time)) is not None and t > cutoff:
            return "newer than --exclude-newer"
        if f.requires_python and not (self.u.python_bits(f.requires_python) & self.u.full):
            return f"requires Python {f.requires_python}"  # no Python of the project can install it
        return None

    def release(self, p: _Project, v: Version) -> tuple[Version, list[Any]] | None:
        """(version, files) of one release under the options, as `versions` has it; None when no file is left."""
        try:
            return p.kept[v]
        except KeyError:
            pass
        kept: list[Any] = []
        rep: Version | None = None  # `versions` keys a release by its first kept file's version
        texts = p.texts[v]
        for f in p.releases.files_of(texts):
            if self._why_dropped(f) is None:
                if rep is None:
                    rep = v if len(texts) == 1 else Version(f.version)
                kept.append(f)
        hit = p.kept[v] = (rep, kept) if rep is not None else None
        return hit

    def usable_release(self, p: _Project, v: Version, scope: Bits, pinned: bool) -> tuple[Version, list[Any]] | None:
        """(version, files) when the release has a file usable in `scope`, as `usable` decides; memoised."""
        key = (p.releases.name, v, scope, pinned)
        try:
            return self._release_usable[key]
        except KeyError:
            pass
        hit = self.release(p, v)
        if hit is not None:
            files = [f for f in hit[1] if f.yanked is None or pinned]
            if files and any(self.file_usable(f, scope) for f in files):
                hit = (hit[0], files)
            else:
                hit = None
        self._release_usable[key] = hit
        return hit

    def versions(self, name: str) -> dict[Version, list[Any]]:
        """version -> files usable under the options (yanked kept; callers decide)."""
        hit = self._versions.get(name)
        if hit is not None:
            return hit
        out: dict[Version, list[Any]] = {}
        dropped: dict[str, set[str]] = {}  # version -> why its files were left out (for messages)
        parsed: dict[str, Version | None] = {}  # one Version per release, not per file (a hot path)
        for f in self.project(name).releases.all_files():
            why = self._why_dropped(f)
            if f.version not in parsed:
                try:
                    parsed[f.version] = Version(f.version)
                except InvalidVersion:
                    parsed[f.version] = None
            v = parsed[f.version]
            if v is None:
                continue
            if why:
                dropped.setdefault(str(v), set()).add(why)
            else:
                out.setdefault(v, []).append(f)
        self._versions[name] = out
        self.dropped[name] = {v: ", ".join(sorted(w)) for v, w in dropped.items() if Version(v) not in out}
        return out

    def usable(self, name: str, scope: Bits, pins: frozenset[Version]) -> tuple[dict[Version, list[Any]], list[str]]:
        """Versions with a file usable in `scope` (and why the others are not); every release (for messages)."""
        key = (name, scope, pins)
        hit = self._usable.get(key)
        if hit is not None:
            return hit
        usable: dict[Version, list[Any]] = {}
        reasons: list[str] = []
        for v, files in self.versions(name).items():
            files = [f for f in files if f.yanked is None or v in pins]
            if not files:
                reasons.append(f"{v} is yanked")
                continue
            ok = [f for f in files if self.file_usable(f, scope)]
            if not ok:
                rp = sorted({f.requires_python for f in files if f.requires_python})
                if rp and not any(self.u.admits(x, scope) for x in rp):
                    reasons.append(f"{v} requires Python {rp[0]}")
                else:
                    reasons.append(f"{v} has no file for these platforms")
                continue
            usable[v] = files
        hit = self._usable[key] = (usable, reasons)
        return hit

    def file_usable(self, f: Any, scope: Bits) -> bool:
        """Its requires-python holds on all of `scope`, and (a wheel) its tags meet `scope`."""
        # The file's two bit sets are computed once and kept by id(f) (the files stay alive in
        # self._versions, so an id is never reused): a 60-package lock asks ~64k times, and the
        # requires-python and wheel-tag look-ups were most of `usable`.
        bits = self._file_bits.get(id(f))
        if bits is None:
            py = self.u.python_bits(f.requires_python) if f.requires_python else -1
            tags = self.u.wheel_bits(f.filename) if f.kind == "wheel" else None
            bits = self._file_bits[id(f)] = (py, tags)
        py, tags = bits
        if scope & ~py:
            return False
        return tags is None or bool(tags & scope)

    def metadata_file(self, files: Sequence[Any]) -> Any:
        """The file of a release whose metadata the resolution reads.

        A wheel with a PEP 658 file is cheapest (one small request), then any wheel (Range
        requests: the zip's tail, then the member), then the sdist's PKG-INFO. Among equals, a
        wheel this machine would install (its Python and platform, else its platform), and a
        platform's wheel before a pure one, as an installer ranks them: where a release's wheels
        disagree on their metadata it is the one that matters here, it is the file `pypm sync`
        downloads next, and so the one a CDN or caching proxy most likely holds. Elsewhere a
        Range request may wait on the origin: this machine's proxy answers in ~2 ms for a file
        it has served whole and ~100 ms for another, and a compiled release's metadata sits on
        a cold lock's critical path. Then the smallest wheel (its zip's tail more often holds
        the member), then by name, so that the choice is deterministic."""
        if len(files) == 1:
            return files[0]
        point, row = self._host
        wheel_bits = self.u.wheel_bits

        def rank(f: Any) -> tuple[bool, bool, bool, bool, bool, int, str]:
            where = wheel_bits(f.filename) if f.kind == "wheel" else 0
            return (f.kind != "wheel", not f.has_metadata, not where & point, not where & row,
                    f.filename.endswith("-any.whl"),  # an installer prefers a platform's wheel to a pure one
                    f.size if f.size is not None else 1 << 62, f.filename)

        return min(files, key=rank)

    def _metadata_file_of(self, c: Cand) -> Any:
        """`metadata_file(c.files)`, memoised while the candidate's file list is the same object:
        each round offers the metadata of every first candidate not read yet (~2,200 calls over
        ~36k files on the web stack's lock, ~25 ms)."""
        key = (c.name, c.version)
        hit = self._picks.get(key)
        if hit is not None and hit[0] is c.files:
            return hit[1]
        f = self.metadata_file(c.files)
        self._picks[key] = (c.files, f)
        return f

    def metadata(self, c: Cand) -> Any:
        key = (c.name, c.version)
        m = self._meta.get(key)
        if m is None:
            f = self._metadata_file_of(c)
            try:
                m = self.finder.metadata(f)
            except BuildError as e:  # (SdistMetadataUnsupported: pypm.index does not import here)
                if self.opts.build_metadata is None or type(e).__name__ != "SdistMetadataUnsupported":
                    raise
                # On this thread, or the look-ahead's build of it (pypm.locking) is waited for
                m = self.opts.build_metadata(f)
            self._meta[key] = m
        return m

    def pins_first(self, name: str, newest_first: Sequence[Any], key: Callable[[Any], Any] = lambda v: v) -> Sequence[Any]:
        """`newest_first` (releases, by `key`'s version) with the old lock's pins of `name` first:
        re-locking keeps them. The resolver's order, and the look-ahead's guess of it."""
        prefs = {Version(x) for x in self.opts.preferences.get(name, ()) if _valid(x)}
        if not prefs:
            return newest_first
        return [r for r in newest_first if key(r) in prefs] + [r for r in newest_first if key(r) not in prefs]

    def prefetch_metadata(self, cands: Iterable[Cand]) -> None:
        files = [self._metadata_file_of(c) for c in cands if (c.name, c.version) not in self._meta and c.files]
        if files:
            self.finder.prefetch_metadata(files)


# ---------------------------------------------------------------------- fetching ahead

class _Lookahead:
    """Fetches ahead of the resolver, on the finder's threads: for each requirement met, the
    project's page, then the metadata of the release the resolver will most likely pin (the newest
    one the requirement allows with a file usable somewhere in the universe), then the same for
    that metadata's requirements, level after level.

    Why: resolvelib asks for one level at a time (a page, then the metadata of its pick, then the
    pages of its dependencies), so a 60-package lock waited for ~25 rounds of requests in a row.
    The resolver asks for the same things later and finds them memoised in the finder; a wrong
    guess costs one fetch. Errors are left for the resolver to meet (the finder memoises them)."""

    def __init__(self, state: _State, spawn: Any, releases_of: Callable[[str], Releases]) -> None:
        self.s = state
        self.spawn = spawn  # the finder's in_background
        self.releases_of = releases_of  # the finder's project_releases
        self.seen: set[tuple[str, tuple[str, ...]]] = set()
        self.stopped = False

    def want(self, reqs: Iterable[tuple[str, SpecifierSet, tuple[str, ...]]]) -> None:
        """(name, specifier, extras) of requirements to fetch ahead for (the first of each name and extras wins)."""
        for name, spec, extras in reqs:
            key = (name, extras)
            if key in self.seen or self.stopped or name == PYTHON:
                continue
            self.seen.add(key)  # sets are thread-safe for this; a rare double visit only costs memo hits
            self.spawn(lambda n=name, sp=spec, ex=extras: self._visit(n, sp, ex))

    def _visit(self, name: str, spec: SpecifierSet, extras: tuple[str, ...]) -> None:
        try:
            if self.stopped:
                return
            finder = self.s.finder
            releases = self.releases_of(name)
            pick = None
            # As the resolver orders them (a wrong guess of an sdist's release costs a build of
            # its metadata)
            for v, texts in self.s.pins_first(name, releases.newest_first(), key=lambda r: r[0]):
                if v.is_prerelease and not spec.prereleases:  # pre-releases only if named
                    continue
                if not spec.contains(v, prereleases=True):
                    continue
                files = [f for f in releases.files_of(texts) if f.yanked is None and self.s._why_dropped(f) is None]
                if any(self._somewhere(f) for f in files):
                    pick = self.s.metadata_file(files)
                    break
            if pick is None or self.stopped:
                return
            try:
                meta = finder.metadata(pick)
            except BuildError as e:  # (SdistMetadataUnsupported: pypm.index does not import here)
                build = self.s.opts.build_metadata
                if build is None or type(e).__name__ != "SdistMetadataUnsupported" or not hasattr(build, "ahead"):
                    raise
                # Its backend is asked on a thread of the builder's (pypm.locking), and the
                # look-ahead goes on from its answer.
                build.ahead(pick, lambda m: self._follow(name, extras, m))
                return
            self._follow(name, extras, meta)
        except Exception:  # noqa: BLE001 -- a guess only: the resolver meets any error in its own time
            pass

    def _follow(self, name: str, extras: tuple[str, ...], meta: Any) -> None:
        """Fetch ahead for the requirements of `name`'s guessed release (its metadata `meta`)."""
        try:
            u = self.s.u
            deps = []
            for text in meta.requires_dist:
                r = _parse_req(text, name)
                if r.url:
                    continue
                marker = str(r.marker) if r.marker else None
                if any(u.compile(marker, e).bits for e in ("", *extras)):
                    deps.append((canonicalize_name(r.name), r.specifier,
                                 tuple(sorted(canonicalize_name(e) for e in r.extras))))
            self.want(deps)
        except Exception:  # noqa: BLE001 -- a guess only
            pass

    def _somewhere(self, f: Any) -> bool:
        """Installable on some part of the universe (the resolver's exact check depends on the branch)."""
        u = self.s.u
        if f.requires_python and not (u.python_bits(f.requires_python) & u.full):
            return False
        return f.kind != "wheel" or bool(u.wheel_bits(f.filename) & u.full)


# ---------------------------------------------------------------------- the provider

if TYPE_CHECKING:
    _ProviderBase = AbstractProvider[Req, Cand, str]
else:  # resolvelib 1.0 (which pyproject.toml allows) is generic in its stubs only: not subscriptable at run time
    _ProviderBase = AbstractProvider


class _Provider(_ProviderBase):
    def __init__(self, state: _State, branch: Bits, root_name: str) -> None:
        self.s = state
        self.u = state.u
        self.branch = branch
        self.root_name = root_name
        self.why: dict[str, tuple[Cand | None, Req]] = {}  # ident -> first (parent, requirement) seen
        # name -> (scope, pins) of its last look-up: why versions were excluded, worked out for a message
        self.excluded: dict[str, tuple[Bits, frozenset[Version]]] = {}
        self._satisfied: dict[int, tuple[Req, dict[Version, bool]]] = {}

    # -- requirements out of metadata
    def make_reqs(self, texts: Iterable[str], extra: str, parent: Cand | None, where: str,
                  scope: Bits | None = None) -> list[Req]:
        """Requirements from PEP 508 strings, cut to `scope` (default: the branch); dropped when empty there."""
        scope = self.branch if scope is None else scope & self.branch
        out = []
        for text in texts:
            r = _parse_req(text, where)
            if r.url:
                raise ResolutionError(f"{where} requires {text!r}, a direct URL, which pypm cannot lock yet",
                                      hint="depend on a released version from an index or find-links instead")
            marker = str(r.marker) if r.marker else None
            info = self.u.compile(marker, extra)
            bits = info.bits & scope
            if not bits:
                continue  # false everywhere this branch (and requires-python) covers
            if extra:
                # Only what the extra adds: requirements true without it belong to the base.
                if (self.u.compile(marker, "").bits & scope) == bits:
                    continue
            name = canonicalize_name(r.name)
            common: _ReqCommon = dict(name=name, specifier=r.specifier, bits=bits, full_bits=info.bits,
                                      marker=strip_extra(marker),
                                      exact=info.exact, extras=tuple(sorted(canonicalize_name(e) for e in r.extras)))
            if not r.extras:
                out.append(Req(ident=name, extra="", text=text, **common))
            for e in sorted(canonicalize_name(x) for x in r.extras):
                out.append(Req(ident=f"{name}[{e}]", extra=e, text=text, **common))
        return out

    def check_forks(self, reqs: Sequence[Req]) -> None:
        """Disjoint markers with different specifiers on one name: resolve each region apart."""
        by_name: dict[str, list[Req]] = {}
        for r in reqs:
            by_name.setdefault(r.name, []).append(r)
        for name in sorted(by_name):
            group = by_name[name]
            if len({str(r.specifier) for r in group}) < 2:
                continue
            if not any(a.bits & b.bits == 0 and a.specifier != b.specifier
                       for i, a in enumerate(group) for b in group[i + 1:]):
                continue
            regions = split_regions(self.branch, [r.bits for r in group])
            if len(regions) > 1:
                raise _ForkNeeded(regions)

    # -- resolvelib hooks
    def identify(self, requirement_or_candidate: Req | Cand) -> str:
        return requirement_or_candidate.ident

    def get_preference(self, identifier: str, resolutions: Mapping[str, Cand], candidates: Any,
                       information: Mapping[str, Iterator[Any]], backtrack_causes: Sequence[Any]) -> Any:
        infos = list(information[identifier])
        pinned = any(i.requirement.is_pin() for i in infos)
        causes = {c.requirement.name for c in backtrack_causes}
        direct = any(i.parent is None for i in infos)
        return (identifier != PYTHON, identifier.split("[")[0] not in causes, not pinned, not direct, identifier)

    def narrow_requirement_selection(self, identifiers: Iterable[str], resolutions: Mapping[str, Cand],
                                     candidates: Mapping[str, Iterator[Cand]], information: Any,
                                     backtrack_causes: Sequence[Any]) -> Iterable[str]:
        # Each round: fetch the metadata of every identifier's best candidate at once.
        ids = list(identifiers)
        firsts = []
        for i in ids:
            if i == PYTHON:
                continue
            c = next(iter(candidates[i]), None)
            if c is not None:
                firsts.append(c)
        self.s.prefetch_metadata(firsts)
        return ids

    def find_matches(self, identifier: str, requirements: Mapping[str, Iterator[Req]],
                     incompatibilities: Mapping[str, Iterator[Cand]]) -> Any:
        reqs = list(requirements[identifier])
        if identifier == PYTHON:
            if all(self.u.admits(str(r.specifier), r.bits) for r in reqs):
                return [Cand(PYTHON, Version("3"), "", ())]
            return []
        name = reqs[0].name
        extra = reqs[0].extra
        if extra:
            reqs += list(requirements.get(name, ()))
        bad = {c.version for c in incompatibilities[identifier]}
        # The Python range that matters is the branch narrowed by these requirements' markers.
        scope = 0
        for r in reqs:
            scope |= r.bits
        scope &= self.branch
        specs = [r.specifier for r in reqs]
        pins = frozenset(Version(s.version) for r in reqs for s in r.specifier if r.is_pin() and s.operator == "==")
        try:
            proj = self.s.project(name)
        except PypmError as e:
            # "not found" / "cannot fetch" say which index; add which requirement led here.
            parent, req = self.why.get(identifier, (None, None))
            if parent is not None and req is not None and not getattr(e, "_pypm_chain", False):
                steps = _chain(self, parent) + [f"{parent or self.root_name} depends on {_show(req.text)}"]
                e.message = f"{e.message} (needed because {'; '.join(steps)})"
                e._pypm_chain = True  # type: ignore[attr-defined]
            raise
        self.excluded[name] = (scope, pins)
        allow_pre = self._allow_prereleases(proj, scope, pins, specs)
        order = self.s.pins_first(name, proj.order)
        state = self.s

        def matches() -> Iterator[Cand]:
            # Lazily: resolvelib takes candidates one at a time (and keeps what it took), and
            # the files of a release are built and checked only when its turn comes.
            for v in order:
                if v in bad or not all(sp.contains(v, prereleases=allow_pre) for sp in specs):
                    continue
                hit = state.usable_release(proj, v, scope, v in pins)
                if hit is not None:
                    yield Cand(name, hit[0], extra, tuple(hit[1]), scope)

        return matches

    def _allow_prereleases(self, proj: _Project, scope: Bits, pins: frozenset[Version],
                           specs: Sequence[SpecifierSet]) -> bool:
        mode = self.s.opts.prerelease
        if mode == "allow":
            return True
        if mode == "disallow":
            return False
        explicit = any(s.prereleases for s in specs) or any(
            sp.operator in ("==", "===") and _valid(sp.version) and Version(sp.version.rstrip(".*")).is_prerelease
            for s in specs for sp in s)
        if mode in ("explicit", "if-necessary-or-explicit") and explicit:
            return True
        if mode in ("if-necessary", "if-necessary-or-explicit"):
            # Pre-releases only when no usable final release matches (newest first: usually the first).
            return not any(all(s.contains(v, prereleases=False) for s in specs)
                           and self.s.usable_release(proj, v, scope, v in pins) is not None
                           for v in proj.order)
        return False

    def is_satisfied_by(self, requirement: Req, candidate: Cand) -> bool:
        if requirement.ident == PYTHON:
            return self.u.admits(str(requirement.specifier), requirement.bits)
        # A pin made for a narrower scope does not serve a wider requirement: its dependencies
        # were gathered for that scope only, so it must be pinned again (resolvelib re-pins it).
        if requirement.bits & ~candidate.scope:
            return False
        # Memoised per requirement object (kept alive in the value, so its id is not reused):
        # resolvelib re-checks every pin against every requirement each round, ~15k calls here.
        hit = self._satisfied.get(id(requirement))
        if hit is None:
            hit = self._satisfied[id(requirement)] = (requirement, {})
        ok = hit[1].get(candidate.version)
        if ok is None:
            ok = hit[1][candidate.version] = requirement.specifier.contains(candidate.version, prereleases=True)
        return ok

    def get_dependencies(self, candidate: Cand) -> list[Req]:
        if candidate.name == PYTHON:
            return []
        meta = self.s.metadata(candidate)
        where = f"{candidate.name} {candidate.version}"
        reqs: list[Req] = []
        if candidate.extra:
            base = Req(ident=candidate.name, name=candidate.name, extra="",
                       specifier=SpecifierSet(f"=={candidate.version}"), bits=candidate.scope,
                       text=f"{candidate.name}=={candidate.version}")
            reqs.append(base)
            reqs += self.make_reqs(meta.requires_dist, candidate.extra, candidate, where, candidate.scope)
        else:
            if meta.requires_python:
                reqs.append(Req(ident=PYTHON, name=PYTHON, extra="", specifier=_spec(meta.requires_python),
                                bits=candidate.scope, text=f"Python {meta.requires_python}"))
            reqs += self.make_reqs(meta.requires_dist, "", candidate, where, candidate.scope)
            self.check_forks([r for r in reqs if r.ident != PYTHON])
        for r in reqs:
            self.why.setdefault(r.ident, (candidate, r))
        if self.s.lookahead is not None:
            self.s.lookahead.want((r.name, r.specifier, r.extras) for r in reqs)
        names = {r.name for r in reqs if r.ident != PYTHON}
        if names:
            self.s.finder.prefetch(sorted(names))
        return reqs


def _vkey(v: str) -> Version:
    try:
        return Version(v)
    except InvalidVersion:
        return Version("0")


def _valid(v: str) -> bool:
    try:
        Version(v.rstrip(".*"))
        return True
    except InvalidVersion:
        return False


def _spec(text: str) -> SpecifierSet:
    try:
        return SpecifierSet(text)
    except Exception:
        return SpecifierSet()


def split_regions(branch: Bits, parts: Iterable[Bits]) -> list[Bits]:
    """The partition of `branch` generated by `parts` (non-empty cells only, deterministic order)."""
    regions = [branch]
    for b in parts:
        nxt = []
        for r in regions:
            for cell in (r & b, r & ~b):
                if cell:
                    nxt.append(cell)
        regions = nxt
    return sorted(set(regions), key=lambda r: (-r.bit_length(), r))


# ---------------------------------------------------------------------- explaining failures

def _chain(p: _Provider, cand: Cand | None, seen: set[str] | None = None) -> list[str]:
    if cand is None:
        return []
    seen = seen or set()
    if cand.ident in seen or cand.ident not in p.why:
        return []
    seen.add(cand.ident)
    parent, req = p.why[cand.ident]
    return _chain(p, parent, seen) + [f"{parent or p.root_name} depends on {_show(req.text)}"]


def _show(text: str) -> str:
    """A requirement for a message: the marker in words, since "; " separates the chain's steps."""
    if ";" not in text:
        return text
    spec, marker = text.split(";", 1)
    return f"{spec.strip()} (where {marker.strip()})"


def _explain(p: _Provider, e: ResolutionImpossible[Req, Cand]) -> ResolutionError:
    causes = list(e.causes)
    if not causes:
        return ResolutionError("no set of versions satisfies the requirements")
    name = causes[0].requirement.name
    lines: list[str] = []
    for info in causes:
        req, parent = info.requirement, info.parent
        steps = _chain(p, parent)
        who = str(parent) if parent is not None else p.root_name
        if req.ident == PYTHON:
            steps.append(f"{who} requires {req.text}, but it is needed on Python "
                         f"{p.u.describe_python(req.bits)} (the project's requires-python is "
                         f"{p.u.requires_python or 'unset'})")
        else:
            steps.append(f"{who} depends on {_show(req.text)}")
        line = "; ".join(steps)
        if line not in lines:
            lines.append(line)
    if name == PYTHON:
        return ResolutionError("cannot satisfy Requires-Python: " + "; ".join(lines),
                               hint="narrow [project] requires-python, or pin an older release of that package")
    known = sorted(p.s.versions(name)) if name != PYTHON else []
    avail = ", ".join(str(v) for v in known[-8:]) or "none"
    msg = f"cannot resolve {name}: " + "; ".join(lines) + f" (versions of {name} available: {avail}"
    looked = p.excluded.get(name)
    excluded = list(p.s.usable(name, *looked)[1]) if looked is not None else []
    dropped = p.s.dropped.get(name, {})
    excluded += [f"{v} ({why})" for v, why in sorted(dropped.items(), key=lambda kv: _vkey(kv[0]), reverse=True)]
    if excluded:
        msg += "; excluded: " + ", ".join(excluded[:6]) + (", ..." if len(excluded) > 6 else "")
    msg += ")"
    if p.branch != p.u.full:
        msg += f", in the fork where {p.u.to_marker(p.branch)}"
    return ResolutionError(msg, hint="relax one of these requirements, or pin a version that satisfies them all")


# ---------------------------------------------------------------------- resolving

def _root_reqs(p: _Provider, root: RootSpec) -> tuple[list[Req], dict[str, list[Req]]]:
    """All entry-point requirements (for resolvelib) and per entry point (for the graph)."""
    rn = canonicalize_name(root.name)
    entries: dict[str, list[str]] = {"": list(root.dependencies)}
    for e, reqs in root.optional_dependencies.items():
        entries[f"extra:{e}"] = list(reqs)
    for g, reqs in root.dependency_groups.items():
        entries[f"group:{g}"] = list(reqs)
    per: dict[str, list[Req]] = {}
    for key, texts in entries.items():
        expanded: list[str] = []
        stack = list(texts)
        seen_extras: set[str] = set()
        while stack:  # the project naming itself with extras pulls in those extras
            t = stack.pop(0)
            r = _parse_req(t, f"{root.name}'s pyproject.toml")
            if canonicalize_name(r.name) == rn:
                for x in r.extras:
                    x = canonicalize_name(x)
                    if x not in seen_extras:
                        seen_extras.add(x)
                        stack += [s if not r.marker else _and_marker(s, str(r.marker))
                                  for s in root.optional_dependencies.get(x, ())]
                continue
            expanded.append(t)
        per[key] = p.make_reqs(expanded, "", None, f"{root.name}'s pyproject.toml")
    flat = [r for k in sorted(per) for r in per[k]]
    return flat, per


def _and_marker(req: str, marker: str) -> str:
    r = Requirement(req)
    m = f"({r.marker}) and ({marker})" if r.marker else marker
    r.marker = None
    return f"{r}; {m}"


def _resolve_branch(state: _State, root: RootSpec, branch: Bits) -> tuple[_Provider, dict[str, Cand], dict[str, list[Req]]]:
    p = _Provider(state, branch, root.name)
    flat, per = _root_reqs(p, root)
    p.check_forks(flat)
    for r in flat:
        p.why.setdefault(r.ident, (None, r))
    if state.lookahead is not None:
        state.lookahead.want((r.name, r.specifier, r.extras) for r in flat)
    state.finder.prefetch(sorted({r.name for r in flat}))
    resolver = Resolver(p, BaseReporter())
    try:
        result = resolver.resolve(flat, max_rounds=state.opts.max_rounds)
    except ResolutionImpossible as e:
        raise _Impossible(p, e) from None
    except ResolutionTooDeep:
        raise ResolutionError(f"gave up after {state.opts.max_rounds} resolution rounds",
                              hint="pin some versions to narrow the search") from None
    return p, dict(result.mapping), per


class _Impossible(Exception):
    def __init__(self, p: _Provider, e: ResolutionImpossible[Req, Cand]) -> None:
        super().__init__("impossible")
        self.p = p
        self.e = e


_Branch = tuple[Bits, "_Provider", dict[str, Cand], dict[str, list[Req]]]  # region, provider, pins, entries


def resolve(finder: Finder, root: RootSpec, opts: ResolveOptions | None = None) -> Resolution:
    """Resolve `root` for every environment in its requires-python; fork where markers demand it."""
    opts = opts or ResolveOptions()
    u = Universe(root.requires_python)
    state = _State(finder, u, opts)
    try:
        return _resolve(state, root, opts)
    finally:
        if state.lookahead is not None:
            state.lookahead.stopped = True  # queued guesses are dropped: the resolver needs nothing more


def _resolve(state: _State, root: RootSpec, opts: ResolveOptions) -> Resolution:
    u = state.u
    queue: list[Bits] = []
    if opts.initial_forks:
        queue = split_regions(u.full, [u.bits(x) for x in opts.initial_forks])
    queue = queue or [u.full]
    done: list[_Branch] = []
    forks = 0
    while queue:
        branch = queue.pop(0)
        try:
            p, mapping, per = _resolve_branch(state, root, branch)
        except _ForkNeeded as f:
            forks += len(f.regions)
            if forks > opts.max_forks:
                raise ResolutionError(f"the resolution forked into more than {opts.max_forks} branches",
                                      hint="simplify the markers of conflicting requirements") from None
            queue[0:0] = f.regions
            continue
        except _Impossible as imp:
            regions = _reactive_fork(imp, branch)
            if regions:
                forks += len(regions)
                if forks <= opts.max_forks:
                    queue[0:0] = regions
                    continue
            raise _explain(imp.p, imp.e) from None
        done.append((branch, p, mapping, per))
    from .forkmerge import merge_branches  # here, not at the top: forkmerge imports this module

    return merge_branches(state, root, done)


def _reactive_fork(imp: _Impossible, branch: Bits) -> list[Bits]:
    """A conflict between requirements with disjoint markers: split the branch along them."""
    reqs = [c.requirement for c in imp.e.causes if c.requirement.ident != PYTHON]
    for i, a in enumerate(reqs):
        for b in reqs[i + 1:]:
            if a.name == b.name and a.bits & b.bits == 0 and a.specifier != b.specifier:
                regions = split_regions(branch, [a.bits, b.bits])
                if len(regions) > 1:
                    return regions
    return []
