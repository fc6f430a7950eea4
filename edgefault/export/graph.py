"""Build an ONNX graph from a quantized model by walking its torch.fx trace, one ONNX node group per FX node.

The walk is generic: any model made of the quantized building blocks (``ActQuant``,
``QuantConv2d``, ``QuantLinear``), max pooling, global average pooling, flatten and residual additions exports
with no change here. Each FX value becomes either a float tensor or an integer one (uint8 codes
with a per-tensor scale and zero point). The QDQ graph is laid out the way ONNX Runtime's QDQ
fusion recognises on x86 (see notes/readme_export.md for what was measured):

* ``ActQuant``: QuantizeLinear to uint8, then (abits < 8) Clip at ``max_code`` and (FATReLU)
  ``Mul(q, Cast(Greater(q, t)))``, all on the uint8 tensor, so the quantizer stays integer.
* conv / linear: ``DQ(x) -> Conv/Gemm(DQ(int8 W), DQ(int32 bias)) -> Q``, fused to QLinearConv /
  QGemm. The int8 weights are the layer's ``integer_weight()`` codes, per-output-channel scales,
  axis 0; the bias is int32 at scale ``x_scale * w_scale``, which the fused kernels require.
* max pooling and flatten act on the uint8 codes directly (they commute with dequantization);
  global average pooling and additions are ``DQ -> op -> Q`` (QLinearGlobalAveragePool, QLinearAdd).
  ``nn.Identity`` and ``nn.Dropout`` (eval mode) pass through; anything else is a one-line error.
* Every consumer gets its own DequantizeLinear, because ORT fuses a DQ only into one node.
* Transformers (:mod:`edgefault.export.tensor_ops`): reshapes and permutations on the codes,
  ``DQ @ DQ`` products (QLinearMatMul / MatMulIntegerToFloat), softmax, LayerNorm, token means,
  and parameters read in ``forward`` (position embeddings) as float initializers.

``float_reference=True`` writes the same network in fp32 instead (dequantized weights, float
biases, ReLU for unsigned quantizers, no Q/DQ): the baseline the runtime benchmark compares with.
"""

from __future__ import annotations

import dataclasses
import operator

import numpy as np
import onnx
import torch
import torch.fx
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from edgefault.errors import EdgefaultError
from edgefault.export.tensor_ops import TensorOps
from edgefault.models import ActQuant, QuantConv2d, QuantLinear, trace_model

OPSET = 17  # per-channel QDQ (13+), uint8 MaxPool (12+); read by every ONNX Runtime since 1.12 and Netron
IR_VERSION = 8
INPUT_NAME, OUTPUT_NAME = "input", "logits"
_INT32 = np.iinfo(np.int32)


@dataclasses.dataclass(frozen=True)
class _Float:
    """A float tensor in the ONNX graph."""

    name: str


@dataclasses.dataclass(frozen=True)
class _Codes:
    """A uint8 tensor of quantization codes: real value = (code - zero_point) * scale."""

    name: str
    scale: float
    zero_point: int
    scale_name: str
    zero_point_name: str


class _GraphWriter(TensorOps):
    def __init__(self, module: torch.fx.GraphModule, float_reference: bool):
        self.module, self.float_reference = module, float_reference
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: dict[str, onnx.TensorProto] = {}
        self.values: dict[str, _Float | _Codes] = {}
        self._dq_count: dict[str, int] = {}

    # -- small helpers -------------------------------------------------------------------------

    def constant(self, name: str, array: np.ndarray) -> str:
        if name not in self.initializers:
            self.initializers[name] = numpy_helper.from_array(np.asarray(array), name)
        return name

    def node(self, op: str, inputs: list[str], output: str, **attributes) -> str:
        self.nodes.append(helper.make_node(op, inputs, [output], name=output, **attributes))
        return output

    def float_input(self, value: _Float | _Codes) -> str:
        """The value as a float tensor: a fresh DequantizeLinear per consumer for integer values."""
        if isinstance(value, _Float):
            return value.name
        count = self._dq_count.get(value.name, 0)
        self._dq_count[value.name] = count + 1
        return self.node("DequantizeLinear", [value.name, value.scale_name, value.zero_point_name],
                         f"{value.name}.dq{count}")

    @staticmethod
    def float_value(name: str) -> _Float:
        return _Float(name)

    @staticmethod
    def replace_name(value: _Float | _Codes, name: str) -> _Float | _Codes:
        return dataclasses.replace(value, name=name)

    def output(self, value: _Float | _Codes) -> None:
        if isinstance(value, _Codes):  # float logits: the DequantizeLinear of the last quantizer
            self.node("DequantizeLinear", [value.name, value.scale_name, value.zero_point_name], OUTPUT_NAME)
        else:
            self.node("Identity", [value.name], OUTPUT_NAME)

    def codes_input(self, value: _Float | _Codes, fx_node: torch.fx.Node) -> _Codes:
        if not isinstance(value, _Codes):
            raise EdgefaultError(
                f"layer {fx_node.target!r} takes a tensor that no ActQuant quantized; the integer graph "
                "needs an activation quantizer in front of every convolution and linear layer"
            )
        return value

    # -- the walk ------------------------------------------------------------------------------

    def run(self, input_shape: tuple[int, ...], num_classes: int) -> onnx.GraphProto:
        for fx_node in self.module.graph.nodes:
            if fx_node.op == "placeholder":
                if self.values:
                    raise EdgefaultError("the model takes more than one input; export supports one image tensor")
                self.values[fx_node.name] = _Float(INPUT_NAME)
            elif fx_node.op == "output":
                result = fx_node.args[0]
                if not isinstance(result, torch.fx.Node):
                    raise EdgefaultError("the model must return one logits tensor")
                self.output(self.values[result.name])
            elif fx_node.op == "call_module":
                module = self.module.get_submodule(fx_node.target)
                self.values[fx_node.name] = self.module_node(fx_node, module)
            elif fx_node.op in ("call_function", "call_method"):
                self.values[fx_node.name] = self.function_node(fx_node)
            elif fx_node.op == "get_attr":
                self.values[fx_node.name] = self.parameter(fx_node)
            else:
                raise EdgefaultError(f"cannot export FX node {fx_node.name!r} ({fx_node.op} {fx_node.target})")
        return helper.make_graph(
            self.nodes,
            "edgefault_float" if self.float_reference else "edgefault_qdq",
            [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["batch", *input_shape])],
            [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["batch", num_classes])],
            list(self.initializers.values()),
        )

    def arg(self, fx_node: torch.fx.Node, index: int = 0) -> _Float | _Codes:
        source = fx_node.args[index]
        if not isinstance(source, torch.fx.Node):
            raise EdgefaultError(f"cannot export {fx_node.name!r}: argument {index} is not a tensor")
        return self.values[source.name]

    def module_node(self, fx_node: torch.fx.Node, module: nn.Module) -> _Float | _Codes:
        x = self.arg(fx_node)
        out = fx_node.name
        if isinstance(module, ActQuant):
            return self.float_activation(module, x, out) if self.float_reference else self.quantize(module, x, out)
        if isinstance(module, QuantConv2d):
            return self.weight_layer(fx_node, module, x, "Conv", strides=[module.stride] * 2,
                                     pads=[module.padding] * 4, kernel_shape=[module.kernel_size] * 2)
        if isinstance(module, QuantLinear):
            return self.weight_layer(fx_node, module, x, "Gemm", transB=1)
        if isinstance(module, nn.MaxPool2d):
            return self.max_pool(module, x, out)
        if isinstance(module, nn.AdaptiveAvgPool2d) and _pair(module.output_size) == [1, 1]:
            return self.requantized_op("GlobalAveragePool", x, out)
        if isinstance(module, nn.Flatten) and module.start_dim == 1 and module.end_dim == -1:
            return self.flatten(x, out)
        if isinstance(module, nn.LayerNorm):
            return self.layer_norm(module, x, out)
        if isinstance(module, (nn.Identity, nn.Dropout)):  # identities in eval mode
            return x
        raise EdgefaultError(f"cannot export layer {fx_node.target!r} of type {type(module).__name__}")

    def function_node(self, fx_node: torch.fx.Node) -> _Float | _Codes:
        target, out = fx_node.target, fx_node.name
        if target in (torch.flatten, "flatten"):
            start = fx_node.args[1] if len(fx_node.args) > 1 else fx_node.kwargs.get("start_dim", 0)
            end = fx_node.args[2] if len(fx_node.args) > 2 else fx_node.kwargs.get("end_dim", -1)
            if (start, end) != (1, -1):
                raise EdgefaultError(f"cannot export {out!r}: only flatten(x, 1) is supported")
            return self.flatten(self.arg(fx_node), out)
        if target in (operator.add, torch.add, "add") and len(fx_node.args) == 2 and not fx_node.kwargs:
            a, b = self.float_input(self.arg(fx_node, 0)), self.float_input(self.arg(fx_node, 1))
            return _Float(self.node("Add", [a, b], out))
        result = self.tensor_op(fx_node)
        if result is not None:
            return result
        raise EdgefaultError(f"cannot export operation {out!r} ({fx_node.op} {target})")

    # -- node groups ---------------------------------------------------------------------------

    def quantize(self, quant: ActQuant, x: _Float | _Codes, out: str) -> _Codes:
        scale = float(quant.step_size().detach())  # a float32 value, so the ONNX scale is the same number
        scale_name = self.constant(f"{out}.scale", np.array(scale, np.float32))
        zp_name = self.constant(f"{out}.zero_point", np.array(quant.zero_point, np.uint8))
        clip, threshold = quant.max_code < 255, quant.threshold_code()
        # The last node of the group writes the tensor named after the FX node, so Netron shows it.
        codes = self.node("QuantizeLinear", [self.float_input(x), scale_name, zp_name],
                          f"{out}.q" if clip or threshold >= 0 else out)
        if clip:
            # QuantizeLinear saturates at 255; fewer bits saturate lower, as ActQuant's clamp does.
            low = self.constant("uint8_zero", np.array(0, np.uint8))
            high = self.constant(f"uint8_{quant.max_code}", np.array(quant.max_code, np.uint8))
            codes = self.node("Clip", [codes, low, high], f"{out}.clip" if threshold >= 0 else out)
        if threshold >= 0:
            # FATReLU on the codes: keep codes above the threshold code, zero the rest (zero point 0).
            # codes * (codes > t) runs about 30x faster in ONNX Runtime than Where(codes > t, codes, 0).
            t_name = self.constant(f"{out}.threshold_code", np.array(min(threshold, 255), np.uint8))
            keep = self.node("Greater", [codes, t_name], f"{out}.keep")
            mask = self.node("Cast", [keep], f"{out}.mask", to=TensorProto.UINT8)
            codes = self.node("Mul", [codes, mask], out)
        return _Codes(codes, scale, quant.zero_point, scale_name, zp_name)

    def float_activation(self, quant: ActQuant, x: _Float | _Codes, out: str) -> _Float:
        if quant.signed:
            return x if isinstance(x, _Float) else _Float(self.float_input(x))
        if quant.threshold <= 0:
            return _Float(self.node("Relu", [self.float_input(x)], out))
        x_name = self.float_input(x)  # FATReLU in float: x * (x > T)
        threshold = self.constant(f"{out}.threshold", np.array(quant.threshold, np.float32))
        keep = self.node("Greater", [x_name, threshold], f"{out}.keep")
        mask = self.node("Cast", [keep], f"{out}.mask", to=TensorProto.FLOAT)
        return _Float(self.node("Mul", [x_name, mask], out))

    def weight_layer(self, fx_node: torch.fx.Node, layer: QuantConv2d | QuantLinear, x: _Float | _Codes,
                     op: str, **attributes) -> _Float:
        prefix = fx_node.target
        codes, scale = (t.detach().numpy() for t in layer.integer_weight())
        bias = layer.deployed_bias().detach().numpy().astype(np.float32)
        if self.float_reference:
            shape = (-1,) + (1,) * (codes.ndim - 1)
            weight = self.constant(f"{prefix}.weight", codes.astype(np.float32) * scale.reshape(shape))
            inputs = [self.float_input(x), weight, self.constant(f"{prefix}.bias", bias)]
            return _Float(self.node(op, inputs, fx_node.name, **attributes))
        x_codes = self.codes_input(x, fx_node)
        channels = np.zeros(len(scale), np.int8)
        weight = self.node("DequantizeLinear", [
            self.constant(f"{prefix}.weight", codes.astype(np.int8)),
            self.constant(f"{prefix}.weight_scale", scale.astype(np.float32)),
            self.constant(f"{prefix}.weight_zero_point", channels),
        ], f"{prefix}.weight.dq", axis=0)
        # The fused kernels add an int32 bias to the int32 accumulator, so its scale is x_scale * w_scale.
        bias_scale = (np.float32(x_codes.scale) * scale).astype(np.float32)
        # A bias beyond int32 at that scale saturates; the parity check then reports the damage.
        bias_codes = np.clip(np.round(bias / bias_scale), _INT32.min, _INT32.max).astype(np.int32)
        bias_dq = self.node("DequantizeLinear", [
            self.constant(f"{prefix}.bias", bias_codes),
            self.constant(f"{prefix}.bias_scale", bias_scale),
            self.constant(f"{prefix}.bias_zero_point", np.zeros(len(scale), np.int32)),
        ], f"{prefix}.bias.dq", axis=0)
        return _Float(self.node(op, [self.float_input(x_codes), weight, bias_dq], fx_node.name, **attributes))

    def max_pool(self, pool: nn.MaxPool2d, x: _Float | _Codes, out: str) -> _Float | _Codes:
        stride = pool.stride if pool.stride is not None else pool.kernel_size
        attributes = dict(kernel_shape=_pair(pool.kernel_size), strides=_pair(stride), pads=_pair(pool.padding) * 2,
                          dilations=_pair(pool.dilation), ceil_mode=int(pool.ceil_mode))
        if pool.return_indices:
            raise EdgefaultError(f"cannot export {out!r}: MaxPool2d(return_indices=True)")
        if isinstance(x, _Codes):
            # max commutes with the increasing map code -> (code - zp) * scale, so pool the uint8 codes.
            return dataclasses.replace(x, name=self.node("MaxPool", [x.name], out, **attributes))
        return _Float(self.node("MaxPool", [x.name], out, **attributes))

    def requantized_op(self, op: str, x: _Float | _Codes, out: str, **attributes) -> _Float:
        """A float op on dequantized input; the quantizer that follows makes ORT fuse it (QLinear<op>)."""
        return _Float(self.node(op, [self.float_input(x)], out, **attributes))

    def flatten(self, x: _Float | _Codes, out: str) -> _Float | _Codes:
        return dataclasses.replace(x, name=self.node("Flatten", [x.name], out, axis=1))


def _pair(value) -> list[int]:
    return list(value) if isinstance(value, (tuple, list)) else [int(value), int(value)]


def build_onnx(model: nn.Module, float_reference: bool = False) -> onnx.ModelProto:
    """Trace an eval-mode quantized classifier and write it as an ONNX model (QDQ, or fp32 reference).

    The result has one float input ``input`` (N, C, H, W), normalized as the model was trained,
    and one float output ``logits`` (N, classes); metadata is added by the caller.

    Example:
        >>> from edgefault.models import create_model
        >>> onnx_model = build_onnx(create_model("lenet5").eval())
        >>> onnx_model.graph.output[0].name
        'logits'
    """
    if model.training:
        raise EdgefaultError("export needs the model in eval mode (call model.eval())")
    try:
        traced = trace_model(model)
    except (torch.fx.proxy.TraceError, TypeError, RuntimeError) as exc:
        raise EdgefaultError(f"cannot trace {type(model).__name__} for export: {exc}") from None
    writer = _GraphWriter(traced, float_reference)
    graph = writer.run(tuple(model.input_shape), int(model.num_classes))
    onnx_model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                                   producer_name="edgefault")
    onnx_model.ir_version = IR_VERSION
    onnx.checker.check_model(onnx_model, full_check=True)
    return onnx_model
