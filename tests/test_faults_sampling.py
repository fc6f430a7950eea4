"""The fault layer's pure functions: chip settings, sampling statistics, pairing, filters, applying faults."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from edgefault.errors import EdgefaultError
from edgefault.faults import (
    FLIP,
    MBU,
    SA0,
    SA1,
    Chip,
    FaultRecords,
    WeightMemory,
    apply_faults,
    parse_bits,
    records_from_entries,
    sample_faults,
    target_bits,
)


def _memory(*sizes: int, dtype: str = "int8", prefix: str = "layer") -> WeightMemory:
    return WeightMemory.from_tensors([(f"{prefix}{i}.weight", dtype, (n,), "test") for i, n in enumerate(sizes)])


def _arrays(memory: WeightMemory, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {t.name: rng.integers(-128, 128, t.shape).astype(t.dtype) for t in memory.tensors}


def _within_binomial(observed: int, trials: int, p: float, sigmas: float = 5.0) -> bool:
    mean, sd = trials * p, np.sqrt(trials * p * (1 - p))
    return abs(observed - mean) <= sigmas * sd


@pytest.mark.parametrize(
    "settings, message",
    [
        (dict(kind="zap", rate=0.1), "unknown fault kind"),
        (dict(kind="flip"), "exactly one of rate and count"),
        (dict(kind="flip", rate=0.1, count=3), "exactly one of rate and count"),
        (dict(kind="flip", rate=1.5), r"rate must lie in \[0, 1\]"),
        (dict(kind="flip", rate=-0.1), r"rate must lie in \[0, 1\]"),
        (dict(kind="flip", rate=float("nan")), r"rate must lie in \[0, 1\]"),
        (dict(kind="flip", count=-1), "non-negative integer"),
        (dict(kind="flip", rate=0.1, seed=-3), "seed"),
        (dict(kind="flip", rate=0.1, bits=[8, 40]), "bit positions in"),
        (dict(kind="flip", rate=0.1, bits=[]), "at least one"),
        (dict(kind="flip", rate=0.1, layers="("), "bad regular expression"),
        (dict(kind="mbu", rate=0.1, burst=9), "burst"),
    ],
)
def test_chip_rejects_bad_settings_with_a_clear_message(settings, message):
    with pytest.raises(EdgefaultError, match=message):
        Chip(**settings)


def test_chip_normalises_and_round_trips_through_a_dict():
    chip = Chip("stuck", rate=1e-3, seed=4, bits=[7, 0, 7], protect_bits=(6,), layers="conv")
    assert chip.bits == (0, 7) and chip.protect_bits == (6,)
    assert Chip.from_dict(chip.to_dict()) == chip
    with pytest.raises(EdgefaultError, match="unknown chip field"):
        Chip.from_dict({**chip.to_dict(), "colour": "red"})
    assert isinstance(EdgefaultError("x"), ValueError)  # settings errors are ValueErrors too


def test_parse_bits_reads_lists_and_ranges():
    assert parse_bits("7") == (7,)
    assert parse_bits("0-2, 7,1") == (0, 1, 2, 7)
    for bad in ("x", "3-1", "40", ""):
        with pytest.raises(EdgefaultError):
            parse_bits(bad)


def test_memory_addresses_follow_the_canonical_layout():
    memory = WeightMemory.from_tensors([("a", "int8", (2, 3), "t"), ("b", "int32", (2,), "t")], include_bias=True)
    assert memory.nbits == 6 * 8 + 2 * 32
    position, index, bit = memory.locate([0, 47, 48, 48 + 33])
    assert position.tolist() == [0, 0, 1, 1] and index.tolist() == [0, 5, 0, 1] and bit.tolist() == [0, 7, 0, 1]
    assert memory.addresses(position, index, bit).tolist() == [0, 47, 48, 81]
    with pytest.raises(EdgefaultError, match="bias"):
        WeightMemory.from_tensors([("b", "int32", (2,), "t")])


def test_flip_count_at_a_rate_is_within_binomial_spread():
    memory = _memory(300_000, 200_000)
    for rate in (1e-4, 1e-3, 1e-2):
        for seed in range(3):
            records = sample_faults(memory, Chip("flip", rate=rate, seed=seed))
            assert _within_binomial(len(records), memory.nbits, rate)
            assert np.all(np.diff(records.address) > 0)  # distinct, in address order


def test_every_bit_position_is_hit_about_equally_often():
    records = sample_faults(_memory(200_000), Chip("flip", rate=0.01, seed=1))
    per_bit = np.bincount(records.bit, minlength=8)
    assert all(_within_binomial(n, 200_000, 0.01) for n in per_bit)


def test_count_gives_exactly_that_many_distinct_faults():
    memory = _memory(5_000, 3_000)
    for count in (0, 1, 17, 1_000, memory.nbits):
        records = sample_faults(memory, Chip("sa1", count=count, seed=2))
        assert len(records) == count == np.unique(records.address).size
    with pytest.raises(EdgefaultError, match="exceeds"):
        sample_faults(memory, Chip("flip", count=memory.nbits + 1))


def test_rate_zero_and_one():
    memory = _memory(1_000)
    assert len(sample_faults(memory, Chip("flip", rate=0.0))) == 0
    assert sample_faults(memory, Chip("flip", rate=1.0)).address.tolist() == list(range(memory.nbits))


def test_same_chip_same_addresses_and_other_seed_other_addresses():
    first = sample_faults(_memory(50_000, prefix="a"), Chip("flip", rate=1e-3, seed=5))
    # A different model with the same memory size: the same addresses (a paired comparison).
    second = sample_faults(_memory(20_000, 30_000, prefix="b"), Chip("flip", rate=1e-3, seed=5))
    assert np.array_equal(first.address, second.address)
    other = sample_faults(_memory(50_000, prefix="a"), Chip("flip", rate=1e-3, seed=6))
    assert not np.array_equal(first.address, other.address)
    counted = [sample_faults(_memory(50_000, prefix=p), Chip("flip", count=300, seed=5)).address for p in "ab"]
    assert np.array_equal(*counted)


def test_a_smaller_memory_gets_the_prefix_of_a_larger_ones_faults():
    large = sample_faults(_memory(400_000), Chip("flip", rate=2e-3, seed=11))
    for size in (1, 1_000, 123_457, 399_999):
        small = sample_faults(_memory(size), Chip("flip", rate=2e-3, seed=11))
        assert np.array_equal(small.address, large.address[large.address < 8 * size])


def test_kinds_of_one_seed_fault_the_same_cells():
    memory = _memory(100_000)
    kinds = ("flip", "sa0", "sa1", "stuck")
    addresses = {kind: sample_faults(memory, Chip(kind, rate=1e-3, seed=3)).address for kind in kinds}
    assert all(np.array_equal(addresses["flip"], a) for a in addresses.values())


def test_stuck_splits_cells_evenly_between_sa0_and_sa1():
    records = sample_faults(_memory(200_000), Chip("stuck", rate=0.01, seed=4))
    assert set(records.kind.tolist()) == {SA0, SA1}
    assert _within_binomial(int(np.sum(records.kind == SA1)), len(records), 0.5)


def test_bit_filter_restricts_faults_and_sets_the_rate_per_allowed_bit():
    memory = _memory(200_000)
    records = sample_faults(memory, Chip("flip", rate=0.01, seed=1, bits=[7]))
    assert set(records.bit.tolist()) == {7}
    assert target_bits(memory, Chip("flip", rate=0.01, bits=[7])) == 200_000
    assert _within_binomial(len(records), 200_000, 0.01)
    exact = sample_faults(memory, Chip("flip", count=200_000, bits=[0, 7]))
    assert len(exact) == 200_000 and set(exact.bit.tolist()) == {0, 7}
    with pytest.raises(EdgefaultError, match="select no bit|lie beyond"):
        sample_faults(memory, Chip("flip", rate=0.1, bits=[12]))


def test_protected_bits_are_never_faulted_but_others_keep_their_faults():
    memory = _memory(100_000)
    plain = sample_faults(memory, Chip("flip", rate=0.01, seed=8))
    protected = sample_faults(memory, Chip("flip", rate=0.01, seed=8, protect_bits=[6, 7]))
    assert not set(protected.bit.tolist()) & {6, 7}
    assert np.array_equal(protected.address, plain.address[plain.bit < 6])  # dropped, as ECC would


def test_layers_regex_targets_tensors_by_name():
    memory = WeightMemory.from_tensors([("conv1.w", "int8", (1000,), "t"), ("fc.w", "int8", (5000,), "t")])
    records = sample_faults(memory, Chip("flip", rate=0.05, seed=1, layers=r"^conv"))
    assert set(records.tensor_names()) == {"conv1.w"}
    with pytest.raises(EdgefaultError, match="matches no weight tensor"):
        sample_faults(memory, Chip("flip", rate=0.05, layers="nothing"))


def test_mbu_flips_adjacent_bits_inside_one_word():
    memory = _memory(500_000)
    records = sample_faults(memory, Chip("mbu", count=400, seed=3, burst=3))
    assert set(records.kind.tolist()) == {MBU}
    byte = records.address // 8
    for word in np.unique(byte):
        bits = np.sort(records.bit[byte == word])
        runs = np.split(bits, np.flatnonzero(np.diff(bits) != 1) + 1)
        assert all(len(run) >= 3 for run in runs)  # whole bursts, shifted down at the top bit
    assert np.unique(byte).size >= 390
    assert set(sample_faults(memory, Chip("mbu", rate=0.01, seed=3, bits=[7])).bit.tolist()) == {7}


def test_int32_biases_join_only_when_asked():
    memory = WeightMemory.from_tensors([("w", "int8", (100,), "t"), ("b", "int32", (10,), "t")], include_bias=True)
    records = sample_faults(memory, Chip("flip", count=memory.nbits, include_bias=True))
    assert records.bit[records.tensor == 1].max() == 31
    with pytest.raises(EdgefaultError, match="include_bias"):
        sample_faults(memory, Chip("flip", rate=0.1))


def test_sampling_cost_follows_the_fault_count_not_the_bit_count():
    huge = WeightMemory.from_tensors([("w", "int8", (10**11,), "t")])  # 800 Gbit, never materialised
    # Measured in memory, not seconds (a timed bound fails on a slow or loaded machine): about 8000 faults need
    # well under a megabyte here, while anything per cell of the memory would need gigabytes.
    tracemalloc.start()
    try:
        records = sample_faults(huge, Chip("flip", rate=1e-8, seed=1))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 32 << 20, f"{peak} bytes for {len(records)} faults"
    assert _within_binomial(len(records), huge.nbits, 1e-8)
    assert len(sample_faults(huge, Chip("flip", count=5_000, seed=1))) == 5_000


def test_apply_faults_returns_new_arrays_and_keeps_the_inputs():
    memory = _memory(10_000, 20_000)
    arrays = _arrays(memory)
    originals = {name: array.copy() for name, array in arrays.items()}
    records = sample_faults(memory, Chip("flip", rate=0.01, seed=2))
    faulty = apply_faults(arrays, records)
    for name in arrays:
        assert np.array_equal(arrays[name], originals[name])
        assert faulty[name] is not arrays[name]
        changed = np.unpackbits((arrays[name].view(np.uint8) ^ faulty[name].view(np.uint8))).sum()
        assert changed == np.sum(np.array(records.tensor_names()) == name)


def test_sa0_never_sets_and_sa1_never_clears_a_bit():
    memory = _memory(20_000)
    arrays = _arrays(memory)
    clean = arrays["layer0.weight"].view(np.uint8)
    zeroed = apply_faults(arrays, sample_faults(memory, Chip("sa0", rate=0.05, seed=1)))["layer0.weight"].view(np.uint8)
    oned = apply_faults(arrays, sample_faults(memory, Chip("sa1", rate=0.05, seed=1)))["layer0.weight"].view(np.uint8)
    assert not np.any(zeroed & ~clean) and np.any(clean & ~zeroed)
    assert not np.any(clean & ~oned) and np.any(oned & ~clean)


def test_flipping_twice_with_the_same_chip_restores_the_weights():
    memory = _memory(30_000, 10_000)
    arrays = _arrays(memory)
    records = sample_faults(memory, Chip("flip", rate=0.02, seed=9))
    twice = apply_faults(apply_faults(arrays, records), records)
    assert all(np.array_equal(twice[name], arrays[name]) for name in arrays)


def test_apply_faults_patches_int32_in_twos_complement():
    arrays = {"b": np.array([0, -1, 5], dtype=np.int32)}
    records = FaultRecords(("b",), [0, 0, 0], [0, 1, 2], [31, 0, 8], [FLIP, SA0, SA1], [31, 32, 72])
    assert apply_faults(arrays, records)["b"].tolist() == [-(2**31), -2, 5 + 256]


def test_records_reject_disorder_and_duplicates():
    with pytest.raises(EdgefaultError, match="increasing address order"):
        FaultRecords(("w",), [0, 0], [0, 0], [3, 3], [FLIP, FLIP], [3, 3])
    memory = _memory(4)
    with pytest.raises(EdgefaultError, match="outside tensor"):
        records_from_entries([{"tensor": "layer0.weight", "index": 4, "bit": 0, "kind": "flip"}], memory)
    with pytest.raises(EdgefaultError, match="needs tensor"):
        records_from_entries([{"tensor": "nope", "index": 0, "bit": 0, "kind": "flip"}], memory)
