"""Bad input, walked through every subcommand: one line ``edgefault: error: ...``, exit 2, inputs intact, nothing new.

Classes: outputs onto inputs (a run's checkpoint, an ONNX model's external data), counts out of
bounds, malformed lists, a missing device, a read-only folder (a read-only tmpfs mount as root),
a full disk (``RLIMIT_FSIZE`` in a subprocess: writes fail with EFBIG), bad npz files, and the
leftovers a failure must not leave. Plus the consistent model/map pair of ``inject``, the
byte-reproducible checkpoint, progress in logs and the light ``edgefault --help``.
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from cli_helpers import assert_one_error_line, run, run_subprocess
from edgefault.export import ExportSettings, export_run
from edgefault.fileio import check_outputs
from edgefault.progress import Progress
from edgefault.train.run_dir import checkpoint_bytes, load_model

SUBCOMMANDS = ("train", "export", "eval", "cost", "inject", "campaign", "sharpness", "attack", "reproduce",
               "mitigate")
SHARPNESS_FAST = ["--samples", "32", "--batch-size", "32", "--power-iterations", "2", "--probes", "2", "--points",
                  "3", "--grid", "3", "--device", "cpu"]
CAMPAIGN_FAST = ["--data", "mnist5k", "--limit", "20", "--kinds", "flip", "--rates", "0.01", "--chips", "1",
                 "--workers", "1"]
TRAIN_FAST = ["--epochs", "1", "--batch-size", "256", "--device", "cpu"]

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, lenet_run):
    """The session's trained run, its ONNX export, and the same model with its weights in external data."""
    folder = tmp_path_factory.mktemp("bad_input_inputs")
    model = folder / "lenet.onnx"
    export_run(lenet_run, model, ExportSettings(limit=64, min_agreement=0.0))
    external = folder / "ext" / "lenet.onnx"
    external.parent.mkdir()
    onnx.save(onnx.load(model), external, save_as_external_data=True, all_tensors_to_one_file=True,
              location="lenet.onnx.data", size_threshold=0)
    return {"RUN": lenet_run, "ONNX": model, "EXT": external, "EXTDATA": external.with_name("lenet.onnx.data")}


def snapshot(*folders: Path) -> dict[str, str | None]:
    """Every path under the folders with the SHA-256 of its bytes (None for a folder)."""
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else None
            for folder in folders for p in sorted(Path(folder).rglob("*"))}


def watched(inputs, tmp_path):
    return [tmp_path, inputs["RUN"], inputs["ONNX"].parent]


def fill(argv, inputs, tmp_path):
    """Put the real paths in place of RUN, ONNX, EXT, EXTDATA, ONNXDIR and TMP (also as RUN/name)."""
    names = {**{k: str(v) for k, v in inputs.items()}, "ONNXDIR": str(inputs["ONNX"].parent), "TMP": str(tmp_path)}
    filled = []
    for arg in argv:
        head, slash, rest = arg.partition("/")
        filled.append(names[head] + slash + rest if head in names else arg)
    return filled


def assert_refused(code, out, err, fragment, before, after):
    assert_one_error_line(code, out, err, fragment)
    assert "Traceback" not in err
    assert after == before, "the command changed or left files behind"


# -- outputs onto inputs, foreign folders, counts and lists: in-process, one command each -----------------------

CASES = {
    "export onto the run's checkpoint": (["export", "RUN", "--out", "RUN/model.pt"], "model.pt of the input run"),
    "export onto its config": (["export", "RUN", "--out", "RUN/config.json"], "config.json of the input run"),
    "export --limit 0": (["export", "RUN", "--out", "TMP/m.onnx", "--limit", "0"], "--limit must be a positive"),
    "inject --out onto external data": (["inject", "EXT", "--kind", "flip", "--rate", "0.01", "--out", "EXTDATA"],
                                        "external data of the input"),
    "inject --map onto external data": (["inject", "EXT", "--kind", "flip", "--rate", "0.01", "--out", "TMP/f.onnx",
                                         "--map", "EXTDATA"], "external data of the input"),
    "inject --out onto the model": (["inject", "ONNX", "--kind", "flip", "--rate", "0.01", "--out", "ONNX"],
                                    "would overwrite an input file"),
    "inject --out = --map": (["inject", "ONNX", "--kind", "flip", "--rate", "0.01", "--out", "TMP/f.onnx", "--map",
                              "TMP/f.onnx"], "are the same file"),
    "inject --out a folder": (["inject", "ONNX", "--kind", "flip", "--rate", "0.01", "--out", "TMP"], "is a directory"),
    "inject --bits 0-9": (["inject", "ONNX", "--kind", "flip", "--rate", "0.01", "--bits", "0-9", "--out",
                           "TMP/f.onnx"], "bits [8, 9] lie beyond the targeted 8-bit words"),
    "inject --bits 9": (["inject", "ONNX", "--kind", "flip", "--rate", "0.01", "--bits", "9", "--out", "TMP/f.onnx"],
                        "bits [9] lie beyond"),
    "inject --count -1": (["inject", "ONNX", "--kind", "flip", "--count", "-1", "--out", "TMP/f.onnx"],
                          "--count must be a non-negative integer"),
    "inject --seed -1": (["inject", "ONNX", "--kind", "flip", "--rate", "0.1", "--seed", "-1", "--out", "TMP/f.onnx"],
                         "--seed must be a non-negative integer"),
    "eval --threads 9999": (["eval", "ONNX", "--threads", "9999"], "--threads must be a non-negative integer (at most"),
    "eval --batch-size 0": (["eval", "ONNX", "--batch-size", "0"], "--batch-size must be a positive integer"),
    "eval --limit 10^12": (["eval", "ONNX", "--limit", "1000000000000"], "--limit must be a positive integer"),
    "cost --out the models' folder": (["cost", "ONNX", "--out", "ONNXDIR"], "holds an input file"),
    "cost --accelerator the model": (["cost", "ONNX", "--accelerator", "ONNX"], "not a text (TOML) file"),
    "campaign --workers 9999": (["campaign", "ONNX", "--out", "TMP/c", *CAMPAIGN_FAST, "--workers", "9999"],
                                "--workers must be a positive integer (at most"),
    "campaign --chips 10^9": (["campaign", "ONNX", "--out", "TMP/c", *CAMPAIGN_FAST, "--chips", "1000000000"],
                              "--chips must be a positive integer"),
    "campaign --seed -1": (["campaign", "ONNX", "--out", "TMP/c", *CAMPAIGN_FAST, "--seed", "-1"],
                           "--seed must be a non-negative integer"),
    "campaign --rates 0.01,,0.02": (["campaign", "ONNX", "--out", "TMP/c", *CAMPAIGN_FAST, "--rates", "0.01,,0.02"],
                                    "--rates has an empty entry"),
    "campaign --kinds flip,,sa0": (["campaign", "ONNX", "--out", "TMP/c", *CAMPAIGN_FAST, "--kinds", "flip,,sa0"],
                                   "unknown fault kind ''"),
    "campaign --out the models' folder": (["campaign", "ONNX", "--out", "ONNXDIR", *CAMPAIGN_FAST],
                                          "holds an input file"),
    "train --seed -1": (["train", "--out", "TMP/r", "--seed", "-1"], "--seed must be a non-negative integer"),
    "train --epochs 0": (["train", "--out", "TMP/r", "--epochs", "0"], "--epochs must be a positive integer"),
    "train --batch-size 10^9": (["train", "--out", "TMP/r", "--batch-size", "1000000000"], "--batch-size must be"),
    "train --out a run with other settings": (["train", "--out", "RUN", "--epochs", "3"],
                                              "holds a run with other settings (epochs 2 there, 3 here)"),
    "train --out a foreign folder": (["train", "--out", "ONNXDIR", *TRAIN_FAST], "is not empty and holds no run"),
    "train --out a file": (["train", "--out", "ONNX", *TRAIN_FAST], "is a file"),
    "sharpness --samples 0": (["sharpness", "RUN", "--out", "TMP/s", "--samples", "0"], "--samples must be"),
    "sharpness --grid 9999": (["sharpness", "RUN", "--out", "TMP/s", "--grid", "9999"], "--grid must be"),
    "sharpness --out the run": (["sharpness", "RUN", "--out", "RUN", *SHARPNESS_FAST], "holds other files"),
    "attack --flips 0": (["attack", "RUN", "--out", "TMP/a", "--flips", "0"], "--flips must be a positive integer"),
    "attack --out the run": (["attack", "RUN", "--out", "RUN"], "holds the"),
    "attack a model file": (["attack", "ONNX", "--out", "TMP/a"], "attack needs a run directory"),
    "reproduce --epochs 0": (["reproduce", "--out", "TMP/st", "--epochs", "0"], "--epochs must be a positive"),
    "reproduce --chips 10^9": (["reproduce", "--out", "TMP/st", "--chips", "1000000000"], "--chips must be"),
    "reproduce --out a foreign folder": (["reproduce", "--out", "ONNXDIR", "--quick"], "holds other files"),
    "mitigate --workers 9999": (["mitigate", "--out", "TMP/mi", "--workers", "9999"], "--workers must be"),
    "mitigate --epochs 0": (["mitigate", "--out", "TMP/mi", "--epochs", "0"], "--epochs must be a positive"),
}


@pytest.mark.parametrize("case", CASES)
def test_bad_input_is_one_line_exit_2_inputs_intact_nothing_new(case, inputs, tmp_path, capsys):
    argv, fragment = CASES[case]
    argv = fill(argv, inputs, tmp_path)
    before = snapshot(*watched(inputs, tmp_path))
    code, out, err = run(argv, capsys)
    assert_refused(code, out, err, fragment, before, snapshot(*watched(inputs, tmp_path)))


def test_every_subcommand_is_walked():
    from edgefault.cli.main import SUBCOMMAND_MODULES

    assert set(SUBCOMMAND_MODULES) == set(SUBCOMMANDS) == {argv[0] for argv, _ in CASES.values()}


def test_train_into_the_same_run_says_it_is_there(lenet_run, capsys):
    before = snapshot(lenet_run)
    code, out, err = run(["train", "--out", str(lenet_run), "--epochs", "2", "--device", "auto"], capsys)
    assert code == 0 and "already holds this run" in out and "--overwrite" in out, err
    assert snapshot(lenet_run) == before


def test_train_overwrite_replaces_a_run_with_other_settings(lenet_run, tmp_path, capsys):
    copy = tmp_path / "run"
    shutil.copytree(lenet_run, copy)
    code, out, err = run(["train", "--out", str(copy), *TRAIN_FAST, "--overwrite"], capsys)
    assert code == 0, err
    assert json.loads((copy / "config.json").read_text())["epochs"] == 1
    assert sorted(p.name for p in copy.iterdir()) == ["config.json", "metrics.json", "model.pt"]
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("epoch 1/1 ") and "\r" not in err  # a log: one line per epoch


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
@pytest.mark.parametrize("argv", [["train", "--out", "TMP/r", "--device", "cuda"],
                                  ["train", "--out", "TMP/r", "--device", "cuda:3"],
                                  ["sharpness", "RUN", "--out", "TMP/s", *SHARPNESS_FAST, "--device", "cuda"]])
def test_a_missing_device_is_one_line(argv, inputs, tmp_path, capsys):
    before = snapshot(*watched(inputs, tmp_path))
    code, out, err = run(fill(argv, inputs, tmp_path), capsys)
    assert_refused(code, out, err, "no CUDA device on this machine", before, snapshot(*watched(inputs, tmp_path)))


# -- a read-only folder --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def read_only(tmp_path_factory):
    """A folder no command can write to: a read-only tmpfs as root (chmod does not stop root), else mode 0555."""
    folder = tmp_path_factory.mktemp("read_only")
    if os.geteuid() != 0:
        folder.chmod(0o555)
        yield folder
        folder.chmod(0o755)
        return
    try:
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(folder)],
                                 capture_output=True, text=True)
    except FileNotFoundError:
        pytest.skip("no mount command: cannot make a folder read-only for root")
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a read-only tmpfs as root ({mounted.stderr.strip()})")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)


READ_ONLY = {
    "train": ["train", "--out", "RO/run", *TRAIN_FAST],
    "export": ["export", "RUN", "--out", "RO/m.onnx"],
    "inject --out": ["inject", "ONNX", "--kind", "flip", "--rate", "0.01", "--out", "RO/f.onnx"],
    "inject --map": ["inject", "ONNX", "--kind", "flip", "--rate", "0.01", "--out", "TMP/f.onnx", "--map", "RO/m.json"],
    "campaign": ["campaign", "ONNX", "--out", "RO/c", *CAMPAIGN_FAST],
    "sharpness": ["sharpness", "RUN", "--out", "RO/s", *SHARPNESS_FAST],
    "reproduce": ["reproduce", "--out", "RO/st", "--quick"],
    "mitigate": ["mitigate", "--out", "RO/mi", "--quick"],
}


@pytest.mark.parametrize("case", READ_ONLY)
def test_a_read_only_folder_is_one_line(case, read_only, inputs, tmp_path, capsys):
    argv = [a.replace("RO/", f"{read_only}/") for a in fill(READ_ONLY[case], inputs, tmp_path)]
    before = snapshot(*watched(inputs, tmp_path))
    code, out, err = run(argv, capsys)
    assert_refused(code, out, err, "read-only", before, snapshot(*watched(inputs, tmp_path)))
    assert list(read_only.iterdir()) == []


# -- a full disk: a file size limit in a fresh process, so every write fails with EFBIG ---------------------------


def _limit_file_size(limit: int):
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))  # CPython ignores SIGXFSZ: write() fails

    return apply


FULL_DISK = {
    "train": (["train", "--out", "TMP/run", *TRAIN_FAST], 4096),
    "inject --out": (["inject", "ONNX", "--kind", "flip", "--rate", "0.01", "--out", "TMP/f.onnx", "--map",
                      "TMP/m.json"], 4096),
    "inject --map": (["inject", "ONNX", "--kind", "flip", "--rate", "0.2", "--out", "TMP/f.onnx", "--map",
                      "TMP/m.json"], 200_000),  # the model fits, its map of ~100,000 faults does not
    "campaign": (["campaign", "ONNX", "--out", "TMP/c", *CAMPAIGN_FAST], 256),
    "sharpness": (["sharpness", "RUN", "--out", "TMP/s", *SHARPNESS_FAST], 4096),
    "export": (["export", "RUN", "--out", "TMP/m.onnx", "--limit", "32"], 4096),
    "reproduce": (["reproduce", "--out", "TMP/st", "--quick"], 64),
    "mitigate": (["mitigate", "--out", "TMP/mi", "--quick"], 64),
}


@pytest.mark.parametrize("case", FULL_DISK)
def test_a_full_disk_is_one_line_and_leaves_nothing(case, inputs, tmp_path):
    argv, limit = FULL_DISK[case]
    fragment = "file too large (over the file size limit)"
    if case == "export":  # ONNX Runtime's own write of the optimized graph fails first, in its words
        fragment = "edgefault: error:"
    before = snapshot(*watched(inputs, tmp_path))
    result = run_subprocess(*fill(argv, inputs, tmp_path), preexec_fn=_limit_file_size(limit),
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    *progress, last = result.stderr.splitlines() or [""]
    assert result.returncode == 2, result.stderr
    assert_refused(2, result.stdout, last, fragment, before, snapshot(*watched(inputs, tmp_path)))
    assert "Traceback" not in result.stderr
    assert all(line.startswith(("epoch 1/1 ", "sharpness: ")) for line in progress)  # a log's stage lines only


# -- bad npz files (the loader's checks) ---------------------------------------------------------------------------


def _npz_cases(folder: Path) -> dict[str, Path]:
    images = np.zeros((20, 28, 28), np.uint8)
    cases = {"huge labels": dict(x=images, y=np.full(20, 9_000_000_000_000, np.int64)),
             "no images": dict(x=np.zeros((0, 28, 28), np.uint8), y=np.zeros(0, np.int64)),
             "object arrays": dict(x=np.array([None] * 20, dtype=object), y=np.arange(20) % 10)}
    paths = {}
    for name, arrays in cases.items():
        paths[name] = folder / f"{name.replace(' ', '_')}.npz"
        np.savez(paths[name], **arrays)
    paths["not a zip"] = folder / "not_a_zip.npz"
    paths["not a zip"].write_text("just text\n")
    return paths


@pytest.mark.parametrize("case", ["huge labels", "no images", "object arrays", "not a zip"])
def test_bad_npz_is_one_line(case, inputs, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    npz = _npz_cases(data)[case]
    before = snapshot(*watched(inputs, tmp_path))
    # A fresh process with at most 8 GB of address space: a loader that allocates per label cannot take the machine.
    limit = 8 * 2**30
    result = run_subprocess("eval", str(inputs["ONNX"]), "--data", f"npz:{npz}", "--no-timing",
                            preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_AS, (limit, limit)))
    assert result.returncode == 2, result.stderr[-2000:]
    assert "out of memory" not in result.stderr
    assert_refused(2, result.stdout, result.stderr, "npz", before, snapshot(*watched(inputs, tmp_path)))


# -- consistent outputs ----------------------------------------------------------------------------------------------


def test_concurrent_injects_leave_a_model_and_map_that_match(inputs, tmp_path):
    from edgefault.faults import Chip, inject_file

    out, fault_map = tmp_path / "f.onnx", tmp_path / "f.json"
    errors = []

    def inject(seed: int) -> None:
        try:
            for round_ in range(4):
                inject_file(inputs["ONNX"], out, Chip("flip", rate=0.01, seed=10 * seed + round_), map_out=fault_map)
        except Exception as exc:  # noqa: BLE001 - reported by the assert below
            errors.append(exc)

    threads = [threading.Thread(target=inject, args=(seed,)) for seed in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    recorded = json.loads(fault_map.read_text())["model_sha256"]
    assert recorded == hashlib.sha256(out.read_bytes()).hexdigest()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.json", "f.onnx"]  # no temporaries left


_COUNTER = """
import sys
from pathlib import Path
from edgefault.fileio import folder_lock

folder = Path(sys.argv[1])
for _ in range(40):
    with folder_lock(folder):
        count = folder / "count"
        value = int(count.read_text()) if count.exists() else 0
        count.write_text(str(value + 1))
"""


def test_folder_locks_exclude_processes_and_leave_no_lock_file(tmp_path):
    from edgefault.errors import EdgefaultError
    from edgefault.fileio import folder_lock

    # Three processes add 1 forty times each under the folder's lock: a lost update would show in the count.
    workers = [subprocess.Popen([sys.executable, "-c", _COUNTER, str(tmp_path)]) for _ in range(3)]
    assert [worker.wait(timeout=120) for worker in workers] == [0, 0, 0]
    assert (tmp_path / "count").read_text() == "120"
    held = subprocess.Popen([sys.executable, "-c", "import sys, time\nfrom edgefault.fileio import folder_lock\n"
                             "with folder_lock(sys.argv[1], purpose='campaign'):\n print('held', flush=True)\n"
                             " time.sleep(60)", str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert held.stdout.readline().strip() == "held"
        with pytest.raises(EdgefaultError, match="busy"), folder_lock(tmp_path, busy="busy", purpose="campaign"):
            pass
    finally:
        held.kill()
        held.wait()
    with folder_lock(tmp_path, busy="busy", purpose="campaign"):  # the dead holder's lock is gone with it
        pass
    assert sorted(p.name for p in tmp_path.iterdir()) == ["count"]  # no lock file left


def test_checkpoints_are_byte_reproducible(lenet_run, tmp_path):
    from edgefault.train.run_dir import load_config, write_run

    model = load_model(lenet_run / "model.pt")
    config = load_config(lenet_run)
    for name in ("a", "b"):
        write_run(tmp_path / name, model, config, {"test_accuracy": 0.5})
    assert (tmp_path / "a" / "model.pt").read_bytes() == (tmp_path / "b" / "model.pt").read_bytes()
    assert checkpoint_bytes(model) == (tmp_path / "a" / "model.pt").read_bytes()
    assert b"archive/data.pkl" in checkpoint_bytes(model)  # the archive's fixed root name, not a temp file's


def test_a_failed_write_removes_the_folders_it_created(tmp_path):
    from edgefault.fileio import atomic_path, output_folder

    with pytest.raises(RuntimeError), atomic_path(tmp_path / "new" / "deeper" / "x.bin") as temporary:
        temporary.write_bytes(b"half")
        raise RuntimeError("disk full")
    with pytest.raises(RuntimeError), output_folder(tmp_path / "run") as folder:
        (folder / "model.pt").write_bytes(b"x")
        raise RuntimeError("disk full")
    assert list(tmp_path.iterdir()) == []
    kept = tmp_path / "kept"
    kept.mkdir()
    (kept / "old.txt").write_text("old")
    with pytest.raises(RuntimeError), output_folder(kept):
        (kept / "new.txt").write_text("new")
        raise RuntimeError("disk full")
    assert [p.name for p in kept.iterdir()] == ["old.txt"]


def test_hard_links_to_an_input_are_refused(inputs, tmp_path):
    from edgefault.errors import EdgefaultError

    link = tmp_path / "same.onnx"
    os.link(inputs["ONNX"], link)
    with pytest.raises(EdgefaultError, match="would overwrite an input file"):
        check_outputs({"--out": link}, [inputs["ONNX"]])


# -- progress in logs, the light --help, no profiling files -----------------------------------------------------------


def test_progress_prints_one_line_per_stage_when_not_on_a_terminal(capsys):
    with Progress(1000, "campaign", unit="cell") as bar:
        for _ in range(1000):
            bar.update()
        bar.set_postfix_str("mean acc 0.9")
    with Progress(10, "epoch 1/3", unit="batch", log=False) as bar:
        bar.update(10)
    with Progress(10, None) as bar:
        bar.update(10)
    err = capsys.readouterr().err
    assert "\r" not in err and len(err.splitlines()) == 1
    assert err.startswith("campaign: 1000/1000 cells in ") and err.rstrip().endswith(", mean acc 0.9")


def test_help_imports_no_subcommand():
    code = ("import sys; from edgefault.cli.main import main\n"
            "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in ('torch', 'onnx', 'onnxruntime', 'numpy', 'tqdm') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip().splitlines()[-1] == "[]"
    for name in SUBCOMMANDS:
        assert f"  {name} " in result.stdout  # every command listed, with its summary


def test_eval_writes_no_profiling_files(inputs, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = run(["eval", str(inputs["ONNX"]), "--limit", "20", "--no-timing", "--json"], capsys)
    assert code == 0 and isinstance(json.loads(out), dict), err
    assert list(tmp_path.iterdir()) == []
