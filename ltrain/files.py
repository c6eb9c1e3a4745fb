"""Files a run writes: atomic writes and version folders (for loggers, checkpoints and the app).

`version_N` is claimed with one `mkdir`, so runs started together never share a folder. Every file
a run rewrites goes through `write_atomically` (temporary file in the same folder, fsync, rename),
so a kill at any instant leaves the old file or the new one, never a torn one.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO

_VERSION = re.compile(r"^version_(\d+)$")


def version_number(folder: str | os.PathLike) -> int | None:
    """N for a folder named `version_N`; None for any other name (`foo_7` is no version folder)."""
    match = _VERSION.match(os.path.basename(os.fspath(folder)))
    return int(match.group(1)) if match else None


def existing_versions(root: str | os.PathLike) -> list[int]:
    """The N of every `version_N` folder under `root`, sorted."""
    try:
        names = os.listdir(root)
    except FileNotFoundError:
        return []
    found = (_VERSION.match(n) for n in names)
    return sorted(
        int(m.group(1)) for m in found if m and os.path.isdir(os.path.join(root, m.group(0)))
    )


def claim_version_folder(root: str | os.PathLike) -> tuple[int, Path]:
    """Create `root/version_N` with N one past the largest existing one and return (N, path).

    `mkdir` either creates the folder or fails because another run got there first; then the
    next number is tried, so concurrent runs end up in distinct folders.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    versions = existing_versions(root)
    version = versions[-1] + 1 if versions else 0
    while True:
        path = root / f"version_{version}"
        try:
            path.mkdir()
        except FileExistsError:
            version += 1
            continue
        return version, path


def write_atomically(path: str | os.PathLike, write: Callable[[IO[bytes]], object]) -> None:
    """Write a file through `write(handle)` so that `path` is either the old file or the complete new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        # mkstemp makes the file private (0600); a run's files get the usual mode, as open() gives
        os.chmod(tmp, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@functools.cache
def _umask() -> int:
    """The process's umask (read once: reading it means setting it for a moment)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_text_atomically(path: str | os.PathLike, text: str) -> None:
    write_atomically(path, lambda handle: handle.write(text.encode("utf-8")))
