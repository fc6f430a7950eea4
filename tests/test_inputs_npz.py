"""The npz loader checks what it reads before it derives anything: one line per problem, naming the array."""

from __future__ import annotations

import io
import tracemalloc
import zipfile

import numpy as np
import onnx
import pytest

from cli_helpers import assert_one_error_line, run
from edgefault.data import load_dataset, load_samples
from edgefault.errors import EdgefaultError
from onnx_builders import float_cnn


def _npz(path, **arrays) -> str:
    np.savez(path, **arrays)
    return f"npz:{path}"


def _x(count=10):
    return np.random.default_rng(0).standard_normal((count, 4)).astype(np.float32)


@pytest.mark.parametrize("arrays, message", [
    (dict(x=_x(5), y=np.arange(4)), "array 'x' has 5 samples but 'y' has 4 labels"),
    (dict(x=np.zeros((0, 4), np.float32), y=np.zeros(0, np.int64)), "array 'x' holds 0 samples"),
    (dict(x_train=_x(), y_train=np.zeros(10, int), x_test=np.zeros((0, 4)), y_test=np.zeros(0, int)),
     "array 'x_test' holds 0 samples"),
    (dict(x=_x(), y=np.full(10, 0.5)), "array 'y' holds labels that are not whole numbers"),
    (dict(x=_x(), y=np.r_[np.zeros(9), np.nan]), "array 'y' holds labels that are not whole numbers"),
    (dict(x=_x(), y=np.r_[np.zeros(9, int), -1]), "array 'y' holds label -1"),
    (dict(x=_x(), y=np.r_[np.zeros(9, np.int64), 9_000_000_000_000]), "array 'y' holds label 9e+12"),
    (dict(x=_x(), y=np.array(list("abcdefghij"))), "array 'y' has dtype <U1; it must hold integer class labels"),
    (dict(x=np.array([["a"]] * 10), y=np.zeros(10, int)), "array 'x' has dtype <U1; it must hold numbers"),
    (dict(x=np.where(np.arange(40).reshape(10, 4) == 9, np.inf, 0.0), y=np.zeros(10, int)),
     "array 'x' holds NaN or infinite values (first in sample 2)"),
    (dict(x=np.zeros(10), y=np.zeros(10, int)), "array 'x' must hold one sample per row"),
    (dict(x=_x(), y=np.zeros((10, 2), int)), "array 'y' must hold one label per sample"),
    (dict(x=np.array([None] * 10, dtype=object).reshape(10, 1), y=np.zeros(10, int)),
     "array 'x' holds Python objects (dtype object)"),
    (dict(images=_x(), labels=np.zeros(10, int)), "needs arrays 'x' and 'y' (found ['images', 'labels'])"),
    (dict(x=_x(3), y=np.arange(3)), "array 'x' has 3 samples, too few for a 20% test split"),
])
def test_bad_npz_is_one_line_naming_the_array(tmp_path, arrays, message):
    spec = _npz(tmp_path / "d.npz", **arrays)
    with pytest.raises(EdgefaultError, match="^.*d.npz: ") as raised:
        load_samples(spec)
    assert message in str(raised.value) and "\n" not in str(raised.value)
    with pytest.raises(EdgefaultError) as again:  # training reads the same checked arrays
        load_dataset(spec)
    assert str(again.value) == str(raised.value)


def test_a_label_near_9e12_is_refused_without_allocating(tmp_path):
    spec = _npz(tmp_path / "d.npz", x=_x(1000), y=np.r_[np.zeros(999, np.int64), 9_000_000_000_000])
    tracemalloc.start()
    try:
        with pytest.raises(EdgefaultError, match="fewer than 100,000 classes"):
            load_samples(spec)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 2_000_000  # the arrays themselves are 16 kB; a class list of 9e12 would be terabytes


@pytest.mark.parametrize("content, message", [
    (b"not a zip at all\n", "not an npz file (no zip archive of .npy arrays)"),
    (b"", "not an npz file"),
    (b"PK\x03\x04 truncated zip", "not a readable npz file"),
])
def test_files_that_are_not_npz(tmp_path, content, message):
    path = tmp_path / "d.npz"
    path.write_bytes(content)
    with pytest.raises(EdgefaultError, match="not an npz|not a readable npz") as raised:
        load_samples(f"npz:{path}")
    assert message in str(raised.value)


def test_a_single_npy_array_and_a_truncated_member(tmp_path):
    np.save(tmp_path / "a.npy", _x())
    (tmp_path / "a.npz").write_bytes((tmp_path / "a.npy").read_bytes())
    with pytest.raises(EdgefaultError, match="a single .npy array, not an npz"):
        load_samples(f"npz:{tmp_path / 'a.npz'}")
    with zipfile.ZipFile(tmp_path / "t.npz", "w") as archive:  # x's header declares more data than it holds
        header = np.lib.format.header_data_from_array_1_0(_x(1000))
        buffer = io.BytesIO()
        np.lib.format.write_array_header_1_0(buffer, header)
        archive.writestr("x.npy", buffer.getvalue() + b"\x00" * 64)
        buffer = io.BytesIO()
        np.save(buffer, np.zeros(1000, np.int64))
        archive.writestr("y.npy", buffer.getvalue())
    with pytest.raises(EdgefaultError, match="array 'x' is truncated"):
        load_samples(f"npz:{tmp_path / 't.npz'}")


def test_float_labels_that_are_whole_numbers_and_n_by_1_labels_are_accepted(tmp_path):
    y = (np.arange(50) % 5).astype(np.float64).reshape(50, 1)
    samples = load_samples(_npz(tmp_path / "d.npz", x=_x(50), y=y))
    assert samples.labels.dtype == np.int64 and samples.num_classes == 5 and len(samples.labels) == 10
    assert samples.x.dtype == np.float32 and samples.x.shape == (10, 4)  # as stored


def test_the_cli_error_is_one_line(tmp_path, capsys):
    spec = _npz(tmp_path / "d.npz", x=_x(), y=np.r_[np.zeros(9, np.int64), 9_000_000_000_000])
    assert_one_error_line(*run(["eval", "missing.onnx", "--data", spec], capsys), "no such file")
    onnx.save(float_cnn(), tmp_path / "m.onnx")
    code, out, err = run(["eval", str(tmp_path / "m.onnx"), "--data", spec, "--mean", "0", "--std", "1"], capsys)
    assert_one_error_line(code, out, err, "array 'y' holds label 9e+12")
