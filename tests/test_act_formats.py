"""Activation storage formats: exact round trips, exact sizes, and the documented decoding of faulty buffers."""

from __future__ import annotations

import numpy as np
import pytest

from edgefault.errors import EdgefaultError
from edgefault.faults.formats import ACT_FORMATS, DEFAULT_RUN_BITS, BufferFormat, apply_bit_faults
from edgefault.faults.records import FLIP, SA0, SA1


def _sparse_codes(rng, shape, fmt: BufferFormat, zero_fraction: float) -> np.ndarray:
    low, high = fmt.code_range
    codes = rng.integers(low, high + 1, shape)
    return np.where(rng.random(shape) < zero_fraction, fmt.zero_point, codes)


@pytest.mark.parametrize("name", ACT_FORMATS)
@pytest.mark.parametrize("bits,zero_point,signed", [(8, 0, False), (8, 128, False), (8, -3, True), (4, 0, True)])
def test_round_trip_without_faults_is_exact(name, bits, zero_point, signed):
    rng = np.random.default_rng(bits + zero_point)
    for run_bits in (1, 2, DEFAULT_RUN_BITS):
        fmt = BufferFormat(name, bits, zero_point, run_bits=run_bits, signed=signed)
        for zero_fraction in (0.0, 0.5, 0.97, 1.0):
            codes = _sparse_codes(rng, (6, 157), fmt, zero_fraction)  # runs far past 2^run_bits - 1
            buffers = fmt.encode(codes)
            assert buffers.shape == (6, fmt.capacity_bits(157)) and buffers.dtype == np.uint8
            assert set(np.unique(buffers).tolist()) <= {0, 1}
            np.testing.assert_array_equal(fmt.decode(buffers, 157), codes)
            if name == "rle":  # the used size is the header plus the pairs the header counts
                head = fmt.header_bits(157)
                pairs = (buffers[:, :head].astype(np.int64) << np.arange(head)).sum(axis=1)
                np.testing.assert_array_equal(fmt.encoded_bits(codes), head + pairs * (run_bits + bits))
            for row in range(6):  # the batch axis changes nothing
                np.testing.assert_array_equal(fmt.encode(codes[row]), buffers[row])


@pytest.mark.parametrize("bits", [8, 4])
def test_bitmap_size_is_flags_plus_nonzero_values(bits):
    rng = np.random.default_rng(1)
    fmt = BufferFormat("bitmap", bits, 3)
    codes = _sparse_codes(rng, (20, 99), fmt, 0.7)
    nonzeros = np.count_nonzero(codes != 3, axis=1)
    np.testing.assert_array_equal(fmt.encoded_bits(codes), 99 + bits * nonzeros)
    assert fmt.capacity_bits(99) == 99 * (1 + bits)
    assert BufferFormat("dense", bits, 3).encoded_bits(codes).tolist() == [99 * bits] * 20


def test_rle_size_counts_header_and_split_pairs():
    fmt = BufferFormat("rle", 4, 0, run_bits=2)  # runs up to 3
    # Runs before the codes: 0 (1,c), 7 (split: (3,z) covers 4 positions, then (3,c)), 4 ((3,z) then (0,c));
    # 3 trailing zeros implicit.
    codes = np.array([1] + [0] * 7 + [2] + [0] * 4 + [3] + [0] * 3)
    assert fmt.encoded_bits(codes) == 5 + 5 * 6  # bit_length(17) = 5 header bits, 5 pairs of 2 + 4 bits
    buffer = fmt.encode(codes)
    assert int((buffer[:5] << np.arange(5)).sum()) == 5
    assert buffer[11:17].tolist() == [1, 1, 0, 0, 0, 0]  # the second pair: the split piece (3, z)
    used = fmt.encoded_bits(codes)
    assert not buffer[used:].reshape(-1, 6)[:, :2].any()  # unused slots: run 0, code z = 0
    np.testing.assert_array_equal(fmt.decode(buffer, codes.size), codes)


def test_hand_worked_bitmap_fault_shifts_later_values():
    fmt = BufferFormat("bitmap", 4, 0)
    buffer = fmt.encode(np.array([0, 5, 0, 0, 3]))
    assert buffer[:5].tolist() == [0, 1, 0, 0, 1]
    assert buffer[5:13].tolist() == [1, 0, 1, 0, 1, 1, 0, 0]  # 5 then 3, least significant bit first
    assert not buffer[13:].any()  # cleared to z codes
    inserted = apply_bit_faults(buffer, [2], [FLIP])  # flag 2: 0 -> 1 takes the next value, shifting the rest
    assert fmt.decode(inserted, 5).tolist() == [0, 5, 3, 0, 0]
    dropped = apply_bit_faults(buffer, [1], [SA0])  # flag 1: 1 -> 0 drops 5; 3 moves forward into position 4
    assert fmt.decode(dropped, 5).tolist() == [0, 0, 0, 0, 5]
    value = apply_bit_faults(buffer, [5 + 4 + 2], [SA1])  # bit 2 of the second stored value: 3 -> 7
    assert fmt.decode(value, 5).tolist() == [0, 5, 0, 0, 7]


def test_hand_worked_rle_fault_moves_later_positions():
    fmt = BufferFormat("rle", 4, 0, run_bits=2)
    buffer = fmt.encode(np.array([0, 5, 0, 0, 3]))
    assert buffer[:3].tolist() == [0, 1, 0]  # header: 2 pairs in bit_length(5) = 3 bits
    assert buffer[3:15].tolist() == [1, 0, 1, 0, 1, 0, 0, 1, 1, 1, 0, 0]  # (1, 5) (2, 3)
    moved = apply_bit_faults(buffer, [3], [FLIP])  # first run 1 -> 0: every later value moves one back
    assert fmt.decode(moved, 5).tolist() == [5, 0, 0, 3, 0]
    past_end = apply_bit_faults(buffer, [9], [SA1])  # second run 2 -> 3: its code would land at 5, past N
    assert fmt.decode(past_end, 5).tolist() == [0, 5, 0, 0, 0]
    fewer = apply_bit_faults(buffer, [1], [SA0])  # header 2 -> 0: nothing is read, every position is z
    assert fmt.decode(fewer, 5).tolist() == [0] * 5
    more = apply_bit_faults(buffer, [2], [SA1])  # header 2 -> 6, clamped to 5 slots: cleared slots write z
    assert fmt.decode(more, 5).tolist() == [0, 5, 0, 0, 3]


@pytest.mark.parametrize("name", ACT_FORMATS)
def test_random_faults_decode_to_valid_codes_of_length_n(name):
    rng = np.random.default_rng(2)
    fmt = BufferFormat(name, 8, -128, signed=True)
    codes = _sparse_codes(rng, (4, 64), fmt, 0.6)
    buffers = fmt.encode(codes)
    cells = np.flatnonzero(rng.random(buffers.shape[1]) < 0.05)
    decoded = fmt.decode(apply_bit_faults(buffers, cells, np.zeros(cells.size, np.uint8)), 64)
    assert decoded.shape == (4, 64) and decoded.min() >= -128 and decoded.max() <= 127
    if name == "dense":  # dense: exactly the faulty cells' codes change, bit by bit
        changed = (decoded ^ codes) & 0xFF
        expected = np.zeros(64 * 8, np.int64)
        expected[cells] = 1
        np.testing.assert_array_equal(((changed[:, :, None] >> np.arange(8)) & 1).reshape(4, -1),
                                      np.broadcast_to(expected, (4, 512)))


def test_bad_settings_and_codes_are_refused():
    with pytest.raises(EdgefaultError, match="zero point 200"):
        BufferFormat("dense", 8, 200, signed=True)
    with pytest.raises(EdgefaultError, match="run width"):
        BufferFormat("rle", 8, 0, run_bits=0)
    with pytest.raises(EdgefaultError, match="outside the 4-bit range"):
        BufferFormat("bitmap", 4, 0).encode(np.array([16]))
    with pytest.raises(EdgefaultError, match="has 20 cells"):
        BufferFormat("dense", 4, 0).decode(np.zeros(8, np.uint8), 5)


def _field(cells, start: int, width: int) -> int:
    return sum(int(cells[start + k]) << k for k in range(width))


def _reference(fmt: BufferFormat, buffer: np.ndarray, n: int) -> list[int]:
    """The documented decoding rules, one cell at a time (the slow, obvious reading of a buffer)."""
    def signed(raw: int) -> int:
        return raw - (1 << fmt.bits) if fmt.signed and raw >> (fmt.bits - 1) else raw

    out = [fmt.zero_point] * n
    if fmt.name == "dense":
        return [signed(_field(buffer, i * fmt.bits, fmt.bits)) for i in range(n)]
    if fmt.name == "bitmap":
        taken = 0
        for i in range(n):
            if buffer[i]:
                out[i] = signed(_field(buffer, n + taken * fmt.bits, fmt.bits))
                taken += 1
        return out
    head, width = fmt.header_bits(n), fmt.run_bits + fmt.bits
    position = -1
    for pair in range(min(_field(buffer, 0, head), n)):
        start = head + pair * width
        position += _field(buffer, start, fmt.run_bits) + 1
        if position >= n:
            break
        out[position] = signed(_field(buffer, start + fmt.run_bits, fmt.bits))
    return out


@pytest.mark.parametrize("name", ACT_FORMATS)
@pytest.mark.parametrize("bits,signed,run_bits", [(1, False, 1), (3, True, 4), (8, False, 5), (12, True, 3),
                                                   (16, False, 16), (16, True, 7)])
def test_vectorized_decoding_follows_the_documented_rules_on_faulty_buffers(name, bits, signed, run_bits):
    """Widths 1..16 and slots up to 32 cells: the vectorized encoder round-trips, and on randomly faulted
    buffers the decoder reads exactly what the cell-by-cell rules of the docs read."""
    rng = np.random.default_rng(bits * 31 + run_bits)
    low, high = BufferFormat(name, bits, 0, run_bits=run_bits, signed=signed).code_range
    fmt = BufferFormat(name, bits, int(rng.integers(low, high + 1)), run_bits=run_bits, signed=signed)
    codes = _sparse_codes(rng, (5, 77), fmt, 0.8)
    buffers = fmt.encode(codes)
    np.testing.assert_array_equal(fmt.decode(buffers, 77), codes)
    raw_zero = fmt.zero_point & ((1 << bits) - 1)
    for row, used in zip(buffers, fmt.encoded_bits(codes).tolist()):  # cells past the used ones: cleared
        if name == "bitmap":
            assert all(_field(row, start, bits) == raw_zero for start in range(used, row.size, bits))
        if name == "rle":
            width = run_bits + bits
            assert all(_field(row, start, width) == raw_zero << run_bits for start in range(used, row.size, width))
    for rate in (0.002, 0.02, 0.2):
        cells = np.flatnonzero(rng.random(buffers.shape[1]) < rate)
        kinds = rng.integers(0, 4, cells.size).astype(np.uint8)
        faulty = apply_bit_faults(buffers, cells, kinds)
        decoded = fmt.decode(faulty, 77)
        assert decoded.tolist() == [_reference(fmt, row, 77) for row in faulty]
