"""pypm.locking: the options a lock records, read back."""

from __future__ import annotations

import pytest

from pypm.errors import LockError
from pypm.locking import LockOptions


def test_recorded_options_round_trip() -> None:
    o = LockOptions(index_url="http://127.0.0.1:1/simple/", extra_index_urls=("http://127.0.0.1:2/simple/",),
                    find_links=("/wheels",), prerelease="allow", no_build=True, exclude_newer="2026-01-01T00:00:00Z")
    back = LockOptions.from_recorded(o.recorded())
    assert (back.index_url, back.extra_index_urls, back.find_links, back.prerelease, back.no_build, back.no_binary,
            back.exclude_newer) == (o.index_url, o.extra_index_urls, o.find_links, "allow", True, False,
                                    "2026-01-01T00:00:00Z")


@pytest.mark.parametrize("options, needle", [
    ({"find-links": "/wheels"}, "[options] find-links must be an array of strings, not '/wheels'"),
    ({"extra-index-url": ["ok", 3]}, "[options] extra-index-url must be an array of strings"),
    ({"index-url": ["http://x/"]}, "[options] index-url must be a string"),
    ({"exclude-newer": 2026}, "[options] exclude-newer must be a string"),
    ({"no-build": "yes"}, "[options] no-build must be true or false"),
])
def test_a_recorded_option_of_the_wrong_type_names_the_key(options: dict[str, object], needle: str) -> None:
    # Not a string read as one find-links source per character, nor a truthy "yes".
    with pytest.raises(LockError) as e:
        LockOptions.from_recorded(options)
    assert needle in str(e.value) and str(e.value).startswith("pypm.lock: ")
    assert e.value.hint and "pypm lock" in e.value.hint
