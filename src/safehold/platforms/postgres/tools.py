"""The PostgreSQL client tools matched to a server: ``find_tool``.

``pg_dump`` reads only servers of its own major version or older, and ``pg_restore`` reads only
archives of its version or older; Debian installs every major side by side under
``/usr/lib/postgresql/MAJOR/bin``. So the tool chosen is the one of the server's major version
when installed, otherwise the oldest newer one; when every installed one is older, the backup is
refused with PostgresToolTooOld naming both versions (pg_dump would refuse anyway, later and less
clearly).
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
from dataclasses import dataclass

from ...errors import PostgresError, PostgresToolTooOld
from .connection import major_of, version_text

_VERSION = re.compile(r"\(PostgreSQL\)\s+((\d+)(?:\.(\d+))?\S*)")


@dataclass(frozen=True)
class Tool:
    path: str
    major: int  # 15; 9.6 as 906
    version: str  # as the tool prints it, e.g. 15.18


def _candidates(name: str, bin_dir: str | None) -> list[str]:
    if bin_dir:
        return [os.path.join(bin_dir, name)]
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    on_path = shutil.which(name)
    if on_path:
        found.append(on_path)
    return found


def tool_version(path: str) -> Tool | None:
    try:
        output = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = _VERSION.search(output)
    if match is None:
        return None
    first, second = int(match.group(2)), int(match.group(3) or 0)
    major = first if first >= 10 else first * 100 + second
    return Tool(path=path, major=major, version=match.group(1))


def installed(name: str, bin_dir: str | None = None) -> list[Tool]:
    """Every ``name`` tool found (in ``bin_dir``, or Debian's folders and PATH), oldest first."""
    tools = [tool for tool in (tool_version(path) for path in _candidates(name, bin_dir)) if tool is not None]
    return sorted(tools, key=lambda tool: tool.major)


def find_tool(name: str, server_version: int, bin_dir: str | None = None, server: str = "") -> Tool:
    """The ``name`` tool (pg_dump, pg_dumpall, pg_restore, pg_basebackup) for a server of
    ``server_version`` (150018): its own major if installed, else the oldest newer one."""
    server_major = major_of(server_version)
    tools = installed(name, bin_dir)
    if not tools:
        where = bin_dir or "/usr/lib/postgresql/*/bin or PATH"
        raise PostgresError(server=server or "(any)", detail=f"{name} not found in {where}; install the "
                            f"PostgreSQL {version_text(server_version).split('.')[0]} client tools")
    usable = sorted((tool for tool in tools if tool.major >= server_major), key=lambda tool: tool.major)
    if not usable:
        newest = max(tools, key=lambda tool: tool.major)
        raise PostgresToolTooOld(tool=name, path=newest.path, tool_version=newest.version, server=server,
                                 server_version=version_text(server_version), major=server_major)
    return usable[0]
