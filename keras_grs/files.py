"""Writing a run's files so that a kill, a crash or a full disk never leaves half a file under a real name.

Every file the project writes goes through :func:`atomic_path`: the content goes to a temporary file in the same
directory (so the rename cannot cross file systems), is flushed and fsynced, renamed over the final name with
``os.replace`` (atomic on POSIX: readers see the old file or the new one, never a mix), and the directory is fsynced
so the rename itself survives a power cut. A failure removes the temporary file; a full disk raises
:class:`DiskFullError` with a message saying what could not be written.

Models and checkpoints also get a small sidecar ``NAME.sha256.json`` holding their size and SHA-256, so that a file
truncated or altered later is detected by :func:`verify` instead of being loaded as garbage.

Example:
    >>> import tempfile, pathlib
    >>> from keras_grs.files import write_json, read_json
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "settings.json"
    >>> write_json(path, {"epochs": 3})
    >>> read_json(path)
    {'epochs': 3}
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import errno
import fnmatch
import functools
import hashlib
import json
import os
import signal
import threading
from pathlib import Path

PARTIAL_PREFIX = ".partial-"
DIGEST_SUFFIX = ".sha256.json"
FAULT_ENV = "KERAS_GRS_FAULT_KILL"
_fault_hits = 0


class DiskFullError(OSError):
    """The disk (or quota) filled up while a file was written; nothing half-written was left behind."""


class CorruptFileError(ValueError):
    """A file does not match the size and SHA-256 recorded when it was written."""


def _fault_point(path: Path) -> None:
    """Fault-injection hook for the kill tests (``tests/faults``, ``benchmarks/faults.py``); inert when unset.

    ``KERAS_GRS_FAULT_KILL=PATTERN:N`` makes the process SIGKILL itself when the N-th file of this process whose path
    matches the shell pattern PATTERN is complete under its temporary name but not yet renamed: the most awkward
    moment for a reader, and every stage of a run (checkpoints, models, report, C files) writes through here.
    """
    spec = os.environ.get(FAULT_ENV)
    if not spec:
        return
    global _fault_hits
    pattern, _, count = spec.rpartition(":")
    if fnmatch.fnmatch(str(path), pattern):
        _fault_hits += 1
        if _fault_hits == int(count):
            os.kill(os.getpid(), signal.SIGKILL)


def _fsync_directory(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # some file systems do not open directories; the rename is still atomic there
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path beside ``path``; once the block ends without error, it becomes ``path`` durably.

    The temporary name keeps the final name's ending (``.keras``, ``.weights.h5``, ``.png``), because Keras and
    matplotlib choose the format from it, and holds the process id, so two writers never share a temporary file.
    """
    path = Path(path)
    temporary = _temporary(path)
    with _cleaned_up(temporary, path):
        yield temporary
    _commit(temporary, path)


def _temporary(path: Path) -> Path:
    return path.with_name(f"{PARTIAL_PREFIX}{os.getpid()}-{path.name}")


@contextlib.contextmanager
def _cleaned_up(temporary: Path, path: Path):
    """On any error: remove the temporary file, and name a full disk as :class:`DiskFullError`."""
    try:
        yield
    except BaseException as error:
        temporary.unlink(missing_ok=True)
        if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
            raise DiskFullError(error.errno, f"no space left on the device while writing {str(path)!r}; nothing was "
                                f"left half-written: free some space and run again (with --resume)") from None
        raise


def _commit(temporary: Path, path: Path) -> None:
    """The complete temporary file becomes ``path`` durably: fsync, rename, fsync of the directory."""
    with _cleaned_up(temporary, path):
        with open(temporary, "rb+") as f:
            os.fsync(f.fileno())
        _fault_point(path)
        os.replace(temporary, path)
    _fsync_directory(path.parent)


_deferral = threading.local()  # .writer: the BackgroundWriter this thread's writes go to (see deferred_to)


@contextlib.contextmanager
def deferred_to(writer: BackgroundWriter):
    """Within the block, this thread's :func:`write_bytes` (so :func:`write_text`, :func:`write_json`) hand the
    write to ``writer`` and return: the bytes are final, the fsyncs and the rename happen behind, in order.

    The files reach the disk in the order they were written, and the writer stops at its first failure, so a kill
    at any moment leaves what a synchronous writer killed a little earlier would have left. The caller joins the
    writer where it must know the files are on disk (and reads nothing it wrote in the block before that); the
    block joins it on the way out (an error already on its way out is not masked by a write's)."""
    previous = getattr(_deferral, "writer", None)
    _deferral.writer = writer
    try:
        yield writer
    except BaseException:
        with contextlib.suppress(Exception):
            writer.join()
        raise
    else:
        writer.join()
    finally:
        _deferral.writer = previous


def write_bytes(path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_path`); within :func:`deferred_to`, behind."""
    writer = getattr(_deferral, "writer", None)
    if writer is not None:
        writer.submit(_write_bytes_now, Path(path), bytes(data))
        return
    _write_bytes_now(path, data)


def _write_bytes_now(path, data: bytes) -> None:
    with atomic_path(path) as temporary:
        with open(temporary, "wb") as f:
            f.write(data)
            f.flush()


def write_text(path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    write_bytes(path, text.encode("utf-8"))


def write_json(path, value, **dump_options) -> None:
    """Write ``value`` as JSON to ``path`` atomically."""
    write_text(path, json.dumps(value, **dump_options))


class JsonWriter:
    """:func:`write_json` that skips a write when the file already holds that very content (the same writer wrote
    it and it is still there): keras-tuner saves the tuner's state after every trial, and it does not change
    during a search."""

    def __init__(self):
        self._written: dict[str, str] = {}

    def write(self, path, value) -> bool:
        """Write ``value`` to ``path`` unless it holds it already; whether it wrote."""
        text = json.dumps(value)
        if self._written.get(str(path)) == text and os.path.exists(path):
            return False
        write_text(path, text)
        self._written[str(path)] = text
        return True


def settle() -> None:
    """Wait for the writes this thread handed over within :func:`deferred_to` (a no-op outside one)."""
    writer = getattr(_deferral, "writer", None)
    if writer is not None:
        writer.join()


def read_json(path):
    """The JSON value in ``path`` (after the writes still on their way, see :func:`deferred_to`)."""
    settle()
    return json.loads(Path(path).read_text())


def digest(path) -> dict:
    """``{"size": bytes, "sha256": hex}`` of a file."""
    sha = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            sha.update(chunk)
            size += len(chunk)
    return {"size": size, "sha256": sha.hexdigest()}


def digest_path(path) -> Path:
    path = Path(path)
    return path.with_name(path.name + DIGEST_SUFFIX)


def record_digest(path) -> None:
    """Store the size and SHA-256 of ``path`` beside it, for :func:`verify`."""
    write_json(digest_path(path), digest(path))


def verify(path) -> bool:
    """Check ``path`` against its recorded size and SHA-256.

    Returns True when it matches, False when nothing was recorded (a file from an older run or another tool).

    Raises:
        CorruptFileError: the file is missing, truncated or altered since it was written.
    """
    settle()
    path = Path(path)
    recorded_at = digest_path(path)
    if not recorded_at.is_file():
        return False
    try:
        recorded = read_json(recorded_at)
        expected_size, expected_sha = int(recorded["size"]), str(recorded["sha256"])
    except (ValueError, KeyError, TypeError):
        raise CorruptFileError(f"{str(recorded_at)!r} is not a valid size/SHA-256 record") from None
    if not path.is_file():
        raise CorruptFileError(f"{str(path)!r} is missing, but its size and SHA-256 were recorded")
    actual = digest(path)
    if actual["size"] != expected_size:
        raise CorruptFileError(f"{str(path)!r} has {actual['size']} bytes but {expected_size} were written: it is "
                               "truncated or was changed")
    if actual["sha256"] != expected_sha:
        raise CorruptFileError(f"{str(path)!r} does not hold the bytes that were written (SHA-256 differs)")
    return True


def save_model(model, path) -> None:
    """``model.save(path)`` atomically, with its size and SHA-256 recorded."""
    with atomic_path(path) as temporary:
        model.save(temporary)
    record_digest(path)


def save_weights(model, path, writer: BackgroundWriter | None = None) -> None:
    """``model.save_weights(path)`` atomically (a checkpoint), with its size and SHA-256 recorded.

    With a ``writer``, Keras writes the weights to the temporary file here, and the rest (fsync, rename, digest:
    mostly waiting for the disk) is the writer's: the checkpoint exists under its name once ``writer.join()``
    has returned, and not before. Keras objects are only touched by the calling thread.
    """
    write_checkpoint(path, model.save_weights, writer)


def write_checkpoint(path, write, writer: BackgroundWriter | None = None) -> None:
    """A checkpoint that ``write(temporary_path)`` writes, made atomic with its size and SHA-256 recorded (as
    :func:`save_weights`; ``write`` is called here, on the calling thread, and the ``writer`` finishes the rest:
    writing the file behind too was slower, its HDF5 calls holding the interpreter while the next batch trains)."""
    path = Path(path)
    if writer is None:
        with atomic_path(path) as temporary:
            write(temporary)
        record_digest(path)
        return
    temporary = _temporary(path)
    with _cleaned_up(temporary, path):
        write(temporary)
    writer.submit(_commit_checkpoint, temporary, path, discard=functools.partial(temporary.unlink, missing_ok=True))


def load_weights(model, path) -> None:
    """``model.load_weights(path)`` without Keras' warning about the optimizer's variables: checkpoints hold an
    optimizer that was never built (candidates are compiled without building it), so a model that has trained
    would hear about every load. Only that warning is silenced, only here."""
    import warnings

    settle()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Skipping variable loading for optimizer")
        model.load_weights(path)


def _commit_checkpoint(temporary: Path, path: Path) -> None:
    _commit(temporary, path)
    record_digest(path)


class BackgroundWriter:
    """Finishes writes on one background thread, in the order they were handed over, while the caller goes on.

    :meth:`join` waits for every write handed over so far and raises the first error; call it before anything
    that relies on those files is recorded (a trial reported complete), so that a kill or a failed write leaves
    the run exactly as a synchronous write would: the file whole under its name, or absent.

    Example:
        >>> import tempfile, pathlib
        >>> from keras_grs.files import BackgroundWriter, write_json, read_json
        >>> writer, path = BackgroundWriter(), pathlib.Path(tempfile.mkdtemp()) / "a.json"
        >>> writer.submit(write_json, path, [1, 2])
        >>> writer.join()
        >>> read_json(path)
        [1, 2]
    """

    def __init__(self):
        self._executor = None  # started at the first write
        self._pending = []
        self._failed = False  # a write failed since the last join: the writes after it are skipped

    def submit(self, write, *args, discard=None) -> None:
        """Run ``write(*args)`` on the writer's thread (skipped when an earlier write failed since the last
        :meth:`join`: files land in order or not at all, as a synchronous writer stopped by the error would
        leave them; a skipped write calls ``discard()``, which removes what the caller already wrote for it)."""
        if self._executor is None:
            self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="keras-grs-writer")
        self._pending.append(self._executor.submit(self._run, write, args, discard))

    def _run(self, write, args, discard):
        if self._failed:
            if discard is not None:
                discard()
            return
        try:
            write(*args)
        except BaseException:
            self._failed = True
            raise

    def check(self) -> None:
        """Raise the first error of the writes finished so far (after waiting for the others), without waiting
        when none failed: how a caller that lets writes run behind learns of a failure at its next step."""
        done = {future for future in self._pending if future.done()}
        if any(future.exception() is not None for future in done):
            self.join()
        # only those inspected go: one finishing meanwhile (perhaps failing) is kept for the next check or join
        self._pending = [future for future in self._pending if future not in done]

    def join(self) -> None:
        """Wait for every write handed over so far; raise the first one's error, if any failed."""
        pending, self._pending = self._pending, []
        errors = [future.exception() for future in pending]  # waits for each
        self._failed = False
        first = next((error for error in errors if error is not None), None)
        if first is not None:
            raise first


def remove_partials(directory) -> list[Path]:
    """Delete the temporary files a killed process left under ``directory`` (recursively); return them.

    Only call it while holding the run's lock (:mod:`keras_grs.runlock`): another live writer's file would go too.
    """
    removed = []
    for path in Path(directory).rglob(f"{PARTIAL_PREFIX}*"):
        if path.is_file():
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                removed.append(path)
    return removed
