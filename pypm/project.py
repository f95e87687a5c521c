"""The project model: PEP 621 `[project]`, PEP 735 `[dependency-groups]` and `[tool.pypm]`.

Pure: `parse_pyproject` takes the decoded TOML and returns a validated `Project`; only
`load_project` reads the file. Every problem is a ProjectError that names the file, the
key and the fix.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from .errors import ProjectError

__all__ = [
    "PYPROJECT",
    "SandboxConfig",
    "ToolConfig",
    "Project",
    "parse_pyproject",
    "load_project",
    "find_project_root",
    "content_hash",
    "toml_error_location",
]

PYPROJECT = "pyproject.toml"
_NAME = re.compile(r"^([A-Z0-9]|[A-Z0-9][A-Z0-9._-]*[A-Z0-9])$", re.IGNORECASE)


def _canon(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclass(frozen=True)
class SandboxConfig:
    """`[tool.pypm.sandbox]`; flags on the command line override each field."""

    enabled: bool = True
    network: str = "none"  # "none" | "host"
    bind: tuple[str, ...] = ()  # "SRC[:DST]", read-write
    ro_bind: tuple[str, ...] = ()  # "SRC[:DST]", read-only
    env: tuple[str, ...] = ()  # "NAME" (pass through from the host) or "NAME=VALUE"
    profile: str = "default"  # seccomp profile: a name in seccomp/ or a path to a JSON file
    writable_project: bool = True
    limits: tuple[tuple[str, int], ...] = ()  # [tool.pypm.sandbox.limits]: (name, value), sorted


@dataclass(frozen=True)
class ToolConfig:
    """`[tool.pypm]`."""

    index_url: str | None = None
    extra_index_urls: tuple[str, ...] = ()
    find_links: tuple[str, ...] = ()  # as written; resolve relative ones against the project root
    python: str | None = None
    prerelease: str | None = None
    index_strategy: str | None = None  # "first-index" (the default) or "unsafe-best-match"
    plugins: tuple[str, ...] = ()
    plugin_path: tuple[str, ...] = ()
    trusted_keys: tuple[str, ...] = ()
    sandbox: SandboxConfig = field(default_factory=SandboxConfig)
    build: Mapping[str, Any] = field(default_factory=dict)  # [tool.pypm.build], issue 5
    build_limits: tuple[tuple[str, int], ...] = ()  # [tool.pypm.build] limits, validated
    # Per-plugin tables, e.g. [tool.pypm.s3cache] -> plugin_config["s3cache"].
    plugin_config: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    # [tool.pypm.sources]: (normalised name, path as written, editable), sorted by name; the
    # package comes from that directory or file instead of an index (pypm.pathdeps). A
    # `{ workspace = true }` source has the path "" (the workspace's member of that name), a
    # `{ url = "https://..." }` one its URL.
    sources: tuple[tuple[str, str, bool], ...] = ()
    # [tool.pypm.workspace]: member and exclude globs, relative to this project (its root).
    workspace: tuple[str, ...] | None = None
    workspace_exclude: tuple[str, ...] = ()
    publish_url: str | None = None  # `pypm publish`'s upload URL


@dataclass(frozen=True)
class Project:
    root: Path
    name: str
    version: str | None  # None when listed in `dynamic`
    dynamic: tuple[str, ...]
    requires_python: str  # a specifier string; "" means any
    dependencies: tuple[str, ...]  # PEP 508 strings, validated
    optional_dependencies: Mapping[str, tuple[str, ...]]  # extra (normalised) -> PEP 508 strings
    dependency_groups: Mapping[str, tuple[str, ...]]  # group (normalised) -> strings, includes expanded
    build_system: Mapping[str, Any] | None  # the [build-system] table, None for a virtual project
    tool: ToolConfig

    @property
    def pyproject(self) -> Path:
        return self.root / PYPROJECT

    @property
    def normalized_name(self) -> str:
        return _canon(self.name)

    @property
    def is_virtual(self) -> bool:
        return self.build_system is None

    def find_links_paths(self) -> tuple[str, ...]:
        """find-links entries with relative paths made absolute against the project root."""
        out = []
        for fl in self.tool.find_links:
            if "://" in fl:
                out.append(fl)
            else:
                out.append(str((self.root / fl).resolve()) if not Path(fl).is_absolute() else fl)
        return tuple(out)


def toml_error_location(err: Exception) -> str:
    """'LINE:COL' from a tomllib error message ('... (at line 3, column 5)'), or ''."""
    m = re.search(r"at line (\d+), column (\d+)", str(err))
    return f"{m.group(1)}:{m.group(2)}" if m else ""


def _err(path: Path, key: str, msg: str, hint: str | None = None) -> ProjectError:
    return ProjectError(f"{path}: `{key}` {msg}", hint=hint)


def _str_list(value: Any, path: Path, key: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _err(path, key, "must be an array of strings")
    return tuple(value)


def _requirements(value: Any, path: Path, key: str, *, refuse_self: str | None = None) -> tuple[str, ...]:
    """Validated PEP 508 strings. `refuse_self`: the project's normalised name; a requirement on
    it without extras is an error (with extras it is a recursive extra, which is fine)."""
    from packaging.requirements import InvalidRequirement, Requirement

    items = _str_list(value, path, key)
    for s in items:
        try:
            req = Requirement(s)
        except InvalidRequirement as e:
            raise ProjectError(
                f"{path}: `{key}` holds an invalid PEP 508 requirement: {s!r}\n  {e}",
                hint="write it as NAME[EXTRAS] SPECIFIERS; MARKER, e.g. 'requests>=2.31; python_version >= \"3.9\"'",
            ) from None
        if refuse_self is not None and not req.extras and _canon(req.name) == refuse_self:
            raise _err(path, key, f"lists the project itself: {s!r}",
                       hint=f"remove it from `{key}`; a project cannot depend on itself")
    return items


_NAME_HINT = ("a valid name is ASCII letters, digits and '-', '_' or '.', starting and ending with "
              "a letter or digit (PEP 508), e.g. 'test' or 'dev-tools'")


def _checked_names(raw: Mapping[Any, Any], path: Path, key: str, what: str) -> dict[str, str]:
    """Normalised name -> name as written, for the keys of an extras (PEP 685) or groups (PEP 735)
    table. Each must be a valid PEP 508 name; two that normalise alike are an error."""
    out: dict[str, str] = {}
    for k in raw:
        if not isinstance(k, str) or not _NAME.fullmatch(k):
            raise _err(path, key, f"has an invalid {what} name {k!r}", hint=_NAME_HINT)
        c = _canon(k)
        if c in out:
            raise _err(path, key, f"has two {what}s whose names differ only in case or punctuation: "
                                  f"{out[c]!r} and {k!r}",
                       hint=f"they name the same {what}; merge them into one")
        out[c] = k
    return out


def _expand_groups(raw: Any, path: Path) -> dict[str, tuple[str, ...]]:
    """PEP 735: resolve `{include-group = "..."}` entries, detecting cycles and unknown names."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise _err(path, "dependency-groups", "must be a table of arrays")
    groups = {c: raw[k] for c, k in _checked_names(raw, path, "dependency-groups", "group").items()}
    out: dict[str, tuple[str, ...]] = {}

    def expand(name: str, stack: tuple[str, ...]) -> tuple[str, ...]:
        if name in out:
            return out[name]
        if name in stack:
            cycle = " -> ".join(stack + (name,))
            raise _err(path, f"dependency-groups.{name}", f"includes itself ({cycle})")
        items = groups[name]
        if not isinstance(items, list):
            raise _err(path, f"dependency-groups.{name}", "must be an array")
        result: list[str] = []
        for item in items:
            if isinstance(item, str):
                result.extend(_requirements([item], path, f"dependency-groups.{name}"))
            elif isinstance(item, dict) and set(item) == {"include-group"} and isinstance(item["include-group"], str):
                inc = _canon(item["include-group"])
                if inc not in groups:
                    raise _err(path, f"dependency-groups.{name}",
                               f"includes unknown group {item['include-group']!r}",
                               hint=f"define [dependency-groups] {item['include-group']} or remove the include")
                result.extend(expand(inc, stack + (name,)))
            else:
                raise _err(path, f"dependency-groups.{name}",
                           f"holds {item!r}; entries are PEP 508 strings or {{include-group = \"NAME\"}}")
        out[name] = tuple(result)
        return out[name]

    for g in groups:
        expand(g, ())
    return out


_TOOL_KEYS = {
    "index-url", "extra-index-url", "find-links", "python", "prerelease", "index-strategy", "plugins", "plugin-path",
    "trusted-keys", "sandbox", "build", "sources", "publish-url", "workspace",
}
_BUILD_KEYS = {"network", "limits"}
_SANDBOX_KEYS = {"enabled", "network", "bind", "ro-bind", "env", "profile", "writable-project", "limits"}
PRERELEASE_MODES = ("allow", "disallow", "if-necessary", "explicit", "if-necessary-or-explicit")
# Which indexes a package's releases come from when several are configured (as uv names them):
# "first-index", the extra indexes in order and then the primary, and the first that knows the
# package is its only source (a name planted on another index cannot take it over); or
# "unsafe-best-match", every index's releases together, as pip does.
INDEX_STRATEGIES = ("first-index", "unsafe-best-match")


def _parse_sandbox(raw: Any, path: Path) -> SandboxConfig:
    if raw is None:
        return SandboxConfig()
    if not isinstance(raw, dict):
        raise _err(path, "tool.pypm.sandbox", "must be a table")
    unknown = set(raw) - _SANDBOX_KEYS
    if unknown:
        raise _err(path, "tool.pypm.sandbox", f"has unknown key(s) {', '.join(sorted(unknown))}",
                   hint=f"known keys: {', '.join(sorted(_SANDBOX_KEYS))}")
    enabled = raw.get("enabled", True)
    if not isinstance(enabled, bool):
        raise _err(path, "tool.pypm.sandbox.enabled", "must be true or false")
    network = raw.get("network", "none")
    if network not in ("none", "host"):
        raise _err(path, "tool.pypm.sandbox.network", f"is {network!r}; use \"none\" or \"host\"")
    profile = raw.get("profile", "default")
    if not isinstance(profile, str) or not profile:
        raise _err(path, "tool.pypm.sandbox.profile", "must be a profile name or a path to a JSON profile")
    wp = raw.get("writable-project", True)
    if not isinstance(wp, bool):
        raise _err(path, "tool.pypm.sandbox.writable-project", "must be true or false")
    env = _str_list(raw.get("env", []), path, "tool.pypm.sandbox.env")
    if env:  # refused here, not by the sandbox, so that the error names this file and key
        from sandbox.policy import env_entry_ok

        for item in env:
            if not env_entry_ok(item):
                raise _err(path, "tool.pypm.sandbox.env", f"holds {item!r}, which is not NAME or NAME=VALUE",
                           hint='write "NAME" to pass a variable through from the host, or "NAME=VALUE" to set it')
    return SandboxConfig(
        limits=_parse_limits(raw.get("limits", {}), path),
        enabled=enabled,
        network=network,
        bind=_str_list(raw.get("bind", []), path, "tool.pypm.sandbox.bind"),
        ro_bind=_str_list(raw.get("ro-bind", []), path, "tool.pypm.sandbox.ro-bind"),
        env=env,
        profile=profile,
        writable_project=wp,
    )


def _parse_limits(raw: Any, path: Path, key: str = "tool.pypm.sandbox.limits") -> tuple[tuple[str, int], ...]:
    """`[tool.pypm.sandbox.limits]` (or `[tool.pypm.build] limits`): name = value
    (sandbox.policy.LIMITS); "unlimited" sets none."""
    from sandbox.policy import LIMITS, limit_value

    if not isinstance(raw, dict):
        raise _err(path, key, "must be a table", hint='e.g. limits = { memory = "2G", cpu = 600, processes = 512 }')
    out = []
    for name, value in raw.items():
        if name not in LIMITS:
            raise _err(path, key, f"has unknown limit {name!r}", hint=f"known limits: {', '.join(LIMITS)}")
        try:
            n = limit_value(name, value)
        except ValueError as e:
            raise _err(path, f"{key}.{name}", str(e).removeprefix(f"{name} = "),
                       hint=f"{name}: {LIMITS[name][2]}") from None
        if n is not None:
            out.append((name, n))
    return tuple(sorted(out))


def _parse_tool(raw: Any, path: Path) -> ToolConfig:
    if raw is None:
        return ToolConfig()
    if not isinstance(raw, dict):
        raise _err(path, "tool.pypm", "must be a table")
    plugins = _str_list(raw.get("plugins", []), path, "tool.pypm.plugins")
    # A sub-table named after an enabled plugin is that plugin's configuration.
    plugin_tables = {k: v for k, v in raw.items() if k in plugins and isinstance(v, dict)}
    unknown = set(raw) - _TOOL_KEYS - set(plugin_tables)
    if unknown:
        raise _err(path, "tool.pypm", f"has unknown key(s) {', '.join(sorted(unknown))}",
                   hint=f"known keys: {', '.join(sorted(_TOOL_KEYS))}, or a table named after an enabled plugin")
    for key in ("index-url", "python", "prerelease", "publish-url", "index-strategy"):
        if key in raw and not isinstance(raw[key], str):
            raise _err(path, f"tool.pypm.{key}", "must be a string")
    if raw.get("index-strategy") is not None and raw["index-strategy"] not in INDEX_STRATEGIES:
        raise _err(path, "tool.pypm.index-strategy", f"is {raw['index-strategy']!r}",
                   hint=f"use one of {', '.join(INDEX_STRATEGIES)}")
    if raw.get("prerelease") is not None and raw["prerelease"] not in PRERELEASE_MODES:
        raise _err(path, "tool.pypm.prerelease", f"is {raw['prerelease']!r}",
                   hint=f"use one of {', '.join(PRERELEASE_MODES)}")
    extra = raw.get("extra-index-url", [])
    if isinstance(extra, str):
        extra = [extra]
    build = raw.get("build", {})
    if not isinstance(build, dict):
        raise _err(path, "tool.pypm.build", "must be a table")
    unknown = set(build) - _BUILD_KEYS
    if unknown:
        raise _err(path, "tool.pypm.build", f"has unknown key(s) {', '.join(sorted(unknown))}",
                   hint=f"known keys: {', '.join(sorted(_BUILD_KEYS))}")
    network = build.get("network", False)
    if not isinstance(network, bool) and not (isinstance(network, list) and all(isinstance(v, str) for v in network)):
        raise _err(path, "tool.pypm.build.network", f"is {network!r}; it must be true/false or a list of package names",
                   hint='e.g. network = ["pkg-that-downloads"], or network = true for every build')
    return ToolConfig(
        index_url=raw.get("index-url"),
        extra_index_urls=_str_list(extra, path, "tool.pypm.extra-index-url"),
        find_links=_str_list(raw.get("find-links", []), path, "tool.pypm.find-links"),
        python=raw.get("python"),
        prerelease=raw.get("prerelease"),
        index_strategy=raw.get("index-strategy"),
        plugins=plugins,
        plugin_path=_str_list(raw.get("plugin-path", []), path, "tool.pypm.plugin-path"),
        trusted_keys=_str_list(raw.get("trusted-keys", []), path, "tool.pypm.trusted-keys"),
        sandbox=_parse_sandbox(raw.get("sandbox"), path),
        build=build,
        build_limits=_parse_limits(build.get("limits", {}), path, "tool.pypm.build.limits"),
        plugin_config=plugin_tables,
        sources=_parse_sources(raw.get("sources", {}), path),
        publish_url=raw.get("publish-url"),
        **_parse_workspace(raw.get("workspace"), path),
    )


def _parse_workspace(raw: Any, path: Path) -> dict[str, Any]:
    """`[tool.pypm.workspace] members = [globs], exclude = [globs]`, as uv's `tool.uv.workspace`."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise _err(path, "tool.pypm.workspace", "must be a table", hint='e.g. members = ["packages/*"]')
    unknown = set(raw) - {"members", "exclude"}
    if unknown:
        raise _err(path, "tool.pypm.workspace", f"has unknown key(s) {', '.join(sorted(unknown))}",
                   hint="known keys: members, exclude")
    members = _str_list(raw.get("members", []), path, "tool.pypm.workspace.members")
    exclude = _str_list(raw.get("exclude", []), path, "tool.pypm.workspace.exclude")
    for key, globs in (("members", members), ("exclude", exclude)):
        for g in globs:
            if not g.strip() or Path(g).is_absolute() or ".." in Path(g).parts:
                raise _err(path, f"tool.pypm.workspace.{key}", f"holds {g!r}",
                           hint="members are directories below the workspace's root: relative globs such as "
                                "\"packages/*\", without `..`")
    return {"workspace": members, "workspace_exclude": exclude}


_SOURCE_KEYS = {"path", "editable", "workspace", "url", "git", "tag", "branch", "rev", "subdirectory", "index"}
_GIT_KEYS = {"git", "tag", "branch", "rev", "subdirectory"}
_SOURCE_HINT = ('e.g. lib = { path = "../lib" }, lib = { path = "../lib", editable = true }, '
                'lib = { url = "https://host/lib-1.0-py3-none-any.whl" }, '
                'lib = { git = "https://host/lib.git", tag = "v1.0" }, '
                'lib = { index = "https://host/simple/" } (that index only) or, for a member of the workspace, '
                'lib = { workspace = true }')


def _parse_sources(raw: Any, path: Path) -> tuple[tuple[str, str, bool], ...]:
    """`[tool.pypm.sources]`: NAME = { path = "...", editable = BOOL }, NAME = { url = "https://..." }
    (a wheel or sdist: the URL goes where the path would), NAME = { git = ..., tag = ... } ("git+"
    and its spec there), NAME = { index = URL } ("index+URL": that index only) or
    NAME = { workspace = true }, as uv's `tool.uv.sources` takes them. Only the shape is checked here (pure); pypm.pathdeps looks at
    the path or URL itself."""
    if not isinstance(raw, dict):
        raise _err(path, "tool.pypm.sources", "must be a table", hint=_SOURCE_HINT)
    out: dict[str, tuple[str, str, bool]] = {}
    for name, entry in raw.items():
        key = f"tool.pypm.sources.{name}"
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise _err(path, "tool.pypm.sources", f"has an invalid package name {name!r}", hint=_NAME_HINT)
        if not isinstance(entry, dict):
            raise _err(path, key, "must be a table", hint=_SOURCE_HINT)
        unknown = set(entry) - _SOURCE_KEYS
        if unknown:
            raise _err(path, key, f"has unknown key(s) {', '.join(sorted(unknown))}",
                       hint="pypm takes `path` (with `editable`), `url`, `git` (with `tag`, `branch`, `rev`, "
                            "`subdirectory`), `index` and `workspace`")
        workspace = entry.get("workspace", False)
        if workspace is not False and workspace is not True:
            raise _err(path, f"{key}.workspace", f"is {workspace!r}; it must be true or false")
        if workspace:
            given_too = next((k for k in ("path", "url", "git", "index") if k in entry), None)
            if given_too:
                raise _err(path, key, f"gives both `workspace = true` and a `{given_too}`",
                           hint="a workspace member's path comes from [tool.pypm.workspace] members; keep one")
            where = ""  # pypm.pathdeps looks the member up
        elif "index" in entry:
            if len(entry) > 1:
                raise _err(path, key, f"gives an `index` and {', '.join(f'`{k}`' for k in sorted(set(entry) - {'index'}))}",
                           hint="an `index` source names the only index the package comes from; nothing else goes with it")
            given = entry["index"]
            if not isinstance(given, str) or not given.startswith(("https://", "http://", "file://")):
                raise _err(path, f"{key}.index", f"is {given!r}; it must be the URL of a simple index "
                                                  "(https://, http:// or file://)", hint=_SOURCE_HINT)
            where = "index+" + given
        elif "git" in entry:
            others = set(entry) - _GIT_KEYS
            if others:
                raise _err(path, key, f"gives a `git` repository and {', '.join(f'`{k}`' for k in sorted(others))}",
                           hint="a git source takes `tag`, `branch` or `rev`, and `subdirectory`; it is never "
                                "editable")
            bad = next((k for k in sorted(entry) if not isinstance(entry[k], str) or not entry[k].strip()), None)
            if bad is not None:
                raise _err(path, f"{key}.{bad}", f"is {entry[bad]!r}; it must be a non-empty string", hint=_SOURCE_HINT)
            from .gitsource import from_source

            where = "git+" + from_source(entry["git"], entry, f"{path}: `{key}`").spec()
        elif set(entry) & (_GIT_KEYS - {"git"}):
            raise _err(path, key, f"gives {', '.join(f'`{k}`' for k in sorted(set(entry) & _GIT_KEYS))} without `git`",
                       hint=_SOURCE_HINT)
        elif "url" in entry:
            if "path" in entry or "editable" in entry:
                raise _err(path, key, f"gives both a `url` and {'a `path`' if 'path' in entry else '`editable`'}",
                           hint="a `url` names a wheel or sdist on a web server (never editable); keep one")
            given = entry["url"]
            if not isinstance(given, str) or not given.startswith(("https://", "http://")):
                raise _err(path, f"{key}.url", f"is {given!r}; it must be an http(s):// URL of a wheel or sdist",
                           hint="for a local file or directory use `path`")
            where = given
        else:
            given = entry.get("path")
            if not isinstance(given, str) or not given.strip():
                raise _err(path, f"{key}.path", "must be a non-empty string", hint=_SOURCE_HINT)
            where = given
        editable = entry.get("editable", bool(workspace))  # members are editable unless told not to be (as uv)
        if not isinstance(editable, bool):
            raise _err(path, f"{key}.editable", f"is {editable!r}; it must be true or false")
        c = _canon(name)
        if c in out:
            raise _err(path, "tool.pypm.sources", f"names {out[c][0]!r} twice (as {name!r} too)",
                       hint="keep one entry per package")
        out[c] = (c, where, editable)
    return tuple(out[c] for c in sorted(out))


def parse_pyproject(data: Mapping[str, Any], root: Path) -> Project:
    """Validate decoded pyproject.toml data into a Project (pure)."""
    path = root / PYPROJECT
    proj = data.get("project")
    if not isinstance(proj, dict):
        raise ProjectError(f"{path} has no [project] table",
                           hint="add [project] with at least `name`, or run `pypm init`")
    name = proj.get("name")
    if not isinstance(name, str) or not _NAME.fullmatch(name):  # fullmatch: `$` also matches before "\n"
        raise _err(path, "project.name", f"is {name!r}; it must be a valid distribution name (letters, digits, -_.)")
    dynamic = _str_list(proj.get("dynamic", []), path, "project.dynamic")
    version = proj.get("version")
    if version is None and "version" not in dynamic:
        raise _err(path, "project.version", "is missing", hint='set `version = "0.1.0"` or list "version" in `dynamic`')
    if version is not None:
        from packaging.version import InvalidVersion, Version

        if not isinstance(version, str):
            raise _err(path, "project.version", f"is {version!r}, not a string",
                       hint='write the version as a quoted string, e.g. version = "0.1.0"')
        try:
            Version(version)
        except InvalidVersion:
            raise _err(path, "project.version", f"is {version!r}, not a PEP 440 version") from None
    rp = proj.get("requires-python", "")
    if not isinstance(rp, str):
        raise _err(path, "project.requires-python", "must be a string such as \">=3.9\"")
    if rp:
        from packaging.specifiers import InvalidSpecifier, SpecifierSet

        try:
            SpecifierSet(rp)
        except InvalidSpecifier:
            raise _err(path, "project.requires-python", f"is {rp!r}, not a valid specifier",
                       hint='write e.g. ">=3.9"') from None
    deps = _requirements(proj.get("dependencies", []), path, "project.dependencies", refuse_self=_canon(name))
    opt_raw = proj.get("optional-dependencies", {})
    if not isinstance(opt_raw, dict):
        raise _err(path, "project.optional-dependencies", "must be a table of arrays")
    optional = {
        c: _requirements(opt_raw[k], path, f"project.optional-dependencies.{k}")
        for c, k in _checked_names(opt_raw, path, "project.optional-dependencies", "extra").items()
    }
    groups = _expand_groups(data.get("dependency-groups") or {}, path)
    bs = data.get("build-system")
    if bs is not None and not isinstance(bs, dict):
        raise _err(path, "build-system", "must be a table")
    if bs is not None:
        _requirements(bs.get("requires", []), path, "build-system.requires")
        if "build-backend" in bs and not isinstance(bs["build-backend"], str):
            raise _err(path, "build-system.build-backend", "must be a string",
                       hint='name the backend object, e.g. build-backend = "setuptools.build_meta"')
        if "backend-path" in bs:
            _str_list(bs["backend-path"], path, "build-system.backend-path")
    tool_table = data.get("tool") or {}
    if not isinstance(tool_table, dict):
        raise _err(path, "tool", "must be a table", hint="write it as [tool.pypm] (or remove the `tool` key)")
    tool = _parse_tool(tool_table.get("pypm"), path)
    return Project(
        root=root,
        name=name,
        version=str(version) if version is not None else None,
        dynamic=dynamic,
        requires_python=rp,
        dependencies=deps,
        optional_dependencies=optional,
        dependency_groups=groups,
        build_system=bs,
        tool=tool,
    )


def find_project_root(start: Path) -> Path:
    """The nearest directory at or above `start` holding a pyproject.toml."""
    start = start.resolve()
    if not start.is_dir():  # only -C/--directory can name one (the working directory exists)
        what = "is not a directory" if start.exists() else "does not exist"
        raise ProjectError(f"{start} {what}", hint="check the -C/--directory path")
    for d in (start, *start.parents):
        if (d / PYPROJECT).is_file():
            if d != start:
                _refuse_foreign(d / PYPROJECT, start)
            return d
        if (d / PYPROJECT).exists():  # a directory (or a fifo...) by that name: say so, not "none found"
            raise ProjectError(f"{d / PYPROJECT} is not a file",
                               hint=f"remove or rename {d / PYPROJECT}, then create the file with `pypm init`")
    raise ProjectError(f"no {PYPROJECT} found in {start} or any parent directory",
                       hint="run `pypm init` to create one, or pass -C/--directory DIR")


def _refuse_foreign(pyproject: Path, start: Path) -> None:
    """A ProjectError when `pyproject` (found above `start`) is another user's: fastpath.owner_trusted."""
    from .fastpath import owner_trusted

    st = pyproject.stat()
    if not owner_trusted(st):
        raise ProjectError(f"{pyproject} is owned by uid {st.st_uid}, not by you: pypm does not use a project found "
                           f"above {start} that another user controls (it would run that user's choice of "
                           "interpreter, packages and sandbox settings)",
                           hint=f"run pypm inside a project you own, or name this one explicitly with -C {pyproject.parent}")


def nearest_workspace(start: Path) -> Project | None:
    """The nearest workspace above `start` (an ancestor whose pyproject.toml has
    [tool.pypm.workspace]), loaded; None when there is none, or when the nearest candidate is
    another user's (see fastpath.owner_trusted: it is not this project's workspace, nor is any
    above it)."""
    for d in start.resolve().parents:
        path = d / PYPROJECT
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        if "workspace" not in text:  # (most ancestors' files: no TOML parse)
            continue
        from .fastpath import owner_trusted

        if not owner_trusted(path.stat()):
            return None
        try:
            workspace = load_project(d)
        except ProjectError:
            continue  # not a workspace this command can use
        if workspace.tool.workspace is not None:
            return workspace
    return None


def find_workspace(root: Path) -> tuple[Path, str] | None:
    """(the workspace's root, this member's normalised name) when the project at `root` is a member
    of a workspace above it (the nearest ancestor with [tool.pypm.workspace] whose members include
    `root`, as uv finds one); None otherwise. Reads a few files: the full path only, never `run`'s
    fast path (whose .venv check fails in a member's directory first)."""
    workspace = nearest_workspace(root)
    if workspace is None:
        return None
    from .pathdeps import workspace_members

    root = root.resolve()
    for name, rel in workspace_members(workspace).items():
        if (workspace.root / rel).resolve() == root:
            return workspace.root, name
    return None  # the nearest workspace does not list it: a project of its own (as uv)


def load_project(root: Path) -> Project:
    import tomllib

    path = root / PYPROJECT
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ProjectError(f"{path} does not exist", hint="run `pypm init` or pass -C/--directory DIR") from None
    except UnicodeDecodeError as e:
        raise ProjectError(f"{path} is not UTF-8 text ({e})") from None
    except OSError as e:  # a directory, no permission, an I/O error
        raise ProjectError(f"cannot read {path}: {e.strerror or e}",
                           hint=f"{PYPROJECT} must be a readable file") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        loc = toml_error_location(e)
        msg = re.sub(r"\s*\(at line \d+, column \d+\)", "", str(e))
        raise ProjectError(f"{path}:{loc}: invalid TOML: {msg}" if loc else f"{path}: invalid TOML: {msg}",
                           hint="fix the syntax at that position") from None
    return parse_pyproject(data, root)


def content_hash(project: Project, options: Mapping[str, Any], sources: Mapping[str, Any]) -> str:
    """sha256 of a canonical form of every input that affects resolution.

    `options`: resolution options (prerelease, exclude-newer, no-build, no-binary, ...).
    `sources`: index-url, extra-index-urls and find-links as resolved for this lock.
    Anything not passed here does not invalidate the lock; add new inputs here, not elsewhere.
    """
    canon = {
        "name": project.normalized_name,
        "requires-python": project.requires_python,
        "dependencies": sorted(project.dependencies),
        "optional-dependencies": {k: sorted(v) for k, v in sorted(project.optional_dependencies.items())},
        "dependency-groups": {k: sorted(v) for k, v in sorted(project.dependency_groups.items())},
        "build-system": (project.build_system or {}).get("requires", None),
        "build-network": project.tool.build.get("network", None),
        "sources": {k: sources[k] for k in sorted(sources)},
        "options": {k: options[k] for k in sorted(options) if options[k] not in (None, False, (), [])},
    }
    blob = json.dumps(canon, sort_keys=True, separators=(",", ":"), default=str)
    return "sha256:" + hashlib.sha256(blob.encode()).hexdigest()
