"""pypm.locktoml: the lock writer's own layout read through the JSON decoder, everything else
passed on to tomllib -- never a document read differently from tomllib, never an invalid one
accepted."""

from __future__ import annotations

import difflib
import random
import tomllib
from pathlib import Path

import pytest

from pypm.errors import LockError
from pypm.lockfile import Dependency, FileEntry, Lock, LockedPackage, dumps, loads
from pypm.locktoml import Unsupported
from pypm.locktoml import loads as fast_loads
from tests.test_lockfile import sample_lock

ODD_STRINGS = ['a "quoted" \\ back\\slash', "ünïcode ✓ 𝔘", "tab\tand\nnewline\x01ctl", "a = b", "x, name = y",
               "{ url = z }", "]", "[[package]]", "# not a comment", "'single'", "\\u0041 literally"]


def _big_lock(rng: random.Random) -> Lock:
    """A lock of the writer's with many packages, markers, extras, sdists and wheels."""
    pkgs = []
    for i in range(60):
        name = f"pkg-{i}"
        marker = rng.choice([None, 'python_version < "3.12"', 'sys_platform == "linux" and extra == "x"'])
        wheels = [FileEntry(f"{name}-1.{i}-py3-none-{tag}.whl", f"http://127.0.0.1:1/f/{name}/{tag}.whl",
                            f"{rng.getrandbits(256):064x}", rng.choice([None, rng.randrange(10**9)]))
                  for tag in ("any", "manylinux_2_17_x86_64", "win_amd64")[: rng.randint(0, 3)]]
        sdist = FileEntry(f"{name}-1.{i}.tar.gz", f"http://127.0.0.1:1/f/{name}.tar.gz", f"{rng.getrandbits(256):064x}",
                          7) if rng.random() < 0.5 else None
        deps = [Dependency(f"pkg-{j}", f"1.{j}", rng.choice([None, 'os_name == "posix"']),
                           tuple(rng.sample(["a", "b", "c"], rng.randint(0, 2))))
                for j in rng.sample(range(60), rng.randint(0, 5))]
        pkgs.append(LockedPackage(name=name, version=f"1.{i}", source={"registry": "http://127.0.0.1:1/simple/"},
                                  marker=marker, main=rng.random() < 0.8, groups=["dev"] if i % 7 == 0 else [],
                                  extras=["x"] if i % 5 == 0 else [], dependencies=deps, sdist=sdist, wheels=wheels,
                                  optional_dependencies={"x": deps[:1]} if i % 5 == 0 else {}))
    pkgs.append(LockedPackage(name="odd", version="1", source={"path": rng.choice(ODD_STRINGS)},
                              build_network=True, sdist=FileEntry("odd-1.tar.gz", "file:///o.tar.gz", "b" * 64)))
    return Lock(requires_python=">=3.9", content_hash="sha256:" + "1" * 64, packages=pkgs,
                options={"prerelease": "allow"}, resolution_markers=['python_version >= "3.10"'])


@pytest.mark.parametrize("seed", range(4))
def test_the_writers_output_is_read_as_tomllib_reads_it(seed: int) -> None:
    for lock in (sample_lock(), _big_lock(random.Random(seed))):
        text = dumps(lock)
        want = tomllib.loads(text)
        try:
            got = fast_loads(text)
        except Unsupported:
            # only a string the writer had to write with " = " or a known key inside may send it on
            assert seed and any(s in text for s in ('" = ', "a = b", "name = y", "url = z")), text
            continue
        assert got == want
        assert loads(text) == loads(text.replace("\n", "\r\n"))  # the same Lock either way (CRLF: tomllib)


def test_the_writers_usual_output_takes_the_fast_path() -> None:
    assert fast_loads(dumps(sample_lock())) == tomllib.loads(dumps(sample_lock()))
    lock = _big_lock(random.Random(0))
    text = dumps(lock)
    assert "a = b" not in text and fast_loads(text) == tomllib.loads(text)


# Valid TOML, not the writer's layout: passed on, and read by tomllib (lockfile.loads gives its answer).
VALID_ELSEWHERE = [
    "version = 1 # a comment",
    "a.b = 1",
    '"a" = 1',
    "a = 'literal'",
    'a = """multi\nline"""',
    "a = 1979-05-27",
    "a = +1",
    "a = 1_000",
    "a = inf",
    "a = nan",
    "a = 0x10",
    'a = "tab\there"',
    'a = "\\U0001F600"',
    "x = { other = 1 }",
    'x = { name = "a", other = 1 }',
    'x = "a, name = b"',
    'x = "k = v"',
    'x = ["a", "b",]',
    "a = 1\r\n[t]\r\nb = 2\r\n",
    "a = [\n    1,\n# inside\n    2,\n]",
    "[a.b]\nc = 1\n[a]\nd = 2",
    'deps = [\n    { name = "a" }, { name = "b" },\n]',
    'x = {name = "a"}',
    'x = { "weird key" = 1 }',
    "x=1",
    "  x = 1",
    "[ t ]\nx = 1",
    "a = [\n    1\n]",
]

INVALID = [
    'a = "x\\/y"',
    "a = NaN",
    'a = "\x7f"',
    'a = "\\ud800"',
    'x = { name = "a", name = "b" }',
    "a = 1\na = 2",
    "[t]\n[t]",
    'src = { name = "a" }\n[src.x]',
    "p = [1]\n[[p]]",
    'x = { "name = "a" }',
    'x = { name = "a","version = "1" }',
    'x = {  = name = "a" }',
    'x = { name =  = "a" }',
    'deps = [\n    { name = "a"\n, version = "1" },\n]',
    'deps = [\n    { name = "a\n" },\n]',
    'version = \r"1"',
    'x = { name =  = a", version = "1" }',
    'a = [\n    "a\n", "b",\n]',
    "a = [\n    1,",
    "[[package]\n",
]


@pytest.mark.parametrize("text", VALID_ELSEWHERE)
def test_other_valid_toml_is_passed_on_to_tomllib(text: str) -> None:
    want = tomllib.loads(text)  # (valid)
    with pytest.raises(Unsupported):
        fast_loads(text)
    assert want is not None


@pytest.mark.parametrize("text", INVALID)
def test_invalid_toml_is_never_accepted(text: str) -> None:
    with pytest.raises(tomllib.TOMLDecodeError):
        tomllib.loads(text)
    with pytest.raises(Unsupported):
        fast_loads(text)
    with pytest.raises(LockError, match="not valid TOML"):
        loads(text, Path("/p/pypm.lock"))


def test_a_lock_with_a_comment_after_a_value_is_read_through_tomllib() -> None:
    text = dumps(sample_lock()).replace('requires-python = ">=3.9"', 'requires-python = ">=3.9"  # why')
    assert loads(text) == loads(dumps(sample_lock()))


def test_mutated_locks_are_read_as_tomllib_reads_them_or_passed_on() -> None:
    """Random small edits of a real lock: whatever the fast path accepts, tomllib reads the same."""
    base = dumps(sample_lock())
    pieces = ['"', "\\", " ", "=", ",", "{", "}", "[", "]", "#", ".", "\n", "'", "a", "1", "\t", "\x7f", " = ",
              ", name = ", "{ url = ", "\\u", "/", "e", "+", "-", "\r"]
    rng = random.Random(8)
    accepted = 0
    for _ in range(4000):
        text = base
        for _ in range(rng.randint(1, 3)):
            pos = rng.randrange(len(text) + 1)
            op = rng.random()
            if op < 0.4:
                text = text[:pos] + rng.choice(pieces) + text[pos:]
            elif op < 0.7:
                text = text[:pos] + text[pos + rng.randint(1, 3):]
            else:
                text = text[:pos] + rng.choice(pieces) + text[pos + 1:]
        try:
            got = fast_loads(text)
        except Unsupported:
            continue
        accepted += 1
        diff = "".join(difflib.unified_diff(base.splitlines(True), text.splitlines(True)))
        try:
            want = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            pytest.fail(f"accepted a document tomllib refuses ({e}):\n{diff}")
        assert got == want, diff
    assert accepted > 500  # the edits that keep the layout (inside strings, names) took the fast path


def test_every_inline_key_the_writer_writes_is_one_the_reader_knows() -> None:
    """Each source kind, every field of a dependency and of a file: the fast path reads it (a key
    added to the writer and not to locktoml._KEYS would only send every lock to tomllib)."""
    dep = Dependency("b", "1", 'os_name == "posix"', ("x",))
    f = FileEntry("a-1-py3-none-any.whl", "http://127.0.0.1:1/a.whl", "c" * 64, 5)
    sources = [{"registry": "http://127.0.0.1:1/simple/"}, {"find-links": "./wheels"}, {"editable": "."},
               {"virtual": "."}, {"path": "../a"}, {"url": "http://127.0.0.1:1/a.whl"}]
    pkgs = [LockedPackage(name=f"a{i}", version="1", source=src, marker='python_version > "3"', main=True,
                          extras=["x"], groups=["g"], dependencies=[dep], optional_dependencies={"x": [dep]},
                          dependency_groups={"g": [dep]}, sdist=f, wheels=[f], build_dependencies=[dep],
                          build_network=True) for i, src in enumerate(sources)]
    text = dumps(Lock(requires_python=">=3.9", content_hash="sha256:" + "1" * 64, packages=pkgs))
    assert fast_loads(text) == tomllib.loads(text)
