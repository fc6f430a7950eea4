"""Reading an ``.npz`` dataset, checked before anything is derived from it.

An npz holds ``x`` and ``y`` (split 80/20 per class) or ``x_train``, ``y_train``,
``x_test``, ``y_test``. Every array's header is read and checked first (dtype, shape,
lengths, declared size against the bytes stored), then the labels are read and checked,
and only then the samples. Each problem is one line naming the array. Labels are bounded
(:data:`MAX_CLASSES`) before a class list is built from them, so a label near 9e12 costs
a message, not 24 GB.
"""

from __future__ import annotations

import dataclasses
import zipfile
from pathlib import Path

import numpy as np

from edgefault.data.split import stratified_split
from edgefault.errors import EdgefaultError, error_line
from edgefault.reading import check_input_file

# Labels are class indices; a class list longer than this is a mistake, not a dataset.
MAX_CLASSES = 100_000
SPLIT_KEYS = ("x_train", "y_train", "x_test", "y_test")
SAMPLE_KINDS = "uif"  # unsigned, signed integers and floats
LABEL_KINDS = "uibf"


@dataclasses.dataclass(frozen=True, eq=False)
class NpzSplits:
    """The checked arrays of an npz dataset: samples as stored (dtype and shape kept), int64 labels.

    ``classes`` is the largest label plus one, over both splits; ``test_name`` names the
    array the test samples came from (``x`` or ``x_test``).
    """

    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    classes: int
    test_name: str


def read_npz(path: Path, test_share: float = 0.2) -> NpzSplits:
    """Read and check an npz dataset; split ``x``/``y`` deterministically per class.

    Example:
        >>> _ = Path("notes.txt").write_text("not an archive")
        >>> read_npz(Path("notes.txt"))
        Traceback (most recent call last):
        edgefault.errors.EdgefaultError: notes.txt: not an npz file (no zip archive of .npy arrays)
    """
    with _open(path) as archive:
        keys = set(archive.files)
        if set(SPLIT_KEYS) <= keys:
            pairs = (("x_train", "y_train"), ("x_test", "y_test"))
        elif {"x", "y"} <= keys:
            pairs = (("x", "y"),)
        else:
            raise EdgefaultError(f"{path}: an npz dataset needs arrays 'x' and 'y' (found {sorted(keys) or 'none'})")
        headers = {name: _header(archive, name, path) for pair in pairs for name in pair}
        for x_name, y_name in pairs:
            _check_pair(path, x_name, headers[x_name], y_name, headers[y_name])
        labels = {y_name: _labels(path, y_name, _read(archive, y_name, path)) for _, y_name in pairs}
        samples = {x_name: _samples(path, x_name, _read(archive, x_name, path)) for x_name, _ in pairs}
    classes = max(int(y.max()) for y in labels.values()) + 1
    if len(pairs) == 2:
        return NpzSplits(samples["x_train"], labels["y_train"], samples["x_test"], labels["y_test"], classes, "x_test")
    x, y = samples["x"], labels["y"]
    train, test = stratified_split(y, test_share)
    if len(test) == 0:
        raise EdgefaultError(f"{path}: array 'x' has {len(x)} samples, too few for a {test_share:.0%} test split "
                             "per class; store more, or x_train/y_train/x_test/y_test")
    return NpzSplits(x[train], y[train], x[test], y[test], classes, "x")


def _open(path: Path):
    check_input_file(path)  # /dev/zero or a FIFO: refused before any read
    try:
        with open(path, "rb") as handle:
            magic = handle.read(4)
    except OSError as exc:
        raise EdgefaultError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if magic == b"\x93NUM":
        raise EdgefaultError(f"{path}: a single .npy array, not an npz with arrays 'x' and 'y' (use numpy.savez)")
    if magic[:2] != b"PK":
        raise EdgefaultError(f"{path}: not an npz file (no zip archive of .npy arrays)")
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise EdgefaultError(f"{path}: not a readable npz file ({error_line(exc)})") from None


def _header(archive, name: str, path: Path) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype from the .npy header alone, with the stored size checked against them."""
    member = f"{name}.npy"
    try:
        info = archive.zip.getinfo(member)
        with archive.zip.open(member) as handle:
            version = np.lib.format.read_magic(handle)
            reader = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, _, dtype = reader(handle)
            header_size = handle.tell()
    except (KeyError, OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise EdgefaultError(f"{path}: array {name!r} is unreadable ({error_line(exc)})") from None
    if dtype.hasobject:
        raise EdgefaultError(f"{path}: array {name!r} holds Python objects (dtype object); store numbers")
    if dtype.kind not in (LABEL_KINDS if name.startswith("y") else SAMPLE_KINDS) or dtype.fields:
        wanted = "integer class labels" if name.startswith("y") else "numbers (integers or floats)"
        raise EdgefaultError(f"{path}: array {name!r} has dtype {dtype}; it must hold {wanted}")
    declared = int(np.prod(shape, dtype=np.float64) * dtype.itemsize)
    if declared > info.file_size - header_size:
        raise EdgefaultError(f"{path}: array {name!r} is truncated (its header declares shape {shape})")
    return tuple(int(d) for d in shape), dtype


def _check_pair(path: Path, x_name: str, x_header, y_name: str, y_header) -> None:
    (x_shape, _), (y_shape, _) = x_header, y_header
    if len(x_shape) < 2:
        raise EdgefaultError(f"{path}: array {x_name!r} must hold one sample per row (N x ...), got shape {x_shape}")
    if len(y_shape) not in (1, 2) or (len(y_shape) == 2 and y_shape[1] != 1):
        raise EdgefaultError(f"{path}: array {y_name!r} must hold one label per sample (N or N x 1), got {y_shape}")
    if x_shape[0] != y_shape[0]:
        raise EdgefaultError(f"{path}: array {x_name!r} has {x_shape[0]} samples but {y_name!r} has {y_shape[0]} labels")
    if x_shape[0] == 0:
        raise EdgefaultError(f"{path}: array {x_name!r} holds 0 samples")
    if 0 in x_shape[1:]:
        raise EdgefaultError(f"{path}: array {x_name!r} has empty samples (shape {x_shape})")


def _read(archive, name: str, path: Path) -> np.ndarray:
    try:
        return archive[name]
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise EdgefaultError(f"{path}: array {name!r} is unreadable ({error_line(exc)})") from None


def _labels(path: Path, name: str, values: np.ndarray) -> np.ndarray:
    values = values.reshape(-1)
    if values.dtype.kind == "f":
        if not np.isfinite(values).all() or not np.array_equal(values, np.round(values)):
            raise EdgefaultError(f"{path}: array {name!r} holds labels that are not whole numbers; "
                                 "labels must be class indices 0..C-1")
    low, high = values.min(), values.max()  # compared as stored: a cast could wrap a huge label
    if low < 0:
        raise EdgefaultError(f"{path}: array {name!r} holds label {low:g}; labels must be class indices 0..C-1")
    if high >= MAX_CLASSES:
        raise EdgefaultError(f"{path}: array {name!r} holds label {high:g}; labels must be class indices 0..C-1 "
                             f"with fewer than {MAX_CLASSES:,} classes")
    return values.astype(np.int64)


def _samples(path: Path, name: str, values: np.ndarray) -> np.ndarray:
    if values.dtype.kind == "f" and not np.isfinite(values).all():
        first = int(np.flatnonzero(~np.isfinite(values).reshape(len(values), -1).all(axis=1))[0])
        raise EdgefaultError(f"{path}: array {name!r} holds NaN or infinite values (first in sample {first})")
    return values
