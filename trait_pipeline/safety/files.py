"""File modes that follow the umask, and checks that a folder can be written.

``tempfile.mkstemp`` makes files 0600 and ``mkdtemp`` folders 0700, whatever the umask; a
file renamed into place keeps that mode, so colleagues on a shared file system (or a
dashboard running as another user) could not read the results. Every atomic writer calls
:func:`apply_umask` on its temp file before the rename.

>>> import tempfile, pathlib
>>> p = pathlib.Path(tempfile.mkstemp()[1]); apply_umask(p); oct(p.stat().st_mode & 0o777) == oct(file_mode())
True
"""

from __future__ import annotations

import errno
import os
import shutil
import threading
from pathlib import Path

from ..errors import PipelineError

_lock = threading.Lock()


def current_umask() -> int:
    """The process umask, read now (a test or a user may change it while we run)."""
    try:  # Linux: readable without touching it
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _lock:  # elsewhere reading it means setting it, briefly
        mask = os.umask(0o022)
        os.umask(mask)
        return mask


def file_mode() -> int:
    return 0o666 & ~current_umask()


def dir_mode() -> int:
    return 0o777 & ~current_umask()


def apply_umask(path: Path | str, is_dir: bool = False) -> None:
    """Give ``path`` the mode a plain ``open``/``mkdir`` would have given it."""
    os.chmod(path, dir_mode() if is_dir else file_mode())


# errno values that mean "this folder cannot take our outputs" (not a bug of ours)
WRITE_ERRNOS = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT}


def write_error_message(exc: OSError) -> str:
    """One line for an OSError met while writing outputs."""
    where = exc.filename or "the output folder"
    reason = {
        errno.ENOSPC: "no space left on the device",
        errno.EDQUOT: "disk quota exceeded",
        errno.EROFS: "the file system is read-only",
    }.get(exc.errno or 0, exc.strerror or str(exc))
    return (f"cannot write {where}: {reason}; free space or point paths.experiments "
            "(or TRAIT_PIPELINE_EXPERIMENTS) at a writable folder")


MIN_FREE_BYTES = 8 * 2**20  # below this a run would fail half-way: refuse it up front


def first_existing(path: Path) -> Path:
    """``path`` or its nearest ancestor that exists."""
    p = Path(path).absolute()
    while not p.exists() and p.parent != p:
        p = p.parent
    return p


def check_writable(path: Path, what: str = "output folder") -> None:
    """Raise a one-line :class:`PipelineError` unless ``path`` can be created/written."""
    anchor = first_existing(path)
    if not anchor.is_dir():
        raise PipelineError(f"cannot create the {what} {path}: {anchor} is a file, not a folder")
    if not os.access(anchor, os.W_OK | os.X_OK):
        raise PipelineError(
            f"cannot write the {what} {path}: {anchor} is not writable (read-only or another "
            "user's); point paths.experiments (or TRAIT_PIPELINE_EXPERIMENTS) at a writable folder")
    try:
        free = shutil.disk_usage(anchor).free
    except OSError:
        return
    if free < MIN_FREE_BYTES:
        raise PipelineError(
            f"cannot write the {what} {path}: only {free // 1024} KiB free on its file system "
            f"(need at least {MIN_FREE_BYTES // 2**20} MiB); free space or point paths.experiments "
            "at another folder")
