"""Atomic file writes: write to a temporary file in the same directory, fsync, then rename into place."""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

from editkit.errors import EditkitError

_UMASK = os.umask(0)
os.umask(_UMASK)


def cache_root(override: str | Path | None = None) -> Path:
    """editkit's cache: `override`, else `$EDITKIT_CACHE`, else ~/.cache/editkit."""
    return Path(override or os.environ.get("EDITKIT_CACHE") or Path.home() / ".cache" / "editkit").expanduser()


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write `data` to `path` so that readers see either the old file or the whole new one, never a part."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


@contextmanager
def atomic_directory(path: str | Path, replace_if: str | None = None):
    """Yield a temporary directory next to `path`; on success rename it to `path` (readers never see a half
    written directory). An existing `path` is replaced only if it holds the file `replace_if`."""
    path = Path(path)
    if path.exists() and not (
        path.is_dir() and (not any(path.iterdir()) or (replace_if and (path / replace_if).exists()))
    ):
        raise EditkitError(f"{path} exists and is not an editkit output directory; pass a new directory")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_UMASK)
        if path.exists():
            old = tmp.with_suffix(".old")
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
