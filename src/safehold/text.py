"""Names from snapshots, made safe to print.

A snapshot is hostile input, and its file names can hold anything but '/' and NUL: escape
sequences that move the cursor, rewrite the title bar or hide the lines above, bidirectional
overrides that reorder what is shown. Everything that prints such a name to a terminal or into a
job log passes it through :func:`printable` first.
"""

from __future__ import annotations

import os


def printable(name: str | bytes) -> str:
    """``name`` with every non-printable character written as a Python-style escape.

    Backslashes are doubled, so the escaped form is unambiguous: ``a\\x1bb`` is a name holding
    an ESC, ``a\\\\x1bb`` one holding a backslash. Undecodable bytes show as ``\\xNN``.
    """
    if isinstance(name, bytes):
        name = os.fsdecode(name)
    if name.isprintable() and "\\" not in name:
        return name  # the common case, without building a new string
    out = []
    for char in name:
        if char == "\\":
            out.append("\\\\")
        elif char.isprintable():
            out.append(char)
        elif 0xDC80 <= ord(char) <= 0xDCFF:  # an undecodable byte, kept by surrogateescape
            out.append(f"\\x{ord(char) - 0xDC00:02x}")
        elif ord(char) <= 0xFF:
            out.append(f"\\x{ord(char):02x}")
        elif ord(char) <= 0xFFFF:
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(f"\\U{ord(char):08x}")
    return "".join(out)
