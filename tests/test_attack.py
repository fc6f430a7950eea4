"""The bit-flip attack: its flips are the byte difference, replay through inject, stay in the stored width,
come from the training split, raise the loss, repeat with the seed; bad input is refused cleanly."""

from __future__ import annotations

import dataclasses
import hashlib
import json

import numpy as np
import onnx
import pytest

from cli_helpers import assert_one_error_line, run
from edgefault.attack import AttackSettings, attack_run, flips_to_break
from edgefault.data import load_dataset
from edgefault.faults import Injector
from edgefault.fileio import to_json
from edgefault.train import TrainConfig, train

pytestmark = pytest.mark.usefixtures("one_thread")
FAST = ["--flips", "5", "--until", "0", "--chips", "2", "--limit", "200", "--batch", "64"]


@pytest.fixture(scope="module")
def attacked(lenet_run, tmp_path_factory):
    """The session's run attacked through the API (the CLI is exercised by the 4-bit test): folder and result."""
    out = tmp_path_factory.mktemp("attack") / "out"
    settings = AttackSettings(flips=5, until=0.0, chips=2, limit=200, batch=64)
    return out, json.loads(to_json(attack_run(lenet_run, None, out, settings).to_dict()))


def flipped_bits(clean: bytes, faulty: bytes) -> set[tuple[str, int, int]]:
    """(tensor, index, bit) of every stored bit that differs between two models' weight codes."""
    before, after = Injector(clean), Injector(faulty)
    widths = {t.name: t.bits for t in before.memory().tensors}
    found = set()
    for name, codes in before.arrays().items():
        mask = (1 << widths[name]) - 1
        diff = (codes.reshape(-1).astype(np.int64) ^ after.arrays()[name].reshape(-1).astype(np.int64)) & mask
        for index in np.flatnonzero(diff).tolist():
            found.update((name, index, bit) for bit in range(widths[name]) if diff[index] >> bit & 1)
    return found


def test_flips_are_exactly_the_byte_difference(attacked):
    out, result = attacked
    clean, faulty = (out / "clean.onnx").read_bytes(), (out / "attacked.onnx").read_bytes()
    flips = json.loads((out / "flips.json").read_text())["faults"]
    assert len(flips) == 5 and [f["step"] for f in flips] == [1, 2, 3, 4, 5]
    assert flipped_bits(clean, faulty) == {(f["tensor"], f["index"], f["bit"]) for f in flips}
    # Outside the flipped weight bytes the models are the same bytes, plus the injector's one metadata entry.
    changed = np.flatnonzero(np.frombuffer(clean, np.uint8) != np.frombuffer(faulty[:len(clean)], np.uint8))
    assert changed.size == len({(f["tensor"], f["index"]) for f in flips})
    assert len(onnx.load_from_string(faulty).metadata_props) == len(onnx.load_from_string(clean).metadata_props) + 1
    last = {(f["tensor"], f["index"]): f["code_after"] for f in flips}
    codes = Injector(faulty).arrays()
    assert all(codes[name].reshape(-1)[index] == value for (name, index), value in last.items())
    assert (out / "accuracy_vs_flips.png").read_bytes()[:4] == b"\x89PNG"
    settings = json.loads((out / "attack.json").read_text())
    assert settings["settings"]["seed"] == 0 and settings["edgefault_version"]
    assert result["summary"].startswith("5 flips brought ORT accuracy to") and "random flips" in result["summary"]


def test_inject_map_in_replays_the_attacked_model_byte_for_byte(attacked, tmp_path, capsys):
    out, _ = attacked
    replay = tmp_path / "replay.onnx"
    code, _, err = run(["inject", str(out / "clean.onnx"), "--map-in", str(out / "flips.json"), "--out", str(replay)],
                       capsys)
    assert code == 0, err
    assert replay.read_bytes() == (out / "attacked.onnx").read_bytes()


def test_loss_rises_with_every_committed_flip(attacked):
    _, result = attacked
    losses = [result["clean_loss"]] + [f["loss"] for f in result["flips"]]
    assert all(b > a for a, b in zip(losses, losses[1:])), losses


def test_attack_batch_comes_from_the_training_split_only(attacked, mnist5k):
    _, result = attacked
    indices = result["batch_indices"]
    assert len(indices) == 64 and len(set(indices)) == 64 and max(indices) < len(mnist5k.train_labels)
    test = {hashlib.sha256(image.tobytes()).digest() for image in mnist5k.test_images}
    assert not any(hashlib.sha256(mnist5k.train_images[i].tobytes()).digest() in test for i in indices)


def test_same_seed_same_flips_other_seed_other_batch(attacked, lenet_run):
    out, result = attacked
    settings = AttackSettings(flips=3, until=0.0, chips=0, limit=200, batch=64)
    again = attack_run(lenet_run, None, None, settings, model_path=out / "clean.onnx")
    keys = ("tensor", "index", "bit", "code_before", "code_after", "loss", "accuracy")
    assert [{k: f[k] for k in keys} for f in again.flips] == [{k: f[k] for k in keys} for f in result["flips"][:3]]
    other = attack_run(lenet_run, None, None, dataclasses.replace(settings, seed=1), model_path=out / "clean.onnx")
    assert set(other.batch_indices) != set(result["batch_indices"])


def test_flips_to_break_gives_median_and_range(attacked, lenet_run):
    out, _ = attacked
    settings = AttackSettings(flips=2, until=1.0, chips=0, limit=100, batch=32)
    reached = flips_to_break(lenet_run, "mnist5k", settings, batches=2, model_path=out / "clean.onnx")
    assert reached.counts == (0, 0) and reached.median == 0.0  # the clean model is already at or below 100%
    never = flips_to_break(lenet_run, "mnist5k", dataclasses.replace(settings, until=0.0), batches=2,
                           model_path=out / "clean.onnx")
    assert never.counts == (None, None) and never.median is None and never.text() == ">2 [>2, >2]"


def test_chance_is_the_most_frequent_class_of_the_images_scored(attacked, lenet_run, mnist5k):
    # The first 200 test images are unbalanced (class 8 is 15% of them): a model collapsed onto class 8
    # scores 15% there, so the default target is 16%, not 1 / classes + 1 point.
    out, _ = attacked
    share = np.bincount(mnist5k.test_labels[:200]).max() / 200
    assert share > 0.1
    found = flips_to_break(lenet_run, "mnist5k", AttackSettings(flips=1, chips=0, limit=200, batch=16), batches=1,
                           model_path=out / "clean.onnx")
    assert found.target == pytest.approx(share + 0.01)


def test_no_flip_outside_the_stored_width_of_a_4_bit_model(tmp_path, capsys):
    full = load_dataset("mnist5k")
    data = dataclasses.replace(full, train_images=full.train_images[:512], train_labels=full.train_labels[:512])
    run_dir = tmp_path / "w4"
    train(TrainConfig(model="lenet5", epochs=1, wbits=4, batch_size=128, device="cpu"), run_dir, data=data,
          progress=False)
    out = tmp_path / "out"
    code, stdout, err = run(["attack", str(run_dir), "--out", str(out), *FAST, "--chips", "0", "--json"], capsys)
    assert code == 0, err
    flips = json.loads(stdout)["flips"]
    assert flips and all(0 <= f["bit"] < 4 and -8 <= f["code_after"] <= 7 for f in flips)
    codes = Injector((out / "attacked.onnx").read_bytes()).arrays()
    assert all(-8 <= int(c.min()) and int(c.max()) <= 7 for c in codes.values())


@pytest.mark.parametrize("case", ["flips 0", "codes disagree", "foreign model", "out holds the run"])
def test_bad_input_one_line_exit_2_nothing_written(case, attacked, lenet_run, tmp_path, capsys):
    out, _ = attacked
    faulty = tmp_path / "other.onnx"
    if case == "codes disagree":  # the clean export with one weight flipped: no longer this checkpoint's codes
        code, _, err = run(["inject", str(out / "clean.onnx"), "--kind", "flip", "--count", "1", "--out", str(faulty)],
                           capsys)
        assert code == 0, err
    argv, fragment = {
        "flips 0": (["attack", str(lenet_run), "--flips", "0"], "--flips must be a positive integer"),
        "codes disagree": (["attack", str(lenet_run), "--model", str(faulty)], "disagree on the weight codes"),
        "foreign model": (["attack", str(out / "clean.onnx")], "attack needs a run directory"),
        "out holds the run": (["attack", str(lenet_run), "--out", str(lenet_run)], "holds the"),
    }[case]
    target = tmp_path / "result"
    before = sorted(p.name for p in tmp_path.iterdir())
    code, stdout, err = run([*argv, *([] if "--out" in argv else ["--out", str(target)]), "--limit", "50"], capsys)
    assert_one_error_line(code, stdout, err, fragment)
    assert sorted(p.name for p in tmp_path.iterdir()) == before and not target.exists()


def test_a_model_already_at_the_target_needs_no_flip(attacked, lenet_run, tmp_path):
    out, _ = attacked
    settings = AttackSettings(until=1.0, chips=2, limit=50, batch=16)
    result = attack_run(lenet_run, None, tmp_path / "zero", settings, model_path=out / "clean.onnx")
    assert result.flips == () and result.reached and result.summary.startswith("0 flips to reach")
    assert json.loads((tmp_path / "zero" / "flips.json").read_text())["faults"] == []
    assert sorted(p.name for p in (tmp_path / "zero").iterdir()) == [
        "accuracy_vs_flips.png", "attack.json", "attacked.onnx", "flips.json"]


@pytest.mark.parametrize("name", ["lenet5", "resnet20"])
def test_a_trial_on_the_cached_prefix_equals_a_whole_forward_pass(name):
    import torch

    from edgefault.attack import CodeTwin
    from edgefault.export import build_onnx
    from edgefault.models import create_model

    torch.manual_seed(0)
    model = create_model(name)
    model.train()
    model(torch.randn(8, *model.input_shape))  # initializes the activation quantizers
    model.eval()
    injector = Injector(build_onnx(model).SerializeToString())
    images, labels = torch.randn(8, *model.input_shape), torch.randint(0, 10, (8,))
    twin = CodeTwin(model, injector.memory(), injector.arrays())
    twin.cache(images)
    for layer in twin.names:
        value = int(twin.flat_codes(layer)[1]) ^ 0x40
        with twin.trial(layer, 1, value):
            whole = twin.loss(images, labels)
        assert twin.trial_loss(labels, layer, 1, value) == whole
    twin.close()
