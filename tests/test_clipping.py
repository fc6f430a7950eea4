"""Training-side mitigations: weight clipping on deployed weights, RandBET's bit flips and step, learned ranges."""

import pytest
import torch
import torch.nn.functional as F

from edgefault.errors import EdgefaultError
from edgefault.models import create_model
from edgefault.models.layers import QuantConv2d, QuantWeightLayer
from edgefault.train import TrainConfig, load_run, train
from edgefault.train.clipping import WeightClipper
from edgefault.train.learned_clip import enable_learned_clip
from edgefault.train.randbet import RandBET, flip_code_bits
from cli_helpers import assert_one_error_line, run


def deployed_max(layer: QuantWeightLayer) -> float:
    codes, scale = layer.integer_weight()
    return float((codes.float() * scale.view((-1,) + (1,) * (codes.dim() - 1))).abs().max())


def test_train_weight_clip_bounds_every_deployed_weight(tmp_path, capsys, mnist5k):
    out = tmp_path / "clip"
    code, stdout, _ = run(["train", "--epochs", "1", "--weight-clip", "0.1", "--out", str(out)], capsys)
    assert code == 0 and "test accuracy" in stdout
    run_dir = load_run(out)
    layers = [m for m in run_dir.model.modules() if isinstance(m, QuantWeightLayer)]
    assert all(deployed_max(layer) <= 0.1 for layer in layers)  # exactly, float32 rounding included
    assert max(deployed_max(layer) for layer in layers) > 0.09  # the bound binds: weights sit at it
    assert run_dir.config.weight_clip == 0.1 and run_dir.metrics["test_accuracy"] > 0.5


def test_clipping_acts_on_the_batchnorm_folded_weight():
    torch.manual_seed(0)
    conv = QuantConv2d(3, 8, 3, padding=1, batchnorm=True)
    with torch.no_grad():
        conv.bn.weight.uniform_(0.5, 3.0)  # gains far from 1: clipping the latent weight alone would not do
    optimizer = torch.optim.SGD(conv.parameters(), lr=0.5)
    clip = WeightClipper(conv, 0.05)
    for _ in range(3):
        conv.train()
        loss = conv(torch.randn(16, 3, 6, 6)).square().mean() * -1  # pushes weights outward
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        clip()
    assert deployed_max(conv) <= 0.05
    assert float(conv.weight.detach().abs().max()) != pytest.approx(0.05)  # the latent weight differs: gain folded in


def test_per_layer_bounds_are_relative_to_the_initial_range():
    model = create_model("lenet5")
    clip = WeightClipper(model, 0.5, per_layer=True)
    initial = [deployed_max(m) for m in model.modules() if isinstance(m, QuantWeightLayer)]
    clip()
    after = [deployed_max(m) for m in model.modules() if isinstance(m, QuantWeightLayer)]
    assert all(a <= 0.5 * i * (1 + 1e-6) for a, i in zip(after, initial))


def test_flip_code_bits_follows_the_stored_bit_semantics():
    generator = torch.Generator().manual_seed(1)
    codes = torch.randint(-7, 8, (200_000,)).float()
    assert torch.equal(flip_code_bits(codes, 0.0, 4, generator), codes)
    flipped = flip_code_bits(codes, 1.0, 4, generator)
    assert torch.equal(flipped, -codes - 1)  # all 4 stored bits flip: two's complement ~x, sign-extended
    noisy = flip_code_bits(codes, 0.1, 4, generator)
    assert noisy.min() >= -8 and noisy.max() <= 7
    changed_bits = ((codes.to(torch.int32) ^ noisy.to(torch.int32)) & 0xF)
    per_bit = [float(((changed_bits >> b) & 1).float().mean()) for b in range(4)]
    assert all(abs(p - 0.1) < 0.005 for p in per_bit)  # each stored bit independently, w.p. the rate


def test_randbet_averages_the_clean_and_clamped_perturbed_gradients():
    torch.manual_seed(0)
    model = create_model("lenet5").train()
    images, labels = torch.randn(8, 1, 28, 28), torch.randint(0, 10, (8,))

    def closure():
        logits = model(images)
        return F.cross_entropy(logits, labels), logits

    randbet = RandBET(model, rate=0.2, generator=torch.Generator().manual_seed(0), clamp=1e-4)
    model.zero_grad()
    closure()[0].backward()
    clean = [p.grad.clone() for p in model.parameters()]
    randbet.perturbed_gradients(closure)
    for p, g in zip(model.parameters(), clean):
        # the perturbed half is clamped to 1e-4, so the average stays within 5e-5 of half the clean gradient
        assert torch.all((p.grad - g / 2).abs() <= 5e-5 + 1e-9)
    assert all(layer.code_fault is None for layer in randbet.layers)


def test_train_randbet_runs_with_its_curriculum(mnist5k):
    model, metrics = train(TrainConfig(epochs=1, randbet_rate=0.01, randbet_loss_threshold=1.0), data=mnist5k,
                           progress=False)
    assert metrics["randbet_started_step"] is not None and metrics["randbet_started_step"] > 1
    assert metrics["test_accuracy"] > 0.5


def test_learned_clip_trains_ranges_and_bakes_them_into_a_plain_checkpoint(tmp_path, mnist5k):
    out = tmp_path / "learned"
    model, metrics = train(TrainConfig(epochs=1, learned_clip=True, learned_clip_decay=10.0), out, data=mnist5k,
                           progress=False)
    layers = [m for m in load_run(out).model.modules() if isinstance(m, QuantWeightLayer)]
    assert all(layer.weight_range is None for layer in layers)
    ranges = metrics["learned_ranges"]
    assert len(ranges) == len(layers)
    assert all(deployed_max(layer) <= r + 1e-6 for layer, r in zip(layers, ranges))  # ranges saved to 6 places
    with torch.random.fork_rng():
        torch.manual_seed(0)  # the run's seed: the same initial weights, hence the same initial ranges
        initial = [float(p.detach()) for p in enable_learned_clip(create_model("lenet5"))]
    assert sum(ranges) < sum(initial)  # the decay pulled the ranges down


def test_mitigation_settings_are_checked():
    with pytest.raises(EdgefaultError, match="choose one"):
        TrainConfig(weight_clip=0.1, learned_clip=True)
    with pytest.raises(EdgefaultError, match="randbet_rate"):
        TrainConfig(randbet_rate=2.0)
    with pytest.raises(EdgefaultError, match="weight_clip_per_layer"):
        TrainConfig(weight_clip=2.0, weight_clip_per_layer=True)


def test_train_cli_refuses_a_negative_clip(tmp_path, capsys):
    code, out, err = run(["train", "--weight-clip", "-1", "--out", str(tmp_path / "x")], capsys)
    assert_one_error_line(code, out, err, "weight_clip")
    assert not (tmp_path / "x").exists()
