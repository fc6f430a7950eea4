"""Cycles and energy per layer and in total, from the tallies and the accelerator: the ``cost`` report.

Everything is a mean per image. Energy of a layer in each mode (pJ):

* MACs: executed MACs x (multiply + accumulate); dense executes every MAC, gating and
  skipping only those whose input is non-zero (a gated MAC burns nothing);
* index arithmetic (skipping only): one ``index_add`` per non-zero input decoded, per round;
* activations: the layer's input is written once and read once per round (each round of
  ``macs / lanes`` output channels streams the input again), stored dense in the dense
  baseline and in the accelerator's format in the gating and skipping modes (the format's
  metadata, bitmap flags or run lengths, is read and written with the values);
  ``activation_sram`` per ``access_bits``, or ``dram`` for an image whose encoded input
  exceeds the activation buffer;
* weights: fetched once per image (they stay in the lanes during a round); a skipping
  accelerator does not fetch the weights of an input channel that is zero everywhere in the
  image (a linear layer's column of a zero input). ``weight_sram`` per access, or ``dram``
  when the layer's weights exceed the weight buffer.

Speedup = dense cycles / the mode's cycles; energy saving = 1 - the mode's energy / dense.
Imbalance costs cycles, not energy (no static power is modelled), so both skipping modes
have the same energy.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from edgefault.cost.accelerator import Accelerator
from edgefault.cost.tally import LayerTally

CYCLE_MODES = ("dense", "gating", "skipping_ideal", "skipping_imbalanced")
ENERGY_MODES = ("dense", "gating", "skipping")
SPARSE_MODES = ("gating", "skipping_ideal", "skipping_imbalanced")
ENERGY_PARTS = ("macs", "index", "activation_sram", "weight_sram", "dram")
# Which energy a cycle mode runs at.
ENERGY_OF = {"gating": "gating", "skipping_ideal": "skipping", "skipping_imbalanced": "skipping"}


def _ratios(cycles: dict[str, float], energy: dict[str, float]) -> tuple[dict[str, float], dict[str, float]]:
    speedup = {m: cycles["dense"] / cycles[m] if cycles[m] else 1.0 for m in SPARSE_MODES}
    saving = {m: 1.0 - energy[ENERGY_OF[m]] / energy["dense"] if energy["dense"] else 0.0 for m in SPARSE_MODES}
    return speedup, saving


@dataclasses.dataclass(frozen=True)
class LayerCost:
    """One conv/linear layer's modelled cost per image (means over the test images); :func:`layer_cost` makes one."""

    name: str
    op: str
    activation: str
    macs: float
    zero_input_macs: float
    cycles: dict[str, float]
    energy_pj: dict[str, float]
    activation_bits: dict[str, float]  # values (b x non-zeros) and the encoded size in each format
    weight_bits: dict[str, float]  # fetched per image: dense (and gating), skipping
    offchip: dict[str, float]  # weights: 1 when they exceed the weight buffer; activations: share spilled
    energy_parts_pj: dict[str, dict[str, float]]
    speedup: dict[str, float]
    energy_saving: dict[str, float]


def layer_cost(tally: LayerTally, accelerator: Accelerator) -> LayerCost:
    """The cost of one tallied layer on ``accelerator``.

    Example:
        >>> import numpy as np
        >>> from edgefault.cost.api import MacLayer, QuantizedTensor, load_accelerator
        >>> tally = LayerTally(MacLayer("fc", "Gemm", "x", "linear", out_features=2, in_features=4),
        ...                    QuantizedTensor("x", "QuantizeLinear", (0,)), 2, 1, 8, 5, 1e6)
        >>> tally.add(np.array([[0, 3, 0, 0]], np.uint8), 1)
        >>> cost = layer_cost(tally, load_accelerator())
        >>> cost.cycles["dense"], cost.speedup["skipping_imbalanced"]
        (4.0, 2.0)
    """
    n = max(tally.images, 1)
    energy = accelerator.energy_pj
    access = accelerator.access_bits
    mac_pj = energy["multiply"] + energy["accumulate"]
    executed = tally.dense_macs - tally.zero_macs / n
    weight_bits = tally.weights * accelerator.weight_bits
    weights_offchip = weight_bits > accelerator.weight_buffer_kib * 8192
    fetched = {"dense": weight_bits, "gating": weight_bits,
               "skipping": (tally.weights - tally.skipped_weights / n) * accelerator.weight_bits}
    parts = {}
    for mode in ENERGY_MODES:
        fmt = "dense" if mode == "dense" else accelerator.format
        passes = tally.rounds + 1  # one write, a read per round
        onchip = (tally.encoded[fmt] - tally.spilled[fmt]) / n * passes
        spilled = tally.spilled[fmt] / n * passes + (fetched[mode] if weights_offchip else 0.0)
        parts[mode] = {
            "macs": (tally.dense_macs if mode == "dense" else executed) * mac_pj,
            "index": tally.nonzero_values / n * tally.rounds * energy["index_add"] if mode == "skipping" else 0.0,
            "activation_sram": onchip / access * energy["activation_sram"],
            "weight_sram": 0.0 if weights_offchip else fetched[mode] / access * energy["weight_sram"],
            "dram": spilled / access * energy["dram"],
        }
    cycles = {"dense": float(tally.dense_cycles), "gating": float(tally.dense_cycles),
              "skipping_ideal": tally.ideal_cycles / n, "skipping_imbalanced": tally.imbalanced_cycles / n}
    energy_pj = {mode: sum(parts[mode].values()) for mode in ENERGY_MODES}
    speedup, saving = _ratios(cycles, energy_pj)
    activation_bits = {"values": tally.nonzero_values / n * accelerator.activation_bits,
                       **{fmt: tally.encoded[fmt] / n for fmt in tally.encoded}}
    return LayerCost(
        name=tally.layer.node, op=tally.layer.op_type, activation=tally.tensor.name,
        macs=float(tally.dense_macs), zero_input_macs=tally.zero_macs / n, cycles=cycles, energy_pj=energy_pj,
        activation_bits=activation_bits, weight_bits={"dense": float(weight_bits), "skipping": fetched["skipping"]},
        offchip={"weights": float(weights_offchip),
                 "activations": tally.spilled[accelerator.format] / max(tally.encoded[accelerator.format], 1)},
        energy_parts_pj=parts, speedup=speedup, energy_saving=saving,
    )


@dataclasses.dataclass(frozen=True)
class CostReport:
    """What ``cost`` modelled for one model on one accelerator: per layer, and the totals.

    ``total`` holds the per-image sums over layers of macs, zero_input_macs, cycles, energy_pj
    and activation_bits, plus ``speedup`` and ``energy_saving`` against dense.
    """

    model: str
    dataset: str
    images: int
    accelerator: Accelerator
    layers: tuple[LayerCost, ...]
    total: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        """The ``cost --json`` object.

        The keys: accelerator, dataset, images, layers, model, total.
        """
        return {
            "model": self.model, "dataset": self.dataset, "images": self.images,
            "accelerator": self.accelerator.to_dict(),
            "layers": [{**dataclasses.asdict(layer)} for layer in self.layers],
            "total": self.total,
        }


def totals(layers: tuple[LayerCost, ...]) -> dict[str, Any]:
    """Per-image sums over the layers, and speedup and energy saving of the whole model against dense.

    Example:
        >>> totals(())["speedup"]
        {'gating': 1.0, 'skipping_ideal': 1.0, 'skipping_imbalanced': 1.0}
    """
    def summed(field: str, keys: tuple[str, ...]) -> dict[str, float]:
        return {key: sum(getattr(layer, field)[key] for layer in layers) for key in keys}

    cycles = summed("cycles", CYCLE_MODES)
    energy = summed("energy_pj", ENERGY_MODES)
    speedup, saving = _ratios(cycles, energy)
    return {
        "macs": sum(layer.macs for layer in layers),
        "zero_input_macs": sum(layer.zero_input_macs for layer in layers),
        "cycles": cycles,
        "energy_pj": energy,
        "activation_bits": summed("activation_bits", tuple(layers[0].activation_bits) if layers
                                  else ("values", "dense", "bitmap", "rle")),
        "speedup": speedup,
        "energy_saving": saving,
    }
