"""Whether the config file changed: its identity (inode, size, modification time), following
symlinks, so an edit in place, an editor's rename-on-save and a Kubernetes ConfigMap's symlink
swap all count. Polled (`serve()` asks every `reload.watch_interval`): a stat a second costs
nothing, and unlike inotify it needs no watch on the parent directory to see a replaced file.
"""

from __future__ import annotations

import os


def identity(path: str) -> tuple[int, int, int] | None:
    try:
        info = os.stat(path)
    except OSError:
        return None
    return info.st_ino, info.st_size, info.st_mtime_ns


class FileWatch:
    def __init__(self, path: str) -> None:
        self.path = path
        self._seen = identity(path)

    def changed(self) -> bool:
        """True once for each change since the last call (a missing file is not a change: an
        editor may be between removing and renaming)."""
        now = identity(self.path)
        if now is None or now == self._seen:
            return False
        self._seen = now
        return True
