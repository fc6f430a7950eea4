"""``campaign --cost``: per cell, each kernel's input density and the modelled cycles and energy on the faulty chip.

Faults change sparsity: a stuck-at-1 high bit or a flipped bias makes a layer's output denser,
and so slower and hungrier on a zero-skipping accelerator. With ``--cost`` a worker runs each
cell's (faulty) model with the integer inputs of its conv/linear kernels as extra outputs, and
tallies them with ``cost``'s own tally (:class:`edgefault.cost.tally.LayerTally`, the one
implementation of the zero counts, lane imbalance and energy) as the batches come, so one
ONNX Runtime pass gives both the predictions and the cost. Only the storage formats the
energy needs (dense and the accelerator's) are sized.

An activation cell (``--sites activations``) tallies the buffers as the faulty chip left them,
which are what the next kernels read (every kernel input of an edgefault model is a buffer).
A kernel input computed from no weight tensor the chip hit (the first conv's input image, the
kernels before a per-layer cell's tensor) is what the clean model computes, and so is every
kernel input before the cut a suffix cell starts from: those take the clean model's tallies
(computed once per worker and model) and cost the cell nothing. A campaign without ``--cost`` runs none of this.

The record's ``cost`` field (absent without ``--cost``)::

    {"layers": [{"name", "density", "cycles": {"dense", "skipping_ideal", "skipping_imbalanced"},
                 "energy_pj": {"dense", "gating", "skipping"}}],
     "total": {"mac_density", "cycles": {...}, "energy_pj": {...},
               "speedup": {"skipping_ideal", "skipping_imbalanced"}, "energy_saving": skipping's}}

every number a mean per image; ``density`` is the share of the kernel input's values that are
not its zero point, ``mac_density`` the share of all kernels' MACs whose input is not zero.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edgefault.campaign.activations import ActivationCells
from edgefault.campaign.cells import Cell
from edgefault.cost.accelerator import Accelerator
from edgefault.cost.api import Kernels
from edgefault.cost.report import layer_cost, totals
from edgefault.cost.tally import LayerTally
from edgefault.errors import EdgefaultError
from edgefault.onnxio import parse_model
from edgefault.runtime import Evaluator, PreparedInputs, SessionSettings
from edgefault.runtime.cuts import upstream_constants
from edgefault.runtime.session import DEFAULT_BATCH
from edgefault.runtime.sparsity import probe_model, session_batches

CYCLES = ("dense", "skipping_ideal", "skipping_imbalanced")
ENERGIES = ("dense", "gating", "skipping")
CHECK_IMAGES = 64  # images on which the model with its kernel inputs exposed must give the model's own logits


def cost_fields(tallies: list[LayerTally], accelerator: Accelerator) -> dict[str, Any]:
    """The ``cost`` field of a results line from one cell's tallies (see the module docstring).

    Example:
        >>> from edgefault.cost import load_accelerator
        >>> from edgefault.runtime.activations import MacLayer, QuantizedTensor
        >>> tally = LayerTally(MacLayer("fc", "Gemm", "x", "linear", out_features=2, in_features=32),
        ...                    QuantizedTensor("x", "QuantizeLinear", (0,)), 16, 16, 8, 5, 1e6, formats=("dense", "bitmap"))
        >>> tally.add(np.eye(1, 32, dtype=np.uint8), 1)
        >>> fields = cost_fields([tally], load_accelerator())
        >>> fields["layers"][0]["density"], fields["total"]["cycles"], fields["total"]["speedup"]["skipping_ideal"]
        (0.03125, {'dense': 2.0, 'skipping_ideal': 1.0, 'skipping_imbalanced': 1.0}, 2.0)
    """
    costs = tuple(layer_cost(tally, accelerator) for tally in tallies)
    total = totals(costs)
    return {
        "layers": [{"name": cost.name, "density": tally.density,
                    "cycles": {mode: cost.cycles[mode] for mode in CYCLES},
                    "energy_pj": {mode: cost.energy_pj[mode] for mode in ENERGIES}}
                   for cost, tally in zip(costs, tallies)],
        "total": {"mac_density": 1.0 - total["zero_input_macs"] / total["macs"] if total["macs"] else 0.0,
                  "cycles": {mode: total["cycles"][mode] for mode in CYCLES},
                  "energy_pj": {mode: total["energy_pj"][mode] for mode in ENERGIES},
                  "speedup": {mode: total["speedup"][mode] for mode in CYCLES[1:]},
                  "energy_saving": total["energy_saving"]["skipping_imbalanced"]},
    }


class CellCost:
    """One model's ``--cost`` work in one worker: its kernels, its probe copy, the clean tallies.

    ``data`` is the model with the kernel inputs as extra outputs: the worker injects faults into
    these bytes (the weights are the same), so the session of a cell gives predictions and
    kernel inputs in one pass. Building it checks, on the first images, that exposing the
    outputs leaves the model's logits unchanged (ONNX Runtime may fuse differently around an
    output), so accuracy under ``--cost`` is the accuracy without it.
    """

    def __init__(self, model, inputs: PreparedInputs, accelerator: Accelerator, settings: SessionSettings):
        proto = parse_model(model.data)
        self.model, self.inputs, self.accelerator, self.settings = model, inputs, accelerator, settings
        self.kernels = Kernels.of(proto, model.name)
        self.formats = tuple(dict.fromkeys(("dense", accelerator.format)))
        self.data = probe_model(proto, list(self.kernels.tensors)).SerializeToString()
        self.upstream = upstream_constants(proto, self.kernels.names)
        self._clean: dict[str, LayerTally] | None = None
        images = inputs.images[:CHECK_IMAGES]
        own = Evaluator(model.data, settings, input_name=model.input_name, output_name=model.output_name)
        probe = Evaluator(self.data, settings, input_name=model.input_name, output_name=model.output_name)
        if not np.array_equal(own.logits(images), probe.logits(images)):
            raise EdgefaultError(f"{model.name}: exposing its kernel inputs as outputs changes the model's logits in "
                                 "ONNX Runtime; --cost cannot measure it without changing the accuracy")

    def run(self, evaluator: Evaluator, inputs: PreparedInputs, batch_size: int,
            faulty: set[str] | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        """The predictions of ``evaluator`` (a session on :attr:`data`, faulty, or a suffix of it) and the cost field.

        ``faulty`` names the weight tensors the chip hit (None: any may be). Kernel inputs the
        session does not output (those before a suffix's cut), and those computed from no
        faulty tensor, are what the clean model computes: they take the clean tallies.
        """
        produced = {output.name for output in evaluator.session.get_outputs()}
        if faulty is not None:
            produced = {name for name in produced if name not in self.upstream or not self.upstream[name].isdisjoint(faulty)}
        names = [name for name in self.kernels.names if name in produced]
        fresh = [tally for tally in self._new_tallies() if tally.tensor.name in produced]
        predictions = self._pass(evaluator, inputs, batch_size, names, fresh)
        clean = self._clean_tallies() if len(fresh) < len(self.kernels.layers) else {}
        by_node = {tally.layer.node: tally for tally in fresh}
        tallies = [by_node.get(layer.node) or clean[layer.node] for layer in self.kernels.layers]
        return predictions, cost_fields(tallies, self.accelerator)

    def activation_run(self, cells: ActivationCells, cell: Cell) -> dict[str, Any]:
        """An activation cell's measurements (:meth:`ActivationCells.measure`) with the cost field added.

        The kernels read the buffers as the chip left them; a kernel input that is not an
        activation buffer is refused (the segments never expose it).
        """
        tallies = self._new_tallies()
        missing = [tally.tensor.name for tally in tallies if tally.tensor.name not in cells.staged.tensors]
        if missing:
            raise EdgefaultError(f"{self.model.name}: kernel input {missing[0]} is no activation buffer; --cost cannot "
                                 "cost its activation cells")

        def observe(values: dict[str, np.ndarray], images: int) -> None:
            for tally in tallies:
                tally.add(values[tally.tensor.name], images)

        measured = cells.measure(cell, observe)
        return {**measured, "cost": cost_fields(tallies, self.accelerator)}

    def _new_tallies(self) -> list[LayerTally]:
        return self.kernels.tallies(self.accelerator, self.formats)

    def _pass(self, evaluator: Evaluator, inputs: PreparedInputs, batch_size: int, names: list[str],
              tallies: list[LayerTally]) -> np.ndarray:
        output = evaluator.output_name
        predictions = []
        for count, values in session_batches(evaluator.session, inputs, evaluator.input_name, [output, *names],
                                             batch_size):
            logits = values[output]
            if logits.ndim != 2:
                raise EdgefaultError(f"model output has shape {list(logits.shape)}; a campaign needs [N, classes]")
            predictions.append(np.argmax(logits, axis=1))
            for tally in tallies:
                tally.add(values[tally.tensor.name], count)
        return np.concatenate(predictions) if predictions else np.zeros(0, np.int64)

    def _clean_tallies(self) -> dict[str, LayerTally]:
        """Every kernel tallied on the clean model over all test images (once)."""
        if self._clean is None:
            tallies = self._new_tallies()
            evaluator = Evaluator(self.data, self.settings, input_name=self.model.input_name,
                                  output_name=self.model.output_name)
            self._pass(evaluator, self.inputs, DEFAULT_BATCH, self.kernels.names, tallies)
            self._clean = {tally.layer.node: tally for tally in tallies}
        return self._clean
