"""Atomic file writes: write to a temporary file in the same directory, fsync, then rename into place.

Temporaries are named `.NAME.PID.XXXX.tmp`; one left by a process that no longer runs (killed mid-write)
is removed by the next write of the same NAME."""

from __future__ import annotations

import glob
import hashlib
import os
import re
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


def data_dir() -> Path:
    """`data/` of the checkout editkit was installed from (shipped toy world and small public files)."""
    return Path(__file__).resolve().parents[1] / "data"


def file_sha256(path: str | Path) -> str:
    """sha256 of a file's bytes (hex)."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def temporary_prefix(path: Path) -> str:
    """Name prefix of this process's temporaries for `path` (`remove_stale_temporaries` knows it)."""
    return f".{path.name}.{os.getpid()}."


def remove_stale_temporaries(path: Path) -> None:
    """Delete `.NAME.PID.XXXX.tmp` / `.old` next to `path` whose process is gone (a write killed part way),
    and temporaries of the older `.NAME.XXXX.tmp` naming."""
    pattern = re.compile(rf"\.{re.escape(path.name)}\.(?:(\d+)\.)?[^.]+\.(?:tmp|old)")
    for p in path.parent.glob(f".{glob.escape(path.name)}.*"):
        m = pattern.fullmatch(p.name)
        if m is None or (m.group(1) is not None and _alive(int(m.group(1)))):
            continue
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write `data` to `path` so that readers see either the old file or the whole new one, never a part."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=temporary_prefix(path), suffix=".tmp")
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


def replace_section(path: str | Path, begin: str, end: str, section: str) -> None:
    """Put `section` (which starts with `begin` and ends with `end`) in place of the text between those
    markers in a Markdown file, or append it; written atomically. Used by the experiments' README writers."""
    path = Path(path)
    text = path.read_text() if path.exists() else "# Experiments\n"
    pattern = re.compile(re.escape(begin) + ".*?" + re.escape(end), re.S)
    text = pattern.sub(lambda _: section, text) if pattern.search(text) else text.rstrip("\n") + "\n\n" + section
    atomic_write_text(path, text + ("" if text.endswith("\n") else "\n"))


@contextmanager
def atomic_directory(path: str | Path, replace_if: str | None = None):
    """Yield a temporary directory next to `path`; on success rename it to `path` (readers never see a half
    written directory), its files with the usual mode (umask applied, as `open` makes them; libraries that
    write through their own temporaries leave 0600). An existing `path` is replaced only if it holds the
    file `replace_if`."""
    path = Path(path)
    if path.exists() and not (
        path.is_dir() and (not any(path.iterdir()) or (replace_if and (path / replace_if).exists()))
    ):
        raise EditkitError(f"{path} exists and is not an editkit output directory; pass a new directory")
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=temporary_prefix(path), suffix=".tmp"))
    try:
        yield tmp
        for p in [tmp, *tmp.rglob("*")]:
            if not p.is_symlink():
                os.chmod(p, (0o777 if p.is_dir() else 0o666) & ~_UMASK)
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


def read_text(path: str | Path, what: str = "file") -> str:
    """The UTF-8 text of `path`; a file in another encoding is a clear error naming it (`what` says what it is)."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise EditkitError(
            f"{what} {path} is not UTF-8 text (byte {e.object[e.start]:#04x} at offset {e.start}); save it as UTF-8"
        ) from None


def read_json(path: str | Path, what: str = "file", fix: str = "pass a valid JSON file") -> object:
    """The parsed JSON of `path`; bad UTF-8 or bad JSON is one clear error naming the file and `fix`."""
    import json

    try:
        return json.loads(read_text(path, what))
    except json.JSONDecodeError as e:
        raise EditkitError(f"{what} {path} is not valid JSON ({e}); {fix}") from None


def json_safe(obj):
    """`obj` with every NaN or infinite float replaced by None, so that it dumps as valid JSON."""
    import math

    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_safe(v) for v in obj]
    return obj
