"""Hostile files and hostile names (issue 21): device nodes and FIFOs, CSV and terminal injection, bombs,
numbers that overflow, signals, diverged trainings.

Each case ends in one line ``edgefault: error: ...`` and exit 2 (an interrupt: its own line and exit
130), no traceback, the inputs intact and nothing left behind. Character devices are made here with
``os.mknod`` (root only; skipped otherwise): no system device is ever written or read.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from cli_helpers import assert_one_error_line, run, run_subprocess
from edgefault.export import ExportSettings, export_run
from edgefault.faults import Chip, Injector, inject_file
from edgefault.mitigate.board import median_interval, method_scores
from edgefault.campaign.results import measured_records
from edgefault.text import csv_bytes, md_table, printable
from edgefault.train.run_dir import checkpoint_bytes, load_model

pytestmark = pytest.mark.usefixtures("one_thread")
HOSTILE_TENSOR = "=cmd|' /C calc'!A0\x1b[5m"
FAST_CAMPAIGN = ["--data", "mnist5k", "--limit", "20", "--kinds", "flip", "--rates", "0.01", "--chips", "2",
                 "--workers", "1"]


def snapshot(*folders: Path) -> dict[str, tuple]:
    """Every path under the folders with its kind and, for regular files, its bytes."""
    found = {}
    for folder in folders:
        for path in sorted(Path(folder).rglob("*")):
            mode = path.lstat().st_mode
            found[str(path)] = (stat.S_IFMT(mode), path.read_bytes() if stat.S_ISREG(mode) else path.lstat().st_rdev)
    return found


def refused(argv, capsys, fragment, *watched):
    """Run argv in-process; assert one error line with ``fragment``, no traceback, and nothing changed."""
    before = snapshot(*watched)
    code, out, err = run([str(a) for a in argv], capsys)
    assert_one_error_line(code, out, err, fragment)
    assert "Traceback" not in err
    assert snapshot(*watched) == before, "the command changed or left files behind"
    return err


@pytest.fixture(scope="module")
def model(tmp_path_factory, lenet_run):
    folder = tmp_path_factory.mktemp("hostile_model")
    path = folder / "lenet.onnx"
    export_run(lenet_run, path, ExportSettings(limit=64, min_agreement=0.0))
    return path


def _device(folder: Path, name: str, minor: int) -> Path:
    """A character device of our own: 1,3 behaves as /dev/null, 1,5 as /dev/zero (root only)."""
    if os.geteuid() != 0:
        pytest.skip("making a character device needs root (os.mknod)")
    path = folder / name
    try:
        os.mknod(path, 0o666 | stat.S_IFCHR, os.makedev(1, minor))
    except OSError as exc:
        pytest.skip(f"cannot make a character device here ({exc})")
    return path


# -- 1. device nodes, FIFOs and sockets are never replaced by an output --------------------------------------------


@pytest.mark.parametrize("case", ["inject --out", "inject --map", "export --out"])
def test_an_output_on_a_device_is_refused_and_the_device_stays(case, model, lenet_run, tmp_path, capsys):
    node = _device(tmp_path, "null", 3)
    argv = {"inject --out": ["inject", model, "--kind", "flip", "--rate", "1e-3", "--out", node],
            "inject --map": ["inject", model, "--kind", "flip", "--rate", "1e-3", "--out", tmp_path / "f.onnx",
                             "--map", node],
            "export --out": ["export", lenet_run, "--out", node]}[case]
    refused(argv, capsys, "is a character device, not a regular file", tmp_path, model.parent, lenet_run)
    assert stat.S_ISCHR(node.lstat().st_mode)


def test_an_output_on_a_fifo_is_refused(model, tmp_path, capsys):
    fifo = tmp_path / "out.onnx"
    os.mkfifo(fifo)
    refused(["inject", model, "--kind", "flip", "--rate", "1e-3", "--out", fifo], capsys, "is a FIFO", tmp_path)


# -- 2. CSV and Markdown injection; 3. terminal escapes, glyph warnings --------------------------------------------


def test_csv_cells_and_markdown_cells_are_neutralized():
    text = csv_bytes(["a", "b"], [{"a": c + "x", "b": -1.5} for c in "=+-@\t\r"]).decode()
    rows = list(csv.reader(io.StringIO(text, newline="")))
    assert len(rows) == 7 and all(row[0].startswith("'") and row[1] == "-1.5" for row in rows[1:])
    table = md_table(["name", "x"], [["a|b\nc", "1"]]).splitlines()
    assert len(table) == 3 and table[2] == "| a\\|b\\nc | 1 |"
    assert printable("ok\x1b]0;pwned\x07\u202e") == "ok\\x1b]0;pwned\\x07\\u202e"


def _hostile_copy(model: Path, target: Path) -> Path:
    """The model with a weight tensor named like a formula and an escape, a node named with one, and metadata
    whose version sets the window title and whose dataset fakes an output line."""
    proto = onnx.load(model)
    weight = next(t.name for t in proto.graph.initializer if t.data_type == TensorProto.INT8)
    for tensor in proto.graph.initializer:
        if tensor.name == weight:
            tensor.name = HOSTILE_TENSOR
    for node in proto.graph.node:
        node.input[:] = [HOSTILE_TENSOR if name == weight else name for name in node.input]
        if node.op_type == "Conv" and not node.name.startswith("conv\x1b"):
            node.name = "conv\x1b[5m" if "conv\x1b[5m" not in [n.name for n in proto.graph.node] else node.name
    props = {p.key: p.value for p in proto.metadata_props}
    props["edgefault.version"] = json.dumps("=1+1\x1b]0;pwned\x07")
    props["edgefault.dataset"] = json.dumps("mnist5k\nfake: line")
    props["note"] = target.name  # two copies, two different models
    del proto.metadata_props[:]
    for key, value in props.items():
        proto.metadata_props.add(key=key, value=value)
    onnx.save(proto, target)
    return target


def _number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def _table_widths(markdown: str) -> list[set[int]]:
    """For each Markdown table, the set of cell counts of its rows (one count when no cell breaks the table)."""
    tables, current = [], None
    for line in markdown.splitlines() + [""]:
        if line.startswith("|"):
            current = current or set()
            current.add(len(line.replace("\\|", "").split("|")))
        elif current is not None:
            tables.append(current)
            current = None
    return tables


def test_hostile_names_reach_no_terminal_csv_or_markdown_raw(model, tmp_path, capsys, recwarn):
    inputs = tmp_path / "in"
    inputs.mkdir()
    first, second = _hostile_copy(model, inputs / "=2+3.onnx"), _hostile_copy(model, inputs / "-dash.onnx")
    before = snapshot(inputs)
    code, out, err = run(["eval", str(first), "--limit", "20", "--no-timing"], capsys)
    assert code == 0, err
    assert "\x1b" not in out + err and "\x07" not in out
    assert not [line for line in out.splitlines() if line.startswith("fake: line")]  # no forged output line
    assert "=1+1\\x1b]0;pwned\\x07" in out and "conv\\x1b[5m" in out
    out_dir = tmp_path / "campaign"
    code, out, err = run(["campaign", str(first), str(second), "--out", str(out_dir), *FAST_CAMPAIGN, "--per-layer"],
                         capsys)
    assert code == 0, err
    assert "\x1b" not in out + err
    assert not [w for w in recwarn if "Glyph" in str(w.message)]  # no "Glyph 27 missing" from the plots
    for name in ("summary.csv", "paired.csv"):
        cells = [cell for row in csv.reader(io.StringIO((out_dir / name).read_text())) for cell in row]
        assert not [c for c in cells if c[:1] in ("=", "+", "@", "\t", "\r") or c[:1] == "-" and not _number(c)], name
    assert "'=2+3" in (out_dir / "summary.csv").read_text() and "'-dash" in (out_dir / "paired.csv").read_text()
    markdown = (out_dir / "summary.md").read_text()
    assert "\x1b" not in markdown and all(len(widths) == 1 for widths in _table_widths(markdown))
    assert "=cmd\\|' /C calc'!A0\\x1b[5m" in markdown
    assert snapshot(inputs) == before
    assert not [p for p in out_dir.iterdir() if p.name.startswith(".")]  # a finished campaign folder keeps no lock file


# -- 4. tracebacks left: bombs, deep JSON, huge integers, huge CSV fields, overflowing options ---------------------


def _deep(depth: int) -> str:
    return "[" * depth + "]" * depth


def _hostile_file(case: str, path: Path, texts: dict[str, tuple[str, str]]) -> tuple[Path, str]:
    """``path`` made a FIFO, a device (``case``), or written with ``texts[case]``'s text; with the error it gives."""
    if case == "fifo":
        os.mkfifo(path)
        return path, "not a regular file (a FIFO)"
    if case == "device":
        return _device(path.parent, "zero", 5), "not a regular file (a character device)"
    text, fragment = texts[case]
    path.write_text(text)
    return path, fragment


@pytest.mark.parametrize("case", ["deep", "digits", "fifo", "device"])
def test_map_in_hostile_json_is_one_line(case, model, tmp_path, capsys):
    path, fragment = _hostile_file(case, tmp_path / "map.json", {
        "deep": (_deep(200_000), "nested deeper than"),
        "digits": ('{"format": "edgefault-faultmap", "faults": [' + "9" * 100_000 + "]}", "not valid JSON")})
    refused(["inject", model, "--map-in", path, "--out", tmp_path / "f.onnx"], capsys, fragment, tmp_path,
            model.parent)


@pytest.mark.parametrize("key, value, fragment", [
    ("num_classes", "5" * 5000, "not valid JSON"),
    ("recipe", _deep(100_000), "nested deeper than"),
    ("std", "[1e-300]", "metadata std must be at least"),
])
def test_hostile_metadata_is_one_line(key, value, fragment, model, tmp_path, capsys):
    proto = onnx.load(model)
    for entry in proto.metadata_props:
        if entry.key == f"edgefault.{key}":
            entry.value = value
    onnx.save(proto, tmp_path / "m.onnx")
    refused(["eval", tmp_path / "m.onnx", "--limit", "8", "--no-timing"], capsys, fragment, tmp_path)


def test_a_decompression_bomb_in_a_folder_dataset_is_one_line(model, tmp_path, capsys, monkeypatch):
    from PIL import Image

    for label in ("0", "1"):
        (tmp_path / "data" / label).mkdir(parents=True)
        Image.new("L", (28, 28)).save(tmp_path / "data" / label / "a.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # 28x28 is then a bomb, as 30000x30000 is by default
    refused(["eval", model, "--data", f"folder:{tmp_path / 'data'}", "--no-timing"], capsys, "decompression bomb",
            tmp_path)


@pytest.mark.parametrize("case", ["huge field", "fifo", "device"])
def test_mitigate_voltage_curve_hostile_files(case, tmp_path, capsys):
    curve, fragment = _hostile_file(case, tmp_path / "curve.csv", {
        "huge field": ("voltage,bit_error_rate,relative_energy\n" + "1" * 200_000 + ",0,1\n",
                       "field larger than field limit")})
    refused(["mitigate", "--out", tmp_path / "mi", "--quick", "--voltage-curve", curve], capsys, fragment, tmp_path)


@pytest.mark.parametrize("data", ["npz:FIFO", "npz:DEVICE"])
def test_dataset_files_that_are_not_files(data, model, tmp_path, capsys):
    path = tmp_path / "data.npz"
    if data == "npz:FIFO":
        os.mkfifo(path)
    else:
        path = _device(tmp_path, "zero", 5)
    refused(["eval", model, "--data", f"npz:{path}", "--no-timing"], capsys, "not a regular file", tmp_path)


def test_a_model_path_that_is_a_fifo(tmp_path, capsys):
    os.mkfifo(tmp_path / "m.onnx")
    refused(["eval", tmp_path / "m.onnx"], capsys, "not a regular file (a FIFO)", tmp_path)


@pytest.mark.parametrize("argv, fragment", [
    (["train", "--lr", "1e39"], "--lr must be a finite number within float32's range"),
    (["train", "--lr", "1e308"], "--lr must be a finite number"),
    (["train", "--weight-decay", "1e308"], "--weight-decay must be a finite number"),
    (["train", "--rho", "nan"], "--rho must be a finite number"),
    (["eval", "MODEL", "--std", "1e-300"], "--std values must be at least"),
    (["eval", "MODEL", "--std", "1e-45"], "--std values must be at least"),
    (["eval", "MODEL", "--mean", "1e39"], "--mean values must be a finite number"),
    (["eval", "MODEL", "--scale", "1e39"], "--scale must be a finite number"),
    (["eval", "MODEL", "--scale", "1e37"], "is not finite in float32 after"),
])
def test_numbers_that_overflow_are_one_line(argv, fragment, model, tmp_path, capsys):
    argv = [str(model) if a == "MODEL" else a for a in argv]
    argv += ["--out", str(tmp_path / "run")] if argv[0] == "train" else ["--limit", "8", "--no-timing"]
    refused(argv, capsys, fragment, tmp_path, model.parent)


def test_a_scale_above_1e9_divides_by_no_zero(model, capsys):
    code, out, err = run(["eval", str(model), "--scale", "1e10", "--limit", "8", "--no-timing", "--json"], capsys)
    assert code == 0 and "RuntimeWarning" not in err, err
    assert 0 <= json.loads(out)["accuracy"] <= 1


# -- 5. signals: SIGTERM as SIGINT, no temporaries left, stale ones swept ------------------------------------------


def _big_model(path: Path, weights: int = 2_000_000) -> Path:
    codes = np.random.default_rng(0).integers(-127, 128, (weights // 1000, 1000), dtype=np.int8)
    inits = [numpy_helper.from_array(codes, "w"), numpy_helper.from_array(np.array(0.01, np.float32), "s"),
             numpy_helper.from_array(np.array(0, np.int8), "z")]
    nodes = [helper.make_node("DequantizeLinear", ["w", "s", "z"], ["wd"]),
             helper.make_node("MatMul", ["x", "wd"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, codes.shape[0]])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1000])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_while_writing_cleans_up_in_one_line(signum, tmp_path):
    source = _big_model(tmp_path / "big.onnx")
    out = tmp_path / "out"
    out.mkdir()
    process = subprocess.Popen([sys.executable, "-m", "edgefault", "inject", str(source), "--kind", "flip", "--rate",
                                "0.05", "--out", str(out / "f.onnx"), "--map", str(out / "map.json")],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not any(out.iterdir()) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)  # the temporaries appear when writing starts: interrupt it there
    process.send_signal(signum)
    stdout, stderr = process.communicate(timeout=60)
    if any(out.iterdir()):  # on a loaded machine the signal may land only once both outputs are in place (while the
        # last lines print, or after: status 130, or -signum once the handler is gone), or after the exit (status 0):
        # then both are whole, and a matching pair
        assert sorted(p.name for p in out.iterdir()) == ["f.onnx", "map.json"]
        assert process.returncode in (0, 130, -signum), stderr
        written = hashlib.sha256((out / "f.onnx").read_bytes()).hexdigest()
        assert json.loads((out / "map.json").read_text())["model_sha256"] == written
        return
    assert process.returncode == 130, stderr
    assert stderr == "edgefault: error: interrupted\n"  # one line, no blank line before it, no traceback
    assert list(out.iterdir()) == []


def test_stale_temporaries_of_dead_processes_are_swept(model, tmp_path):
    dead, alive = tmp_path / ".f.onnx.4194305.abc.tmp", tmp_path / f".f.onnx.{os.getpid()}.abc.tmp"
    recent = tmp_path / ".f.onnx.4194306.new.tmp"
    for path in (dead, alive, recent):
        path.write_bytes(b"half")
    old = time.time() - 3600
    os.utime(dead, (old, old))
    os.utime(alive, (old, old))
    inject_file(model, tmp_path / "f.onnx", Chip("flip", rate=1e-3))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([alive.name, recent.name, "f.onnx"])


# -- 6. inject in pieces: the same bytes as the whole chip; the out-of-memory advice fits the command --------------


def test_inject_in_pieces_writes_the_bytes_of_the_whole_chip(tmp_path):
    source = _big_model(tmp_path / "m.onnx", weights=150_000)  # 1.2 M bits: two pieces of about 1 M cells
    chip = Chip("stuck", rate=0.2, seed=4)
    total = inject_file(source, tmp_path / "f.onnx", chip, map_out=tmp_path / "map.json")
    faulty, fault_map = Injector(source).inject(chip)
    assert (tmp_path / "f.onnx").read_bytes() == faulty
    document = json.loads((tmp_path / "map.json").read_text())
    assert document["faults"] == fault_map.to_dict()["faults"] and total.summary() == fault_map.summary()


def test_out_of_memory_advice_fits_the_command():
    from edgefault.cli.main import out_of_memory_line

    assert "--batch-size" not in out_of_memory_line(["inject", "m.onnx", "--map-in", "/x"])
    assert "--rate" in out_of_memory_line(["inject", "m.onnx", "--rate", "1"])


# -- 9. diverged trainings: stopped, nothing kept; non-finite weights refused by name ------------------------------


def test_a_diverging_training_stops_at_the_first_non_finite_loss(tmp_path, capsys):
    err = refused(["train", "--lr", "1e30", "--epochs", "1", "--batch-size", "256", "--device", "cpu", "--out",
                   tmp_path / "run"], capsys, "training diverged: the loss is nan at epoch 1, step", tmp_path)
    assert "nothing written" in err


@pytest.fixture
def nan_run(lenet_run, tmp_path):
    run_dir = tmp_path / "nan_run"
    run_dir.mkdir()
    for name in ("config.json", "metrics.json"):
        (run_dir / name).write_bytes((lenet_run / name).read_bytes())
    network = load_model(lenet_run / "model.pt")
    with torch.no_grad():
        next(network.parameters()).fill_(float("nan"))
    (run_dir / "model.pt").write_bytes(checkpoint_bytes(network))
    return run_dir


@pytest.mark.parametrize("command", ["export", "sharpness"])
def test_non_finite_weights_are_refused_by_name(command, nan_run, tmp_path, capsys):
    out = tmp_path / ("m.onnx" if command == "export" else "s")
    refused([command, nan_run, "--out", out], capsys, "non-finite weights (NaN or inf) in ", tmp_path)


# -- 10. mitigate's intervals --------------------------------------------------------------------------------------


def test_accuracy_intervals_stay_in_0_1_and_few_chips_say_their_coverage():
    records = [{"model": "m", "mode": "clean", "accuracy": 0.9, "images": 10, "error": None}]
    records += [{"model": "m", "mode": "grid", "kind": "flip", "rate": 0.01, "chip": k, "accuracy": a, "error": None}
                for k, a in enumerate((0.1, 1.0))]
    point = method_scores({0: measured_records(records)}, "m", ("flip",), (0.01,), 2)["kinds"]["flip"]["rates"][0]
    assert 0.0 <= point["accuracy_low"] <= point["accuracy_high"] <= 1.0
    assert median_interval([1.0, 2.0])["confidence"] == 0.5  # the range of 2 chips covers the median half the time
    assert median_interval(range(20))["confidence"] >= 0.95


# -- 12. python -m edgefault, and a bare edgefault -----------------------------------------------------------------


def test_python_m_edgefault_and_a_bare_command():
    result = subprocess.run([sys.executable, "-m", "edgefault"], capture_output=True, text=True)
    assert result.returncode == 2 and result.stdout == ""  # as click does for a group: usage on stderr, exit 2
    assert result.stderr.startswith("Usage: edgefault") and "\nCommands:\n" in result.stderr
    assert "  inject " in result.stderr and "edgefault: error" not in result.stderr
    assert run_subprocess("--version").stdout.startswith("edgefault, version")
