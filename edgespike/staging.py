"""Write a dir beside its destination, then rename it into place; leftovers of dead writers removed.

    .NAME.partial-PID-XXXX   NAME being written by process PID (``new_staging``)
    .NAME.old-PID-XXXX       the previous NAME, moved aside by PID while the new one goes in (``commit``)

A writer killed mid-way (SIGKILL, power loss) leaves these behind; the next write to NAME removes
those whose PID is no longer alive, never a live process's (a reused PID only keeps a leftover for
longer). ``commit`` swaps under an exclusive ``flock`` of the parent dir, so two writers to one NAME
serialize: the first wins, the second replaces it (``force``) or stops with an error, and NAME is
always one writer's complete dir. Both the exporters (``artifact.staged``) and model dirs
(``models.format.write_dir``) go through here.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import secrets
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from edgespike.errors import EdgespikeError

KINDS = ("partial", "old")


def new_staging(destination: Path) -> Path:
    """An empty dir beside ``destination`` named after this process; stale leftovers removed first."""
    destination = Path(destination)
    destination.parent.mkdir(parents=True, exist_ok=True)
    remove_stale(destination)
    return Path(tempfile.mkdtemp(prefix=f".{destination.name}.partial-{os.getpid()}-", dir=destination.parent))


def check_free_space(destination: Path, needed: int, what: str) -> None:
    """Refuse, before any work, to write about ``needed`` bytes where the disk has less free."""
    where = Path(destination).absolute()
    while not where.exists():
        where = where.parent
    free = shutil.disk_usage(where).free
    if needed > free:
        raise EdgespikeError(
            f"not enough disk space for {what}: about {size_text(needed)} needed at {where}, {size_text(free)} free; "
            "free some space or choose another --out"
        )


def size_text(n: int) -> str:
    """Bytes for a message: GB from 1 GB, else MB."""
    return f"{n / 1e9:.2f} GB" if n >= 1e9 else f"{n / 1e6:.2f} MB"


def remove_stale(destination: Path) -> list[Path]:
    """Remove the staging / set-aside dirs of ``destination`` whose writer process is dead; those removed."""
    destination = Path(destination)
    pattern = re.compile(rf"\.{re.escape(destination.name)}\.(?:{'|'.join(KINDS)})-(\d+)-")
    removed = []
    if not destination.parent.is_dir():
        return removed
    for entry in destination.parent.iterdir():
        match = pattern.match(entry.name)
        if match and not _alive(int(match.group(1))):
            _remove(entry)
            removed.append(entry)
    return removed


def commit(staging: Path, destination: Path, force: bool) -> None:
    """Rename ``staging`` onto ``destination``; an existing one is replaced only with ``force``."""
    staging, destination = Path(staging), Path(destination)
    old = None
    with _locked(destination.parent):
        if destination.exists() or destination.is_symlink():
            if not force:
                raise EdgespikeError(
                    f"{destination} was written by another process while this one ran; pass --force to replace it"
                )
            old = destination.with_name(f".{destination.name}.old-{os.getpid()}-{secrets.token_hex(4)}")
            destination.rename(old)
        staging.rename(destination)
    if old is not None:
        _remove(old)


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    fd = os.open(directory, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OverflowError:  # a pid no kernel hands out
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
