"""Quantizers: integer grids, round trips, straight-through gradients, FATReLU, bit-width checks."""

import pytest
import torch

from edgefault.errors import EdgefaultError
from edgefault.models import ActQuant, QuantConv2d, QuantLinear, QuantSettings, quantize_weight


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_weight_codes_lie_on_the_symmetric_grid_and_round_trip(bits):
    weight = torch.randn(6, 3, 3, 3)
    codes, scale = quantize_weight(weight, bits)
    qmax = 2 ** (bits - 1) - 1
    assert torch.equal(codes, codes.round())
    assert codes.abs().max() <= qmax
    # Each channel's largest magnitude maps onto the end of the grid (zero point 0, symmetric).
    assert torch.equal(codes.flatten(1).abs().amax(1), torch.full((6,), float(qmax)))
    dequantized = codes * scale.view(-1, 1, 1, 1)
    assert torch.all((dequantized - weight).abs() <= scale.view(-1, 1, 1, 1) / 2 + 1e-6)
    again, _ = quantize_weight(dequantized, bits)
    assert torch.equal(again, codes)


def test_weight_quantizer_passes_gradients_straight_through():
    weight = torch.randn(4, 5, requires_grad=True)
    codes, scale = quantize_weight(weight, 8)
    (codes * scale[:, None]).sum().backward()
    assert torch.allclose(weight.grad, torch.ones_like(weight))


def test_activation_codes_are_unsigned_integers_and_step_learns():
    quant = ActQuant(bits=4, signed=False, role="activation").train()
    x = torch.randn(16, 8, requires_grad=True)
    y = quant(x)
    codes = y / quant.step_size()
    assert torch.allclose(codes, codes.round(), atol=1e-4)
    assert codes.min() >= 0 and codes.max() <= 15
    y.sum().backward()
    assert x.grad is not None and quant.step.grad is not None and quant.step.grad != 0
    # STE: gradient 1 inside the clamp range, 0 where the ReLU/clamp cut the input.
    inside = (x > 0) & (x < 15 * quant.step_size())
    assert torch.all(x.grad[inside] == 1) and torch.all(x.grad[x < -quant.step_size()] == 0)


def test_signed_activation_uses_mid_code_zero_point():
    quant = ActQuant(bits=8, signed=True, role="residual").train()
    y = quant(torch.linspace(-3, 3, 101))
    assert quant.zero_point == 128
    assert y.min() < 0 < y.max()
    codes = y / quant.step_size() + 128
    assert codes.min() >= 0 and codes.max() <= 255


def test_fatrelu_zeroes_exactly_the_codes_at_or_below_the_threshold():
    quant = ActQuant(bits=8, signed=False, threshold=0.5, role="activation").eval()
    with torch.no_grad():
        quant.step.fill_(0.125)  # exact in binary, so code * step is exact
        quant.initialized.fill_(True)
    x = torch.tensor([-1.0, 0.25, 0.5, 0.55, 0.625, 0.75, 3.0])
    y = quant(x)
    assert quant.threshold_code() == 4  # floor(0.5 / 0.125): codes 0..4 (values <= T) are forced to zero
    assert torch.equal(y, torch.tensor([0.0, 0.0, 0.0, 0.0, 0.625, 0.75, 3.0]))
    plain = ActQuant(bits=8, signed=False, role="activation").eval()
    plain.load_state_dict(quant.state_dict())
    assert torch.equal(plain(x), torch.tensor([0.0, 0.25, 0.5, 0.5, 0.625, 0.75, 3.0]))


@pytest.mark.parametrize("bad", [1, 9, 2.5])
def test_bit_widths_outside_2_to_8_are_refused(bad):
    with pytest.raises(EdgefaultError, match="wbits"):
        QuantSettings(wbits=bad)


def test_integer_weight_is_what_eval_forward_computes_with_folded_batchnorm():
    torch.manual_seed(0)
    conv = QuantConv2d(3, 4, 3, padding=1, batchnorm=True).train()
    for _ in range(3):  # move the running statistics away from their initial values
        conv(torch.randn(8, 3, 6, 6) * 2 + 1)
    conv.eval()
    codes, scale = conv.integer_weight()
    assert codes.dtype == torch.int8
    x = torch.randn(2, 3, 6, 6)
    expected = torch.nn.functional.conv2d(x, codes.float() * scale.view(-1, 1, 1, 1), conv.deployed_bias(), 1, 1)
    assert torch.allclose(conv(x), expected, atol=1e-5)


def test_linear_integer_weight_matches_forward():
    layer = QuantLinear(5, 3, wbits=4).eval()
    codes, scale = layer.integer_weight()
    assert codes.abs().max() <= 7
    x = torch.randn(2, 5)
    assert torch.allclose(layer(x), x @ (codes.float() * scale[:, None]).T + layer.bias, atol=1e-6)


def test_linked_layers_train_their_bias_on_the_int32_accumulator_grid():
    from edgefault.models import create_model

    model = create_model("resnet20")
    model.train()(torch.randn(8, 1, 28, 28))
    model.eval()
    assert model.blocks[0].conv1.input_quant[0] is model.stem_act and model.fc.input_quant[0] is model.pool_quant
    for layer in (model.stem, model.blocks[6].shortcut, model.fc):
        _, scale = layer.integer_weight()
        grid = layer.input_quant[0].step_size().detach() * scale
        units = layer.deployed_bias() / grid
        assert torch.allclose(units, units.round(), atol=1e-3)
