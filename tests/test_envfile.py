"""pypm.envfile: the dotenv subset `pypm run --env-file` reads, and its errors."""

from __future__ import annotations

import pytest

from pypm.envfile import read_env_files
from pypm.errors import ProjectError, UsageError


def _read(tmp_path, text: str) -> dict[str, str]:
    path = tmp_path / "x.env"
    path.write_text(text)
    return read_env_files([(str(path), "x.env")])


def test_the_common_forms(tmp_path) -> None:
    got = _read(tmp_path, "\n".join([
        "# a comment", "", "A=1", "export B=two words  ", "C = spaced", "D=value # comment", "E=a#b",
        "F='single $x \\n kept'  # comment", 'G="tab\\tnew\\nquote\\" back\\\\ dollar\\$"', "H=", 'I=""',
        "\tJ=indented", "K==starts with equals",
    ]) + "\n")
    assert got == {"A": "1", "B": "two words", "C": "spaced", "D": "value", "E": "a#b",
                   "F": "single $x \\n kept", "G": 'tab\tnew\nquote" back\\ dollar$', "H": "", "I": "",
                   "J": "indented", "K": "=starts with equals"}


def test_later_lines_and_files_win(tmp_path) -> None:
    (tmp_path / "a.env").write_text("X=1\nX=2\nY=a\n")
    (tmp_path / "b.env").write_text("Y=b\n")
    assert read_env_files([(str(tmp_path / "a.env"), "a.env"), (str(tmp_path / "b.env"), "b.env")]) == {"X": "2", "Y": "b"}


@pytest.mark.parametrize("text, words", [
    ("no equals here\n", ":1: expected NAME=VALUE"),
    ("1BAD=x\n", ":1: expected NAME=VALUE"),
    ("OK=1\nA-B=x\n", ":2: expected NAME=VALUE"),
    ("A=${HOME}/x\n", ":1: ${...} interpolation is not supported"),
    ('A="${HOME}"\n', ":1: ${...} interpolation is not supported"),
    ('A="open\n', ":1: the quote \" is not closed on its line"),
    ("A='x' y\n", ":1: text after the closing quote: 'y'"),
])
def test_what_it_refuses_names_the_line(tmp_path, text: str, words: str) -> None:
    with pytest.raises(ProjectError) as ei:
        _read(tmp_path, text)
    assert str(tmp_path / "x.env") + words in ei.value.message and ei.value.hint


def test_a_missing_or_unreadable_file(tmp_path) -> None:
    with pytest.raises(UsageError, match=r"--env-file nope.env: no such file"):
        read_env_files([(str(tmp_path / "nope.env"), "nope.env")])
    (tmp_path / "bin.env").write_bytes(b"A=\xff\n")
    with pytest.raises(UsageError, match=r"--env-file bin.env: cannot read .*bin.env"):
        read_env_files([(str(tmp_path / "bin.env"), "bin.env")])
