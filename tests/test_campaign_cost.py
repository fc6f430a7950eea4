"""``campaign --cost``: the faulty chip's kernels costed per cell with ``cost``'s own tally, and the change from clean.

Real ONNX Runtime models (the quantizer's QDQ CNN), real worker processes; the numbers are
checked against ``edgefault cost`` on the same images.
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import pytest

from cli_helpers import assert_one_error_line, run
from edgefault.campaign import measured_records
from edgefault.cli.main import main
from onnx_builders import digits_npz, ort_quantized_cnn

FLAGS = ["--input-size", "1x28x28", "--mean", "0.1307", "--std", "0.3081"]
IMAGES = 40


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return ort_quantized_cnn(tmp_path_factory.mktemp("campaign_cost_models"), "qdq_per_channel")


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    return digits_npz(tmp_path_factory.mktemp("campaign_cost_data") / "digits.npz", IMAGES, seed=2)


def campaign(model, digits, out, capsys, *extra):
    code, stdout, err = run(["campaign", str(model), "--data", digits, "--out", str(out), "--kinds", "sa1",
                             "--rates", "0,0.05", "--chips", "2", "--workers", "1", "--json", *FLAGS, *extra], capsys)
    assert code == 0, err
    records = [json.loads(line) for line in (Path(out) / "results.jsonl").read_text().splitlines()]
    return json.loads(stdout)["summary"], records


@pytest.fixture(scope="module")
def costed(model, digits, tmp_path_factory):
    """One ``campaign --cost --per-layer --per-bit`` run, shared by the tests that read it."""
    out = tmp_path_factory.mktemp("campaign_cost") / "c"
    return out, _run_quiet(["campaign", str(model), "--data", digits, "--out", str(out), "--kinds", "sa1",
                            "--rates", "0,0.05", "--chips", "2", "--workers", "1", "--json", "--cost", "--per-layer",
                            "--per-bit", *FLAGS])


def _run_quiet(argv):
    """Run the CLI in-process outside a test (a module fixture has no capsys); return (summary, records)."""
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout), pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 0
    out = Path(argv[argv.index("--out") + 1])
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    return json.loads(stdout.getvalue())["summary"], records


def test_a_clean_chip_gives_exactly_the_clean_cost_numbers(model, digits, costed, capsys):
    _, (summary, records) = costed
    code, stdout, err = run(["cost", str(model), "--data", digits, "--json", *FLAGS], capsys)
    assert code == 0, err
    clean = json.loads(stdout)
    zero_rate = [r for r in records if r["mode"] == "clean" or (r["mode"] == "grid" and r["rate"] == 0)]
    assert len(zero_rate) == 3
    for record in zero_rate:
        layers = record["cost"]["layers"]
        assert [layer["name"] for layer in layers] == [layer["name"] for layer in clean["layers"]]
        for mine, theirs in zip(layers, clean["layers"]):
            assert mine["cycles"] == {mode: theirs["cycles"][mode] for mode in mine["cycles"]}
            assert mine["energy_pj"] == theirs["energy_pj"]
            bits = theirs["activation_bits"]
            assert mine["density"] == pytest.approx(bits["values"] / bits["dense"], rel=1e-12)
        total = record["cost"]["total"]
        assert total["speedup"]["skipping_imbalanced"] == clean["total"]["speedup"]["skipping_imbalanced"]
        assert total["energy_pj"]["skipping"] == clean["total"]["energy_pj"]["skipping"]
    zero = next(g for g in summary["cost"]["groups"] if g["mode"] == "grid" and g["rate"] == 0)
    assert zero["speedup"]["mean"] == 0 and zero["energy"]["mean"] == 0 and zero["mac_density"]["mean"] == 0


def test_stuck_at_1_on_a_high_bit_makes_the_activations_denser(costed):
    out, (summary, records) = costed
    high = next(g for g in summary["cost"]["groups"] if g["mode"] == "bit" and g["target"] == 6 and g["rate"] > 0)
    assert high["n"] == 2 and high["mac_density"]["mean"] > 0
    assert high["speedup"]["mean"] < 0 and high["energy"]["mean"] > 0  # denser: slower and hungrier
    assert all(layer["density"]["mean"] >= 0 for layer in high["layers"][1:])  # the input image is no fault's
    assert "Cost on a zero-skipping accelerator" in (out / "summary.md").read_text()
    typed = measured_records(records)
    assert all(r.cost is not None for r in typed)


def test_a_cell_from_a_cut_keeps_the_clean_kernels_before_it(costed):
    _, (_, records) = costed
    clean = next(r for r in records if r["mode"] == "clean")["cost"]["layers"]
    cut = [r for r in records if r.get("cut") is not None]
    assert cut, "no cell ran from a cut"
    for record in cut:
        layers = record["cost"]["layers"]
        assert layers[0] == clean[0]  # the first conv reads the input: before every cut


def test_default_campaign_records_have_no_cost_and_resume_refuses_to_mix(model, digits, tmp_path, capsys):
    out = tmp_path / "plain"
    summary, records = campaign(model, digits, out, capsys)
    assert records and all("cost" not in record for record in records)
    assert "cost" not in summary
    code, stdout, err = run(["campaign", str(model), "--data", digits, "--out", str(out), "--kinds", "sa1",
                             "--rates", "0,0.05", "--chips", "2", "--workers", "1", "--cost", *FLAGS], capsys)
    assert_one_error_line(code, stdout, err, "accelerator: None there")
    code, stdout, err = run(["campaign", str(model), "--data", digits, "--out", str(tmp_path / "x"),
                             "--accelerator", "acc.toml", *FLAGS], capsys)
    assert_one_error_line(code, stdout, err, "add --cost")
    assert not (tmp_path / "x").exists()
