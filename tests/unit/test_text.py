"""printable: names from snapshots are escaped before they are printed."""

from __future__ import annotations

import pytest

from safehold.text import printable


@pytest.mark.parametrize(("name", "shown"), [
    ("plain name.txt", "plain name.txt"),
    ("caf\u00e9", "caf\u00e9"),
    ("\x1b[2Jclear", "\\x1b[2Jclear"),
    ("bell\x07", "bell\\x07"),
    ("c1\x9b31m", "c1\\x9b31m"),
    ("new\nline", "new\\nline".replace("\\n", "\\x0a")),
    ("rtl\u202egnp.exe", "rtl\\u202egnp.exe"),
    ("back\\slash", "back\\\\slash"),
    (b"raw\xffbyte", "raw\\xffbyte"),
    (b"esc\x1b", "esc\\x1b"),
])
def test_printable_escapes_what_a_terminal_would_act_on(name, shown) -> None:
    assert printable(name) == shown
    assert printable(name).isprintable()
