"""Who owns a staging or trash entry: ``<id>.<host>-<pid>.<random>`` names.

Folders shared by several processes (API replicas, workers) hold each one's in-flight entries.
An entry whose owner is a dead process on this machine was abandoned by a crash and can go at
once; another machine's entries can only go when they are old.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

_HOST = socket.gethostname().replace(".", "_").replace("-", "_")[:40] or "host"


def owner_tag() -> str:
    """This process, as it appears in the names of the entries it creates."""
    return f"{_HOST}-{os.getpid()}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: alive
    return True


def abandoned_here(entry: Path) -> bool:
    """True when ``entry`` was made by a process on this machine that no longer runs."""
    parts = entry.name.split(".")
    if len(parts) < 3:
        return False
    host, _, pid = parts[1].rpartition("-")
    if host != _HOST or not pid.isdigit():
        return False
    return int(pid) != os.getpid() and not _alive(int(pid))
