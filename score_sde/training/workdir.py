"""Workdir safety: atomic writes, an append-only metrics log, the workdir lock, stale temp files.

Every file the trainer writes survives a ``SIGKILL`` at any instant:

* whole files (checkpoints, ``config.yaml``, sample grids, a truncated ``metrics.csv``) go through
  :func:`atomic_write`: a temporary ``.tmp-*`` file in the same folder, ``flush`` + ``fsync``,
  ``os.replace`` onto the final name (atomic on POSIX), ``fsync`` of the folder. A reader sees the
  old file or the new one, never a half-written one; a killed writer leaves at most a ``.tmp-*``
  file, which :func:`remove_stale_temps` deletes when the next run takes the workdir;
* ``metrics.csv`` grows by appending one whole line per ``os.write``; :class:`MetricsLog` drops a
  torn last line and the rows newer than the resumed checkpoint by writing a new file atomically
  (the old one is never opened with ``"w"``);
* :class:`WorkdirLock` lets one process at a time write a workdir (``fcntl.flock`` on
  ``<workdir>/.lock``, which holds the holder's pid). The kernel drops the lock when its holder dies,
  so a stale lock of a killed run is simply taken over; a second live process fails at once with
  :class:`WorkdirLocked` naming the holder's pid.
* :class:`LauncherWatch`: under ``torchrun`` a worker whose launcher died (its parent pid changed)
  stops instead of writing on.
"""

from __future__ import annotations

import csv
import io
import os
import tempfile
from collections.abc import Callable, Iterable

TMP_PREFIX = ".tmp-"
LOCK_NAME = ".lock"


# ---------------------------------------------------------------------------------------------
# atomic writes


def fsync_dir(folder: str) -> None:
    """Make a rename inside ``folder`` durable (no-op where folders can not be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def _check_folder(folder: str, path: str) -> None:
    """Create ``folder``; a clear ``ValueError`` when a path component is a regular file."""
    try:
        os.makedirs(folder, exist_ok=True)
    except (FileExistsError, NotADirectoryError) as e:
        raise ValueError(f"can not write {path!r}: {e.filename or folder!r} is a file, not a folder") from None


def _mkstemp(path: str, folder: str) -> tuple[int, str]:
    """A temp file ``.tmp-<name>-<random><suffix>`` next to ``path`` (writers such as matplotlib read the format
    from the suffix)."""
    stem, suffix = os.path.splitext(os.path.basename(path))
    return tempfile.mkstemp(prefix=f"{TMP_PREFIX}{stem}-", suffix=suffix, dir=folder)


def atomic_write(path: str | os.PathLike, write: Callable, *, binary: bool = True) -> str:
    """Write ``path`` atomically: ``write(f)`` fills a temp file in the same folder, then
    flush, fsync, ``os.replace`` onto ``path`` and fsync of the folder. On any error (or a kill) the
    previous ``path`` is untouched; on an error the temp file is removed."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    _check_folder(folder, path)
    fd, tmp = _mkstemp(path, folder)
    try:
        with os.fdopen(fd, "wb" if binary else "w", **({} if binary else {"newline": ""})) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    fsync_dir(folder)
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> str:
    """:func:`atomic_write` of a text file."""
    return atomic_write(path, lambda f: f.write(text), binary=False)


def atomic_path(path: str | os.PathLike, writer: Callable[[str], None]) -> str:
    """Atomic version of a writer that takes a file name (``writer(tmp_path)``, e.g. ``plt.imsave``)."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    _check_folder(folder, path)
    fd, tmp = _mkstemp(path, folder)
    os.close(fd)
    try:
        writer(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    fsync_dir(folder)
    return path


def remove_stale_temps(folders: Iterable[str | os.PathLike]) -> list[str]:
    """Delete the ``.tmp-*`` files a killed writer left in ``folders``; returns their paths.

    Call only while holding the :class:`WorkdirLock` (a live writer's temp file is not stale)."""
    removed = []
    for folder in folders:
        folder = os.fspath(folder)
        if not os.path.isdir(folder):
            continue
        for name in os.listdir(folder):
            p = os.path.join(folder, name)
            if name.startswith(TMP_PREFIX) and os.path.isfile(p):
                os.unlink(p)
                removed.append(p)
    return removed


# ---------------------------------------------------------------------------------------------
# the metrics log


class MetricsLog:
    """``metrics.csv``: a header and one row per logged step, appended line by line.

    :meth:`open` keeps the rows with ``step <= keep_through`` (the resumed checkpoint's step) and
    drops a torn last line; when anything has to go, a new file is written atomically. Rows are
    then appended with one ``os.write`` each, so a kill leaves whole rows (or one torn last line,
    dropped at the next start).
    """

    def __init__(self, path: str | os.PathLike, fields: tuple[str, ...]):
        self.path, self.fields = os.fspath(path), tuple(fields)

    def read_rows(self) -> list[dict]:
        """The complete rows of the file (a torn last line and a missing header give none of it)."""
        if not os.path.isfile(self.path):
            return []
        with open(self.path, newline="") as f:
            text = f.read()
        if not text.endswith("\n"):
            text = text[: text.rfind("\n") + 1]  # a torn last line of a killed append
        rows = []
        for r in csv.DictReader(io.StringIO(text)):
            try:
                int(r.get("step") or "")
            except ValueError:
                continue
            rows.append(r)
        return rows

    def open(self, keep_through: int) -> None:
        """Make the file hold exactly the complete rows with ``step <= keep_through`` (plus the header)."""
        current = None
        if os.path.isfile(self.path):
            with open(self.path, newline="") as f:
                current = f.read()
        rows = [r for r in self.read_rows() if int(r["step"]) <= keep_through]
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=self.fields)
        w.writeheader()
        w.writerows({k: (r.get(k) or "") for k in self.fields} for r in rows)
        if buf.getvalue() != current:  # only rewrite (atomically) when something changes
            atomic_write_text(self.path, buf.getvalue())

    def append(self, row: dict) -> None:
        """Append one row with a single ``os.write`` (O_APPEND)."""
        buf = io.StringIO()
        csv.DictWriter(buf, fieldnames=self.fields).writerow({k: row.get(k, "") for k in self.fields})
        data = buf.getvalue().encode()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)


# ---------------------------------------------------------------------------------------------
# the workdir lock


class WorkdirLocked(RuntimeError):
    """Another live process holds the workdir."""


class WorkdirLock:
    """An exclusive lock on a workdir: ``<workdir>/.lock`` locked with ``fcntl.flock`` and holding the pid.

    The lock belongs to the open file, so the kernel releases it when the holder exits or is killed;
    a ``.lock`` file left by a dead process is taken over. Where ``fcntl`` is missing, the file is
    created with ``O_EXCL`` and a lock of a pid that no longer runs is taken over.
    """

    def __init__(self, workdir: str | os.PathLike):
        self.path = os.path.join(os.fspath(workdir), LOCK_NAME)
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def _holder(self) -> str:
        try:
            with open(self.path) as f:
                return f.read().strip() or "unknown"
        except OSError:
            return "unknown"

    def acquire(self) -> WorkdirLock:
        if self._fd is not None:
            return self
        _check_folder(os.path.dirname(self.path), self.path)
        try:
            import fcntl
        except ImportError:  # pragma: no cover - non-POSIX
            return self._acquire_excl()
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise WorkdirLocked(
                f"workdir {os.path.dirname(self.path)!r} is in use by another process (pid {self._holder()}, "
                f"lock file {self.path!r}); wait for it to finish, stop it, or use another --workdir"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return self

    def _acquire_excl(self) -> WorkdirLock:  # pragma: no cover - used where fcntl is missing
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                pid = self._holder()
                if pid.isdigit() and not _pid_alive(int(pid)):
                    os.unlink(self.path)  # a stale lock of a dead process
                    continue
                raise WorkdirLocked(
                    f"workdir {os.path.dirname(self.path)!r} is in use by another process (pid {pid}, "
                    f"lock file {self.path!r}); wait for it to finish, stop it, or use another --workdir"
                ) from None
            os.write(fd, f"{os.getpid()}\n".encode())
            self._fd = fd
            self._excl = True
            return self
        raise WorkdirLocked(f"could not take the lock {self.path!r}")

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        if getattr(self, "_excl", False):  # pragma: no cover
            os.close(fd)
            os.unlink(self.path)
            return
        import fcntl

        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)

    def __enter__(self) -> WorkdirLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()

    def __del__(self):
        try:
            self.release()
        except Exception:  # pragma: no cover - interpreter shutdown
            pass


def _pid_alive(pid: int) -> bool:  # pragma: no cover - used where fcntl is missing
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# ---------------------------------------------------------------------------------------------
# torchrun workers whose launcher died


class LauncherDied(RuntimeError):
    """The torchrun launcher of this worker is gone."""


class LauncherWatch:
    """Remembers the parent pid at start; :meth:`check` raises :class:`LauncherDied` once it changed
    (a killed launcher's workers are re-parented). Active only when ``enabled`` (under torchrun)."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.ppid = os.getppid()

    def check(self) -> None:
        if self.enabled and os.getppid() != self.ppid:
            raise LauncherDied(
                f"the launcher of this worker (pid {self.ppid}) is gone; stopping (pid {os.getpid()}) without "
                "writing further; run the same command again to resume from the last checkpoint"
            )


def under_torchrun() -> bool:
    """Whether this process was started by torchrun (torchelastic sets these variables)."""
    return "TORCHELASTIC_RUN_ID" in os.environ or int(os.environ.get("WORLD_SIZE", "1")) > 1


__all__ = [
    "atomic_write",
    "atomic_write_text",
    "atomic_path",
    "fsync_dir",
    "remove_stale_temps",
    "MetricsLog",
    "WorkdirLock",
    "WorkdirLocked",
    "LauncherWatch",
    "LauncherDied",
    "under_torchrun",
]
