"""Atomic file output and small JSON helpers shared by every stage.

Every artifact is written to a temporary file in the destination folder and renamed into
place, so a failure or a kill never leaves a half-written output behind.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds.

    Example:
        >>> with atomic_path("/tmp/out.bin") as tmp:
        ...     _ = tmp.write_bytes(b"done")
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(handle)
    tmp = Path(tmp_name)
    tmp.chmod(0o666 & ~_UMASK)  # mkstemp makes 0600 files; outputs get the usual permissions
    try:
        yield tmp
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically.

    Example:
        >>> write_bytes_atomic("/tmp/x.bin", b"\\x00\\x01")
    """
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def _json_default(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "tolist"):  # numpy scalars and arrays
        return value.tolist()
    raise TypeError(f"cannot serialise {type(value).__name__} to JSON")


def to_json(value: Any) -> str:
    """Serialise dataclasses, paths and numpy values to indented JSON.

    Example:
        >>> to_json({"a": 1})
        '{\\n  "a": 1\\n}'
    """
    return json.dumps(value, indent=2, default=_json_default)


def write_json_atomic(path: str | os.PathLike, value: Any) -> None:
    """Write ``value`` as JSON to ``path`` atomically.

    Example:
        >>> write_json_atomic("/tmp/x.json", {"accuracy": 0.98})
    """
    write_bytes_atomic(path, (to_json(value) + "\n").encode())


def read_json(path: str | os.PathLike) -> Any:
    """Read a JSON file, turning a missing or corrupt file into a one-line user error.

    Example:
        >>> read_json("/tmp/x.json")["accuracy"]
        0.98
    """
    from edgefault.errors import EdgefaultError

    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise EdgefaultError(f"{path}: no such file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise EdgefaultError(f"{path}: not valid JSON ({exc})") from None
