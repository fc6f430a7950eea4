"""Reading files from the user with bounds: regular files only, a size bound, JSON with a depth bound, bounded CSV.

A path given as an input may name ``/dev/zero`` (endless), a FIFO (a read that never returns)
or a huge file; a JSON document may nest 100,000 deep or hold an integer of 100,000 digits;
a CSV field may be 100 MB long. Each ends here in one :class:`EdgefaultError` line instead of
exhausting memory, hanging, or a traceback.
"""

from __future__ import annotations

import csv
import io
import json
import os
import stat
from pathlib import Path
from typing import Any

from edgefault.errors import EdgefaultError
from edgefault.text import printable

MAX_JSON_BYTES = 2 << 30  # a fault map of ~20 million faults; nothing edgefault writes comes near
MAX_JSON_DEPTH = 64  # edgefault's own documents nest at most 5 deep
MAX_TEXT_BYTES = 64 << 20  # small text inputs: a voltage curve, an accelerator file
MAX_CSV_FIELD = 1 << 16

_KINDS = ((stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"), (stat.S_ISFIFO, "a FIFO"),
          (stat.S_ISSOCK, "a socket"), (stat.S_ISDIR, "a folder"))


def file_kind(mode: int) -> str:
    """What a non-regular file is, in words, from its ``st_mode``.

    Example:
        >>> file_kind(os.stat("/dev/null").st_mode)
        'a character device'
    """
    return next((what for test, what in _KINDS if test(mode)), "not a regular file")


def check_input_file(path: str | os.PathLike, what: str = "") -> Path:
    """Refuse an input that is missing or not a regular file (a device, a FIFO, a socket, a folder).

    Symlinks are followed; ``stat`` never opens the file, so a FIFO cannot block here.

    Example:
        >>> check_input_file("/dev/zero", "--map-in")
        Traceback (most recent call last):
        ...
        edgefault.errors.EdgefaultError: --map-in /dev/zero: not a regular file (a character device); give a file
    """
    path = Path(path)
    label = f"{what} {printable(path)}" if what else printable(path)
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise EdgefaultError(f"{label}: no such file") from None
    except OSError as exc:
        raise EdgefaultError(f"{label}: cannot read ({exc.strerror or exc})") from None
    if not stat.S_ISREG(mode):
        raise EdgefaultError(f"{label}: not a regular file ({file_kind(mode)}); give a file")
    return path


def read_bytes_bounded(path: str | os.PathLike, limit: int, what: str = "") -> bytes:
    """The bytes of a regular file of at most ``limit`` bytes; anything else is one user error.

    Example:
        >>> write = Path("bounded.txt").write_text("hello")
        >>> read_bytes_bounded("bounded.txt", 16)
        b'hello'
        >>> read_bytes_bounded("bounded.txt", 4)
        Traceback (most recent call last):
        ...
        edgefault.errors.EdgefaultError: bounded.txt: larger than 4 bytes; not a file edgefault reads
    """
    path = check_input_file(path, what)
    label = f"{what} {printable(path)}" if what else printable(path)
    with open(path, "rb") as handle:
        if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):  # swapped for a device since the check
            raise EdgefaultError(f"{label}: not a regular file; give a file")
        data = handle.read(limit + 1)
    if len(data) > limit:
        raise EdgefaultError(f"{label}: larger than {limit:,} bytes; not a file edgefault reads")
    return data


def parse_json(text: str | bytes, where: str, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """Parse JSON text with a depth bound; bad, too deep, or too-long-integer documents are one user error.

    Example:
        >>> parse_json('{"a": [1, 2]}', "x.json")
        {'a': [1, 2]}
        >>> parse_json("[" * 100 + "]" * 100, "x.json")
        Traceback (most recent call last):
        ...
        edgefault.errors.EdgefaultError: x.json: JSON nested deeper than 64 levels
    """
    try:
        value = json.loads(text)
    except RecursionError:
        raise EdgefaultError(f"{where}: JSON nested deeper than {max_depth} levels") from None
    except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError, and ints over Python's digit limit
        raise EdgefaultError(f"{where}: not valid JSON ({printable(str(exc)[:200])})") from None
    if _depth_exceeds(value, max_depth):
        raise EdgefaultError(f"{where}: JSON nested deeper than {max_depth} levels")
    return value


def _depth_exceeds(value: Any, limit: int) -> bool:
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (dict, list)):
            if depth > limit:
                return True
            stack.extend((child, depth + 1) for child in (item.values() if isinstance(item, dict) else item))
    return False


def read_json(path: str | os.PathLike, limit: int = MAX_JSON_BYTES, what: str = "") -> Any:
    """Read a JSON file: a regular file of at most ``limit`` bytes, depth-bounded; every failure one line.

    Example:
        >>> _ = Path("x.json").write_text('{"accuracy": 0.98}')
        >>> read_json("x.json")["accuracy"]
        0.98
    """
    label = f"{what} {printable(path)}" if what else printable(path)
    return parse_json(read_bytes_bounded(path, limit, what), label)


def parse_csv(text: str, where: str) -> tuple[list[str], list[dict[str, str]]]:
    """The header and rows of CSV text with a header line; a field over the size bound is one user error.

    Example:
        >>> parse_csv("vdd,ber\\n0.9,1e-6\\n", "curve.csv")
        (['vdd', 'ber'], [{'vdd': '0.9', 'ber': '1e-6'}])
        >>> parse_csv("a\\n" + "x" * 70000 + "\\n", "curve.csv")
        Traceback (most recent call last):
        ...
        edgefault.errors.EdgefaultError: curve.csv: not a valid CSV file (field larger than field limit (65536); fields hold at most 65,536 characters)
    """
    previous = csv.field_size_limit(MAX_CSV_FIELD)
    try:
        reader = csv.DictReader(io.StringIO(text))
        rows = list(reader)
        return list(reader.fieldnames or []), rows
    except csv.Error as exc:
        raise EdgefaultError(f"{where}: not a valid CSV file ({exc}; fields hold at most {MAX_CSV_FIELD:,} "
                             "characters)") from None
    finally:
        csv.field_size_limit(previous)


def read_text_bounded(path: str | os.PathLike, what: str = "", limit: int = MAX_TEXT_BYTES) -> str:
    """The UTF-8 text of a small regular file (at most ``limit`` bytes); anything else is one user error.

    Example:
        >>> _ = Path("curve.csv").write_text("vdd,ber\\n0.9,1e-6\\n")
        >>> read_text_bounded("curve.csv").splitlines()[0]
        'vdd,ber'
    """
    data = read_bytes_bounded(path, limit, what)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        label = f"{what} {printable(path)}" if what else printable(path)
        raise EdgefaultError(f"{label}: not UTF-8 text") from None
