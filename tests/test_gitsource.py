"""pypm.gitsource's parsing: PEP 508 git URLs, `{ git = ... }` sources and the lock's form."""

from __future__ import annotations

import pytest

from pypm.errors import ProjectError
from pypm.gitsource import GitRef, from_source, from_spec, parse_lock_source, parse_requirement_url

COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.mark.parametrize("url, ref", [
    ("git+https://host/org/lib.git", GitRef("https://host/org/lib.git")),
    ("git+https://host/org/lib.git@v1.0", GitRef("https://host/org/lib.git", "rev", "v1.0")),
    ("git+https://host/lib.git@release/2.x#subdirectory=py/lib",
     GitRef("https://host/lib.git", "rev", "release/2.x", "py/lib")),
    # the user of an ssh URL is in the netloc; the revision follows the path's last @
    ("git+ssh://git@host/org/lib.git@4f2a9c1", GitRef("ssh://git@host/org/lib.git", "rev", "4f2a9c1")),
    ("git+file:///srv/repos/lib@main#egg=lib", GitRef("file:///srv/repos/lib", "rev", "main")),
])
def test_requirement_urls(url, ref):
    assert parse_requirement_url(url, "here") == ref


@pytest.mark.parametrize("url, message", [
    ("git+ftp://host/lib.git", "over https, http, ssh or file URLs"),
    ("git+ext::sh -c touch% /tmp/pwned", "over https, http, ssh or file URLs"),  # git's ext:: runs commands
    ("git+https://user:secret@host/lib.git", "carries a password"),
    ("git+ssh://-oProxyCommand=touch%20x/lib.git", "cannot start with '-'"),
    ("git+https://host/lib.git@", "an empty revision"),
    ("git+https://host/lib.git#subdirectory=../x", "must be a relative path inside the repository"),
    ("git+https://host/lib.git#branch=main", "is not #subdirectory=..."),
])
def test_bad_requirement_urls(url, message):
    with pytest.raises(ProjectError) as e:
        parse_requirement_url(url, "here")
    assert message in e.value.message and e.value.message.startswith("here: ")


def test_source_tables_and_the_lock_form_round_trip():
    ref = from_source("https://host/lib.git", {"git": "https://host/lib.git", "tag": "v1 beta/2", "subdirectory": "py"},
                      "src")
    assert ref == GitRef("https://host/lib.git", "tag", "v1 beta/2", "py")
    assert ref.spec() == "https://host/lib.git?tag=v1%20beta/2&subdirectory=py"
    assert from_spec(ref.spec()) == ref
    assert parse_lock_source(f"{ref.spec()}#{COMMIT}", "pypm.lock") == (ref, COMMIT)
    assert ref.pep508(COMMIT) == f"git+https://host/lib.git@{COMMIT}#subdirectory=py"
    plain = from_source("https://host/lib.git", {"git": "https://host/lib.git"}, "src")
    assert plain.spec() == "https://host/lib.git" and from_spec(plain.spec()) == plain
    with pytest.raises(ProjectError, match="give at most one"):
        from_source("https://host/lib.git", {"tag": "a", "rev": "b"}, "src")


@pytest.mark.parametrize("text", [
    "https://host/lib.git",  # no commit
    "https://host/lib.git#0123",  # not 40 hex digits
    f"https://host/lib.git?tag=a&branch=b#{COMMIT}",
    f"https://host/lib.git?depth=1#{COMMIT}",
])
def test_a_malformed_lock_source_is_refused(text):
    with pytest.raises(ProjectError, match="re-create the lock|is not URL"):
        parse_lock_source(text, "pypm.lock")


@pytest.mark.parametrize("text, message", [
    (f"--upload-pack=touch /tmp/pwned#{COMMIT}", "over https, http, ssh or file URLs"),  # would be a git option
    (f"ext::sh -c touch#{COMMIT}", "over https, http, ssh or file URLs"),
    (f"https://host/lib.git?subdirectory=../../etc#{COMMIT}", "must be a relative path inside the repository"),
])
def test_a_lock_source_is_held_to_what_a_pyproject_may_say(text, message):
    # a pypm.lock from a pull request reaches git at sync time: nothing there may become an option
    with pytest.raises(ProjectError) as e:
        parse_lock_source(text, "pypm.lock")
    assert message in e.value.message
