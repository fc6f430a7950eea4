"""Dataset SPECs and loaders: each format read from a file the test writes."""

import gzip
import os
import pickle
import struct

import numpy as np
import pytest
import torch

from edgefault.data import load_dataset, parse_spec
from edgefault.data.augment import random_crop_flip
from edgefault.data.safe_pickle import safe_load
from edgefault.errors import EdgefaultError


def test_builtin_mnist5k_is_split_deterministically(mnist5k):
    assert mnist5k.train_images.shape == (4000, 1, 28, 28) and mnist5k.test_images.shape == (1000, 1, 28, 28)
    assert np.bincount(mnist5k.test_labels).tolist() == [100] * 10
    assert 0.0 <= mnist5k.test_images.min() and mnist5k.test_images.max() <= 1.0
    again = load_dataset("mnist5k")
    assert np.array_equal(again.test_images, mnist5k.test_images)
    assert mnist5k.input_shape == (1, 28, 28) and mnist5k.num_classes == 10


@pytest.mark.parametrize("spec, message", [
    ("imagenet", "unknown dataset SPEC"), ("npz", "needs a path"), ("npz:/no/such/file.npz", "does not exist"),
    ("mnist5k:/tmp", "takes no path"),
])
def test_bad_specs_say_what_is_wrong(spec, message):
    with pytest.raises(EdgefaultError, match=message):
        parse_spec(spec)


def _cifar_batch(path, rng, n, label_key="labels"):
    batch = {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), label_key.encode(): list(rng.integers(0, 10, n))}
    path.write_bytes(pickle.dumps(batch, protocol=2))


def test_cifar10_python_batches(tmp_path):
    rng = np.random.default_rng(0)
    for i in range(1, 6):
        _cifar_batch(tmp_path / f"data_batch_{i}", rng, 4)
    _cifar_batch(tmp_path / "test_batch", rng, 3)
    (tmp_path / "batches.meta").write_bytes(pickle.dumps({b"label_names": [f"c{i}" for i in range(10)]}))
    data = load_dataset(f"cifar10:{tmp_path}")
    assert data.train_images.shape == (20, 3, 32, 32) and data.test_images.shape == (3, 3, 32, 32)
    assert data.class_names[0] == "c0" and data.mean == (0.4914, 0.4822, 0.4465)


def test_cifar100_python_batches(tmp_path):
    rng = np.random.default_rng(1)
    _cifar_batch(tmp_path / "train", rng, 5, "fine_labels")
    _cifar_batch(tmp_path / "test", rng, 2, "fine_labels")
    data = load_dataset(f"cifar100:{tmp_path}")
    assert data.num_classes == 100 and len(data.test_labels) == 2


class _Exploit:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_restricted_unpickler_refuses_a_pickle_that_calls_a_function():
    with pytest.raises(EdgefaultError, match="refusing to load"):
        safe_load(pickle.dumps({"data": _Exploit()}), "evil")
    array = np.arange(6, dtype=np.uint8).reshape(2, 3)
    assert np.array_equal(safe_load(pickle.dumps({"data": array}), "ok")["data"], array)


def _write_idx(path, array, compress):
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    raw = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(raw) if compress else raw)


@pytest.mark.parametrize("compress", [False, True])
def test_mnist_idx_files(tmp_path, compress):
    rng = np.random.default_rng(2)
    suffix = ".gz" if compress else ""
    _write_idx(tmp_path / f"train-images-idx3-ubyte{suffix}", rng.integers(0, 256, (6, 28, 28)), compress)
    _write_idx(tmp_path / f"train-labels-idx1-ubyte{suffix}", np.arange(6) % 3, compress)
    _write_idx(tmp_path / f"t10k-images-idx3-ubyte{suffix}", rng.integers(0, 256, (2, 28, 28)), compress)
    _write_idx(tmp_path / f"t10k-labels-idx1-ubyte{suffix}", np.array([0, 2]), compress)
    data = load_dataset(f"mnist:{tmp_path}")
    assert data.train_images.shape == (6, 1, 28, 28) and data.test_labels.tolist() == [0, 2]
    assert data.num_classes == 3


def test_image_folder(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(3)
    for label in ("cat", "dog"):
        (tmp_path / label).mkdir()
        for i in range(5):
            Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(tmp_path / label / f"{i}.png")
    data = load_dataset(f"folder:{tmp_path}")
    assert data.class_names == ("cat", "dog") and data.input_shape == (3, 16, 16)
    assert len(data.train_labels) == 8 and len(data.test_labels) == 2


def test_npz_with_x_and_y(tmp_path):
    rng = np.random.default_rng(4)
    np.savez(tmp_path / "d.npz", x=rng.integers(0, 256, (20, 12, 12), dtype=np.uint8), y=np.arange(20) % 4)
    data = load_dataset(f"npz:{tmp_path / 'd.npz'}")
    assert data.input_shape == (1, 12, 12) and data.num_classes == 4 and len(data.test_labels) == 4
    np.savez(tmp_path / "bad.npz", images=np.zeros((2, 2)))
    with pytest.raises(EdgefaultError, match="needs arrays 'x' and 'y'"):
        load_dataset(f"npz:{tmp_path / 'bad.npz'}")


def test_crop_and_flip_keep_shape_and_content_and_are_seeded():
    images = torch.rand(8, 3, 32, 32)
    first = random_crop_flip(images, 4, True, torch.Generator().manual_seed(5))
    second = random_crop_flip(images, 4, True, torch.Generator().manual_seed(5))
    assert first.shape == images.shape and torch.equal(first, second)
    assert torch.equal(random_crop_flip(images, 0, False, torch.Generator()), images)
