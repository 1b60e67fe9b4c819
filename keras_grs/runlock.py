"""One run, one owner: an exclusive lock on a run directory.

A second process that points at a directory in use is refused at once, with the holder's pid, host and start time::

    >>> import tempfile
    >>> from keras_grs.runlock import RunLock, RunLocked
    >>> directory = tempfile.mkdtemp()
    >>> with RunLock(directory):
    ...     try:
    ...         RunLock(directory).acquire()
    ...     except RunLocked as error:
    ...         print("refused")
    refused

Why this is race-free: the lock is ``fcntl.flock(LOCK_EX | LOCK_NB)`` on the file ``.keras-grs.lock`` in the
directory. The kernel grants it to exactly one open file description at a time, whatever the timing, so of two
processes started at the same instant exactly one gets it. It is released by the kernel when its holder exits,
however it exits (SIGKILL included), so a dead holder never blocks a new run: its stale lock file is simply locked
again and its description overwritten, with no pid guessing. Because the lock file is removed on release, a process
that opened the old file just before it was removed could lock an orphaned inode; after locking, the path is
therefore checked to still name the locked inode, and the attempt retried otherwise. A directory that does not
exist is created already locked (made under a private name, its lock file locked, then renamed into place), so
that the process that created it is the one holding it, and removes it on release if nothing was written.

Limits: ``flock`` is per host on some network file systems (older NFS, some FUSE); a run directory shared between
machines is protected only where the file system forwards ``flock`` (NFSv4 on Linux does).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import socket
import time
from datetime import datetime, timezone
from pathlib import Path

LOCK_FILE = ".keras-grs.lock"


class RunLocked(RuntimeError):
    """The directory is held by another live process."""

    def __init__(self, directory, holder: dict):
        self.directory = str(directory)
        self.holder = holder
        who = f"pid {holder.get('pid', '?')} on host {holder.get('host', '?')}"
        since = f", since {holder['started']}" if holder.get("started") else ""
        command = f" ({holder['command']})" if holder.get("command") else ""
        super().__init__(f"{self.directory!r} is in use by another keras-grs process: {who}{since}{command}; wait for "
                         "it to finish or stop it, or choose another directory")


def holder_of(directory) -> dict:
    """What the lock file of ``directory`` says about its holder (empty when unreadable)."""
    try:
        return json.loads((Path(directory) / LOCK_FILE).read_text())
    except (OSError, ValueError):
        return {}


class RunLock:
    """An exclusive, non-blocking lock on ``directory`` (created if missing), held until :meth:`release`.

    Use it as a context manager. Acquiring it again in the same process through another ``RunLock`` is refused like
    any other holder: one run, one owner.

    Args:
        directory: the run directory (or keras-tuner project directory) to own.
        command: a short description of the holder, shown to processes that are refused.
    """

    def __init__(self, directory, command: str | None = None):
        self.directory = Path(directory)
        self.path = self.directory / LOCK_FILE
        self.command = command
        self._fd = None
        self._created = False

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> RunLock:
        if self._fd is not None:
            return self
        for _ in range(100):
            if not self.directory.is_dir():
                fd = self._create_locked()
                if fd is not None:
                    self._fd, self._created = fd, True
                    self._describe()
                    return self
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            except FileNotFoundError:  # its creator released it and removed it since we looked: again
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise RunLocked(self.directory, holder_of(self.directory)) from None
            except BaseException:
                os.close(fd)
                raise
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(self.path))
            except FileNotFoundError:
                same = False
            if same:
                self._fd = fd
                self._describe()
                return self
            os.close(fd)  # the holder removed the file between our open and flock: lock the new one
            time.sleep(0.01)
        raise RunLocked(self.directory, holder_of(self.directory))

    def _create_locked(self) -> int | None:
        """Create the directory with its lock file already locked by this process; the locked descriptor, or None
        when another process created the directory first.

        The directory is made under a private name in the same parent, its lock file locked, then renamed into
        place (atomic: of racers that all found it missing, exactly one rename lands, the others find it there and
        not empty). So the process that created the directory is the one that holds it, and only that one removes
        it on release: a racer that merely created it and was refused cannot leave it behind."""
        parent = self.directory.parent
        parent.mkdir(parents=True, exist_ok=True)
        staging = parent / f".{self.directory.name}.keras-grs-{os.getpid()}-{secrets.token_hex(4)}"
        staging.mkdir()  # as the directory itself would be made (the umask's permissions)
        fd = os.open(staging / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # nobody else knows this path yet
            os.rename(staging, self.directory)
        except OSError:  # the directory exists now (not empty: another racer's lock file is in it)
            os.close(fd)
            with contextlib.suppress(OSError):
                (staging / LOCK_FILE).unlink()
                staging.rmdir()
            return None
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _describe(self) -> None:
        # Written in place (not renamed): the lock belongs to this inode. A reader may see a partial description
        # for an instant; holder_of then reports it as unknown, which is only cosmetic.
        text = json.dumps({
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "command": self.command,
        }).encode()
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, text, 0)

    def release(self) -> None:
        if self._fd is None:
            return
        # Removed while still locked, so no newcomer can lock this inode after us (see the module's docstring).
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None
        if self._created:  # a run refused before writing anything leaves no trace, not even an empty directory
            with contextlib.suppress(OSError):
                self.directory.rmdir()

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def check_not_locked(directory) -> None:
    """Raise :class:`RunLocked` when a live process holds ``directory``; create nothing, change nothing."""
    path = Path(directory) / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:  # no lock file (or no directory): nobody holds it
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        raise RunLocked(directory, holder_of(directory)) from None
    finally:
        os.close(fd)  # closing releases the probe's shared lock


def is_lock_file(path) -> bool:
    """True for the lock file itself (ignored when asking whether a run directory is empty)."""
    return Path(path).name == LOCK_FILE
