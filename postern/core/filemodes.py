"""Postern's files are its user's alone.

The data directory holds every tenant's mail (the SQLite database and its ``-wal`` and
``-shm``), the key that seals DKIM private keys, and the bell sockets. The CLI sets
the umask to 0o077 before anything else, so every file and directory Postern and its
children (API workers, services, forked listeners) create is 0600/0700 whatever the
shell's umask; ``tighten_data_dir`` takes group and other permissions off what an older
version (or another umask) left behind, and says so in the log.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

log = logging.getLogger("postern.filemodes")

#: No permission for group or others on anything created from now on.
PRIVATE_UMASK = 0o077
#: Files of a SQLite database beside the main one (db.py's writer lock included).
SQLITE_SIBLINGS = ("", "-wal", "-shm", "-journal", "-writer.lock")


def restrict_new_files() -> None:
    """Make every file this process and its children create private to its user."""
    os.umask(PRIVATE_UMASK)


def tighten_data_dir(config) -> list[str]:
    """Take group and other permissions off ``config.data_dir``, everything under it,
    and the SQLite database's files wherever ``database.url`` puts them. Returns (and
    logs) what was changed; nothing when all was already private."""
    paths: list[Path] = []
    root = Path(config.data_dir)
    if root.is_dir():
        paths.append(root)
        for directory, dirnames, filenames in os.walk(root):  # symlinks are not followed
            paths += [Path(directory, name) for name in (*dirnames, *filenames)]
    url = config.database_url
    if url.startswith("sqlite:///") and url != "sqlite:///:memory:":
        database = Path(url[len("sqlite:///") :])
        paths += [Path(f"{database}{suffix}") for suffix in SQLITE_SIBLINGS]
    changed = []
    for path in dict.fromkeys(paths):  # the database is often under data_dir too
        try:
            mode = path.lstat().st_mode
        except (FileNotFoundError, NotADirectoryError):  # open_database says why, naming the path
            continue
        if stat.S_ISLNK(mode) or not mode & 0o077:
            continue
        os.chmod(path, stat.S_IMODE(mode) & ~0o077)
        changed.append(f"{path} {stat.S_IMODE(mode):04o}->{stat.S_IMODE(mode) & ~0o077:04o}")
    if changed:
        log.warning(
            "made %d file(s) in the data directory private to this user (they hold every tenant's mail "
            "and Postern's keys; other users could read them): %s",
            len(changed),
            ", ".join(changed[:20]) + (f" and {len(changed) - 20} more" if len(changed) > 20 else ""),
        )
    return changed
