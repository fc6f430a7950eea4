"""The PyTorch twin of a deployed model: the run's network computing with the ONNX model's stored codes.

Each quantized layer of the run's model (``QuantConv2d`` / ``QuantLinear``) is exported as the
ONNX initializer ``<module path>.weight`` holding ``integer_weight()``'s codes. The twin checks
that every one of those codes equals the ONNX code bit for bit, then routes every forward pass
through the layers' ``code_fault`` hook, so the network computes with the twin's own code
tensors: the gradient of the loss with respect to the stored codes, and the loss after a
candidate flip, come from the very integers ONNX Runtime runs, scales and biases unchanged.

Trying a flip in layer L needs only the part of the network downstream of L: the twin traces
the model (the trace export uses), keeps every value of one clean pass (:meth:`CodeTwin.cache`)
and reruns only L's descendants for a trial (:meth:`CodeTwin.trial_loss`), which gives the
same loss as a whole forward pass (a test checks it) for a fraction of the cost.
"""

from __future__ import annotations

import contextlib
from typing import Iterator, Mapping

import numpy as np
import torch
import torch.fx
import torch.nn.functional as F
from torch import nn

from edgefault.errors import EdgefaultError
from edgefault.faults import WeightMemory
from edgefault.models import QuantWeightLayer, trace_model


def sign_extend(words: np.ndarray, bits: int) -> np.ndarray:
    """The signed values of ``bits``-bit two's-complement words (only their low ``bits`` bits count).

    Example:
        >>> sign_extend(np.array([7, 8, 15, 0x1F]), 4).tolist()
        [7, -8, -1, -1]
    """
    words = np.asarray(words, dtype=np.int64) & ((1 << bits) - 1)
    return np.where(words >= 1 << (bits - 1), words - (1 << bits), words)


class CodeTwin:
    """A run's eval-mode model wired to compute with code tensors equal to an ONNX model's weight codes.

    ``arrays`` are the ONNX model's clean codes by tensor name (:meth:`Injector.arrays`) and
    ``memory`` its weight memory (the stored width of each tensor). Every weight tensor of the
    memory must be a layer of the model and every layer a weight tensor, with equal codes;
    otherwise :class:`EdgefaultError` names the first disagreement. The model's parameters stop
    requiring gradients; :meth:`close` removes the hooks.
    """

    def __init__(self, model: nn.Module, memory: WeightMemory, arrays: Mapping[str, np.ndarray],
                 source: str = "the model"):
        layers = {f"{name}.weight": m for name, m in model.named_modules() if isinstance(m, QuantWeightLayer)}
        tensors = {t.name: t for t in memory.tensors if not t.is_bias}
        missing = sorted(set(layers) - set(tensors)) or sorted(set(tensors) - set(layers))
        if missing:
            where = "the ONNX model" if missing[0] in layers else "the checkpoint"
            raise EdgefaultError(f"the checkpoint and {source} disagree on the weight codes: {missing[0]!r} is "
                                 f"not in {where}; attack the model exported from this run (edgefault export)")
        self.model = model.eval().requires_grad_(False)
        self.names = tuple(name for name in memory.names if name in layers)  # memory order
        self.bits = {name: tensors[name].bits for name in self.names}
        self.codes: dict[str, torch.Tensor] = {}
        for name in self.names:
            ours = layers[name].integer_weight()[0].numpy().astype(np.int64)
            theirs = np.asarray(arrays[name], dtype=np.int64)
            if ours.shape != theirs.shape or not np.array_equal(ours, theirs):
                differ = "its shape" if ours.shape != theirs.shape else f"{int(np.sum(ours != theirs))} codes"
                raise EdgefaultError(f"the checkpoint and {source} disagree on the weight codes of {name!r} "
                                     f"({differ} differ); attack the model exported from this run (edgefault export)")
            self.codes[name] = torch.from_numpy(theirs.astype(np.float32))
        self._layers = {name: layers[name] for name in self.names}
        self._inputs = self.codes
        for name, layer in self._layers.items():
            layer.code_fault = lambda plain, name=name: self._inputs[name]
        self._traced: torch.fx.GraphModule | None = None
        self._clean: dict | None = None
        self._downstream: dict[str, list[torch.fx.Node]] = {}

    def close(self) -> None:
        """Remove the hooks: the model computes with its own codes again."""
        for layer in self._layers.values():
            layer.code_fault = None

    def flat_codes(self, name: str) -> np.ndarray:
        """The current codes of one tensor, flat, as int64 (a copy).
        """
        return self.codes[name].reshape(-1).numpy().astype(np.int64)

    def set_code(self, name: str, index: int, value: int) -> None:
        """Make code ``index`` of tensor ``name`` hold ``value`` (a committed flip)."""
        self.codes[name].view(-1)[index] = float(value)

    def gradients(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[float, dict[str, np.ndarray]]:
        """The cross-entropy loss on the batch and its gradient with respect to each tensor's codes (flat).
        """
        leaves = {name: codes.clone().requires_grad_(True) for name, codes in self.codes.items()}
        self._inputs = leaves
        try:
            with torch.enable_grad():
                loss = F.cross_entropy(self.model(images), labels)
                grads = torch.autograd.grad(loss, [leaves[name] for name in self.names])
        finally:
            self._inputs = self.codes
        return float(loss.detach()), {name: g.reshape(-1).numpy().astype(np.float64) for name, g in zip(self.names, grads)}

    @torch.no_grad()
    def loss(self, images: torch.Tensor, labels: torch.Tensor) -> float:
        """The cross-entropy loss of the current codes on the batch.
        """
        return float(F.cross_entropy(self.model(images), labels))

    @torch.no_grad()
    def cache(self, images: torch.Tensor) -> None:
        """Keep every value of one pass of the current codes on ``images``, for :meth:`trial_loss`.
        """
        if self._traced is None:
            self._traced = trace_model(self.model)  # shares the model's modules, hooks included
            nodes = list(self._traced.graph.nodes)
            starts = {f"{n.target}.weight": n for n in nodes if n.op == "call_module"}
            for name in self.names:
                reached = {starts[name]}
                for node in nodes:  # topological order: a node is downstream once one of its inputs is
                    if any(arg in reached for arg in node.all_input_nodes):
                        reached.add(node)
                self._downstream[name] = [node for node in nodes if node in reached]
        interpreter = torch.fx.Interpreter(self._traced, garbage_collect_values=False)
        interpreter.run(images)
        self._clean = interpreter.env

    @torch.no_grad()
    def trial_loss(self, labels: torch.Tensor, name: str, index: int, value: int) -> float:
        """The loss on the cached images with code ``index`` of ``name`` set to ``value`` (then restored).

        Only the nodes downstream of the layer run again; the rest comes from :meth:`cache`.
        """
        if self._clean is None:
            raise RuntimeError("call cache(images) before trial_loss")
        interpreter = torch.fx.Interpreter(self._traced, garbage_collect_values=False)
        interpreter.env = dict(self._clean)
        with self.trial(name, index, value):
            for node in self._downstream[name]:
                interpreter.env[node] = interpreter.run_node(node)
        output = next(node for node in reversed(self._traced.graph.nodes) if node.op == "output")
        return float(F.cross_entropy(interpreter.env[output], labels))

    @contextlib.contextmanager
    def trial(self, name: str, index: int, value: int) -> Iterator[None]:
        """Within the block, code ``index`` of ``name`` holds ``value``; afterwards it is restored.
        """
        flat = self.codes[name].view(-1)
        before = float(flat[index])
        flat[index] = float(value)
        try:
            yield
        finally:
            flat[index] = before
