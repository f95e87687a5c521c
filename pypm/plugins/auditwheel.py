"""The `auditwheel` plugin: after sync, check installed platform wheels against their tag's policy.

A wheel tagged `manylinux_2_17_x86_64` promises to run on any x86-64 Linux with glibc
2.17 or newer. This plugin reads the ELF files each such wheel installed and reports
what breaks that promise: a symbol version newer than the tag allows (GLIBC_2.34 in a
manylinux_2_17 wheel), or a shared library that is neither in the policy's allow-list
nor bundled by the wheel. The policies (allowed symbol versions and libraries for each
manylinux/musllinux tag) come from the `auditwheel` library, which also reads the ELF.
With `[tool.pypm.auditwheel] strict = true` a violation fails the sync.

What it does not check (auditwheel's `repair` territory): blacklisted individual symbols,
ISA extensions, and the architecture of each ELF file.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from ..errors import PluginError

__all__ = ["plugin", "Violation", "audit_venv", "audit_dist"]

# PEP 600 / PEP 656 platform tags, and the legacy manylinux aliases (PEP 513/571/599).
_TAG = re.compile(r"^(?P<kind>manylinux|musllinux)_(?P<major>\d+)_(?P<minor>\d+)_(?P<arch>.+)$")
_LEGACY = {"manylinux1": (2, 5), "manylinux2010": (2, 12), "manylinux2014": (2, 17)}
_ELF_MAGIC = b"\x7fELF"
_LIBPYTHON = re.compile(r"^libpython\d+\.\d+m?\.so(\.\d)*$")


@dataclass(frozen=True)
class Violation:
    dist: str  # "name version"
    tag: str  # the platform tag the check used
    file: str  # path relative to site-packages
    problem: str

    def __str__(self) -> str:
        return f"{self.dist} ({self.tag}): {self.file} {self.problem}"


def _parse_platform(tag: str) -> tuple[str, tuple[int, int], str] | None:
    """('manylinux'|'musllinux', (major, minor), arch) for a Linux platform tag, else None."""
    for legacy, ver in _LEGACY.items():
        if tag.startswith(legacy + "_"):
            return "manylinux", ver, tag[len(legacy) + 1:]
    m = _TAG.match(tag)
    if not m:
        return None
    return m["kind"], (int(m["major"]), int(m["minor"])), m["arch"]


def _version_key(v: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", v))


class _Policies:
    """The policy for a claimed tag, from auditwheel's data (imported only when a wheel needs it)."""

    def __init__(self) -> None:
        self._by_kind_arch: dict[tuple[str, str, tuple[int, int]], Any] = {}

    def policy(self, kind: str, ver: tuple[int, int], arch: str) -> Any | None:
        key = (kind, arch, ver)
        if key in self._by_kind_arch:
            return self._by_kind_arch[key]
        _require_auditwheel()
        from auditwheel.architecture import Architecture
        from auditwheel.libc import Libc
        from auditwheel.policy import WheelPolicies

        try:
            a = Architecture(arch)
        except ValueError:
            self._by_kind_arch[key] = None
            return None
        if kind == "musllinux":
            try:
                pols = list(WheelPolicies(libc=Libc.MUSL, arch=a, musl_policy=f"musllinux_{ver[0]}_{ver[1]}"))
            except (ValueError, AssertionError):
                pols = []
        else:
            pols = list(WheelPolicies(libc=Libc.GLIBC, arch=a))
        # The policy named for the tag, else the nearest older one the data knows (PEP 600 tags
        # exist for every glibc; the data lists only some): stricter, never laxer, for libraries
        # and non-glibc symbol families. GLIBC_x.y itself is compared with the tag's version.
        best, best_ver = None, (-1, -1)
        for p in pols:
            parsed = _parse_platform(p.name)
            if parsed and parsed[0] == kind and best_ver < parsed[1] <= ver:
                best, best_ver = p, parsed[1]
        self._by_kind_arch[key] = best
        return best


def _require_auditwheel() -> None:
    try:
        import auditwheel.policy  # noqa: F401
        import elftools  # noqa: F401 - pyelftools, auditwheel's ELF reader
    except ImportError as e:
        raise PluginError(f"the auditwheel plugin needs the `auditwheel` library ({e})",
                          hint="install pypm with its plugins extra: pip install 'pypm[plugins]'") from None


def _site_packages(venv: Path) -> list[Path]:
    return sorted(p for p in venv.glob("lib/python*/site-packages") if p.is_dir())


def _wheel_tags(dist_info: Path) -> list[str]:
    try:
        text = (dist_info / "WHEEL").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []
    return [line.split(":", 1)[1].strip() for line in text.splitlines() if line.lower().startswith("tag:")]


def _record_files(site: Path, dist_info: Path) -> list[Path]:
    try:
        text = (dist_info / "RECORD").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []
    import csv

    return [site / row[0] for row in csv.reader(text.splitlines()) if row and row[0]]


def _maybe_elf(path: Path) -> bool:
    # Shared objects, and extension-less files (executables); reading 4 bytes confirms.
    n = path.name
    if not (n.endswith(".so") or ".so." in n or "." not in n):
        return False
    try:
        with path.open("rb") as f:
            return f.read(4) == _ELF_MAGIC
    except OSError:
        return False


def audit_dist(site: Path, dist_info: Path, policies: _Policies | None = None) -> list[Violation]:
    """The violations of one installed distribution (none for pure or non-Linux wheels)."""
    policies = policies or _Policies()
    claims = [c for c in (_parse_platform(t.split("-")[-1]) for t in _wheel_tags(dist_info)) if c]
    if not claims:
        return []
    # A wheel tagged for several platforms promises all of them: hold it to the oldest.
    kind, ver, arch = min(claims, key=lambda c: (c[0] != "manylinux", c[1]))
    tag = f"{kind}_{ver[0]}_{ver[1]}_{arch}"
    policy = policies.policy(kind, ver, arch)
    name = dist_info.name[: -len(".dist-info")].replace("-", " ", 1)
    if policy is None:
        return [Violation(name, tag, str(dist_info.relative_to(site)),
                          "claims a platform tag that auditwheel has no policy for")]
    files = [p for p in _record_files(site, dist_info) if _maybe_elf(p)]
    bundled = {p.name for p in files}
    out: list[Violation] = []
    for path in files:
        rel = str(path.relative_to(site)) if path.is_relative_to(site) else str(path)
        for problem in _check_elf(path, kind, ver, policy, bundled):
            out.append(Violation(name, tag, rel, problem))
    return out


def _is_loader(lib: str) -> bool:
    # The ELF dynamic loader is the system's by definition (auditwheel excludes it the same way):
    # ld-linux*.so.* on most platforms, ld64.so.1/2 on ppc64le/s390x, ld-musl-* on musl.
    return lib.startswith(("ld-linux", "ld-musl-")) or lib in ("ld64.so.1", "ld64.so.2")


def _check_elf(path: Path, kind: str, ver: tuple[int, int], policy: Any, bundled: set[str]) -> Iterator[str]:
    from auditwheel.elfutils import elf_find_versioned_symbols
    from elftools.common.exceptions import ELFError
    from elftools.elf.dynamic import DynamicSection
    from elftools.elf.elffile import ELFFile

    try:
        with path.open("rb") as f:
            elf = ELFFile(f)
            dyn = elf.get_section_by_name(".dynamic")
            needed = [t.needed for t in dyn.iter_tags()  # type: ignore[attr-defined]
                      if t.entry.d_tag == "DT_NEEDED"] if isinstance(dyn, DynamicSection) else []
            versioned = list(elf_find_versioned_symbols(elf))
    except (ELFError, OSError, ValueError) as e:
        yield f"cannot be read as ELF: {e}"
        return
    for lib in needed:
        if lib in policy.whitelist or lib in bundled or _LIBPYTHON.match(lib) or _is_loader(lib):
            continue
        yield f"needs {lib}, which the {kind} policy does not allow and the wheel does not bundle"
    worst: dict[str, str] = {}
    for lib, version in versioned:
        if lib in bundled:
            continue  # a library the wheel ships defines its own versions
        family, _, number = version.partition("_")
        if family == "GLIBC" and kind == "manylinux":
            ok = _version_key(number)[:2] <= ver
        elif family in policy.symbol_versions:
            ok = number in policy.symbol_versions[family]
        else:
            continue  # a family the policy does not govern
        if not ok and (family not in worst or _version_key(number) > _version_key(worst[family])):
            worst[family] = number
    for family, number in sorted(worst.items()):
        yield f"needs {family}_{number}, newer than the tag allows"


def audit_venv(venv: Path) -> tuple[int, list[Violation]]:
    """(number of platform wheels checked, violations) for every distribution in the venv."""
    policies = _Policies()
    checked, violations = 0, []
    for site in _site_packages(venv):
        for dist_info in sorted(site.glob("*.dist-info")):
            if any(_parse_platform(t.split("-")[-1]) for t in _wheel_tags(dist_info)):
                checked += 1
                violations += audit_dist(site, dist_info, policies)
    return checked, violations


class AuditwheelPlugin:
    """post-sync: audit the venv; report violations; fail the sync when `strict = true`."""

    def post_sync(self, ctx: Any) -> int:
        strict = ctx.config.get("strict", False)
        unknown = set(ctx.config) - {"strict"}
        if not isinstance(strict, bool) or unknown:
            raise PluginError(f"{ctx.project_root / 'pyproject.toml'}: [tool.pypm.auditwheel] "
                              + (f"has unknown key(s) {', '.join(sorted(unknown))}" if unknown
                                 else "`strict` must be true or false"),
                              hint="the only setting is `strict = true|false`")
        if ctx.venv is None:
            return 0
        checked, violations = audit_venv(Path(ctx.venv))
        for v in violations:
            ctx.report(str(v))
        dists = sorted({v.dist for v in violations})
        if not violations:
            ctx.report(f"{checked} platform wheel(s) match their manylinux/musllinux tags")
            return 0
        summary = (f"{len(violations)} violation(s) of the platform tag policy in "
                   f"{len(dists)} wheel(s): {', '.join(dists)}")
        ctx.report(summary + ("" if strict else " (warning only; set [tool.pypm.auditwheel] strict = true "
                                                 "to make this fatal)"))
        return 1 if strict else 0


plugin = AuditwheelPlugin()
