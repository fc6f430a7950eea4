"""Training: sharpness-aware steps restore what they perturb, runs are deterministic, the CLI is strict."""

import json

import pytest
import torch
import torch.nn.functional as F

from edgefault.data import Dataset
from edgefault.errors import EdgefaultError
from edgefault.models import QuantWeightLayer, create_model
from edgefault.train import TrainConfig, load_run, train
from edgefault.train.steps import plain_step, saq_step, sam_step
from cli_helpers import run, run_subprocess


def _batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(16, 1, 28, 28, generator=g), torch.randint(0, 10, (16,), generator=g)


def _model():
    torch.manual_seed(0)
    model = create_model("resnet20", num_classes=10).train()
    model(_batch(1)[0])  # initialize the activation step sizes
    return model


def _closure(model, images, labels):
    def closure():
        logits = model(images)
        return F.cross_entropy(logits, labels), logits

    return closure


@pytest.mark.parametrize("method", ["sam", "asam", "saq"])
def test_sharpness_aware_step_restores_the_parameters_it_perturbed(method):
    model = _model()
    before = {k: v.clone() for k, v in model.state_dict().items() if "running" not in k and "num_batches" not in k}
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)  # a zero step: only the perturbation could move them
    closure = _closure(model, *_batch())
    if method == "saq":
        saq_step(model, closure, optimizer, rho=0.5)
    else:
        sam_step(model, closure, optimizer, rho=0.5, adaptive=method == "asam")
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(m.weight_perturbation is None and m.quantized_weight is None
               for m in model.modules() if isinstance(m, QuantWeightLayer))


@pytest.mark.parametrize("method", ["sam", "saq"])
def test_sharpness_aware_gradient_differs_from_the_plain_gradient(method):
    grads = {}
    for name in ("plain", method):
        model = _model()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
        closure = _closure(model, *_batch())
        if name == "plain":
            plain_step(closure, optimizer)
        elif name == "saq":
            saq_step(model, closure, optimizer, rho=0.5)
        else:
            sam_step(model, closure, optimizer, rho=0.5)
        grads[name] = model.stem.weight.grad.clone()
    assert not torch.allclose(grads["plain"], grads[method])
    # SAQ's second-pass gradient reaches the latent weights through the straight-through estimator.
    assert grads[method].abs().sum() > 0


def _small(data: Dataset) -> Dataset:
    return Dataset(data.spec, data.train_images[:512], data.train_labels[:512], data.test_images[:200],
                   data.test_labels[:200], data.class_names, data.mean, data.std)


def test_same_seed_same_weights_and_other_seed_other_weights(mnist5k):
    small = _small(mnist5k)
    # On the CPU: on a CUDA machine ``auto`` would train with cuDNN, whose convolution gradients are not bitwise
    # reproducible, so the equality below would test cuDNN rather than the seeding.
    runs = [train(TrainConfig(epochs=1, seed=seed, sharpness="saq", device="cpu"), data=small, progress=False)[0]
            for seed in (3, 3, 4)]
    first, second, third = (r.state_dict() for r in runs)
    assert all(torch.equal(first[k], second[k]) for k in first)
    assert not torch.equal(first["conv1.weight"], third["conv1.weight"])


def test_run_dir_holds_a_safe_checkpoint_config_and_metrics(lenet_run):
    payload = torch.load(lenet_run / "model.pt", weights_only=True)
    assert payload["model_spec"]["name"] == "lenet5"
    config = json.loads((lenet_run / "config.json").read_text())
    assert config["seed"] == 0 and config["edgefault_version"] and config["rho"] == 0.0
    metrics = json.loads((lenet_run / "metrics.json").read_text())
    assert len(metrics["epochs"]) == 2 and 0.8 < metrics["test_accuracy"] <= 1.0
    assert set(metrics["activation_sparsity"]) == {"act1", "act2", "act3", "act4", "overall"}
    run = load_run(lenet_run)
    assert run.config.model == "lenet5" and not run.model.training


def test_bad_recipe_values_are_refused():
    with pytest.raises(EdgefaultError, match="sharpness must be one of"):
        TrainConfig(sharpness="sharp")
    with pytest.raises(EdgefaultError, match="act_l1"):
        TrainConfig(act_l1=-1)
    with pytest.raises(EdgefaultError, match="wbits"):
        TrainConfig(wbits=12)


@pytest.mark.parametrize("args, message", [
    (["--model", "lenet7"], "Invalid value for '--model'"),
    (["--wbits", "9"], "wbits must be an integer in 2..8"),
    (["--data", "nope:x"], "unknown dataset SPEC"),
    (["--bogus"], "No such option"),
    (["--sharpness", "saq", "--rho", "0"], "needs --rho > 0"),
])
def test_train_cli_bad_input_is_one_line_and_exit_2(tmp_path, args, message, capsys):
    # In-process: the same main() a user's process runs (a real process is checked once, below).
    out = tmp_path / "run"
    code, stdout, stderr = run(["train", "--out", str(out), "--epochs", "1", *args], capsys)
    assert code == 2 and stdout == ""
    assert stderr.count("\n") == 1 and stderr.startswith("edgefault: error:")
    assert message in stderr and "Traceback" not in stderr
    assert not out.exists()


def test_train_cli_bad_input_from_a_real_process_is_one_line(tmp_path):
    result = run_subprocess("train", "--out", str(tmp_path / "run"), "--epochs", "1", "--wbits", "9")
    assert not (tmp_path / "run").exists()
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert "wbits must be an integer in 2..8" in result.stderr and "Traceback" not in result.stderr
