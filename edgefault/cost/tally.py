"""What one conv/linear layer's activation input costs, image by image: pure numpy on the integer codes.

For each image the layer's input codes give, with padding taps as zero inputs:

* dense and zero-input MACs (:func:`edgefault.runtime.activations.layer_macs`, the one
  definition ``eval`` uses too);
* cycles. The reduction of one output (conv: Cin/groups x kh x kw inputs of its window;
  linear: the in_features inputs of a row) is laid out tap by tap, channels fastest, and
  element k goes to lane k mod L, so the L lanes of a group split the input channels (when
  Cin/groups is a multiple of L, lane l holds the channels c = l mod L). The ``macs / L``
  groups compute that many output channels of one output position at once: ``rounds =
  ceil(Cout/groups / (macs / L))`` passes per position. Per output position p and
  conv group, with K inputs, nnz(p) of them non-zero and nnz_l(p) in lane l:
  dense = ceil(K / L); ideal skipping = ceil(nnz(p) / L) (non-zeros spread evenly over the
  lanes); skipping with lane imbalance = max_l nnz_l(p) (a group waits for its busiest
  lane). A layer's cycles are rounds times the sum over positions and conv groups, so
  ideal <= imbalanced <= dense at every position;
* the exact encoded size of the input in each storage format
  (:meth:`edgefault.faults.formats.BufferFormat.encoded_bits`), and the bits of images
  whose encoding does not fit the activation buffer;
* the weights a skipping accelerator need not fetch: those of an input channel (a linear
  layer's input feature) that is zero everywhere in the image.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from edgefault.errors import EdgefaultError
from edgefault.faults.formats import ACT_FORMATS, BufferFormat
from edgefault.runtime.activations import MacLayer, QuantizedTensor, conv_output_size, conv_pads, layer_macs

# Most window elements (images x positions x reduction) held at once; a batch is split to stay below.
WINDOW_ELEMENTS = 1 << 24


def lane_cycles(nonzero: np.ndarray, lanes: int) -> tuple[np.ndarray, np.ndarray]:
    """Ideal and lane-imbalanced skipping cycles of reductions ``nonzero`` [..., P, K], summed over P.

    Element k of a reduction goes to lane k mod ``lanes``; ideal = ceil(nnz / lanes), imbalanced
    = the busiest lane's non-zeros, per reduction.

    Example:
        >>> rows = np.array([[[1, 1, 0, 0, 1, 0], [1, 0, 1, 0, 0, 0]]], bool)  # 2 positions, K = 6, 2 lanes
        >>> [c.tolist() for c in lane_cycles(rows, 2)]  # lanes: (1,0,1)+(1,0,0) and (1,1,0)+(0,0,0)
        [[3], [4]]
    """
    reduction = nonzero.shape[-1]
    # One matrix product counts every lane's non-zeros (exact: counts stay far below 2^24 in float32).
    assignment = (np.arange(reduction)[:, None] % lanes == np.arange(lanes)).astype(np.float32)
    rows = nonzero.astype(np.float32, copy=False).reshape(-1, reduction)
    per_lane = (rows @ assignment).reshape(*nonzero.shape[:-1], lanes)
    ideal = np.ceil(per_lane.sum(axis=-1) / lanes).sum(axis=-1, dtype=np.float64)
    return ideal.astype(np.int64), per_lane.max(axis=-1).sum(axis=-1, dtype=np.float64).astype(np.int64)

def conv_lane_counts(nonzero: np.ndarray, layer: MacLayer, lanes: int) -> np.ndarray:
    """Non-zero inputs per lane of every conv reduction: [images, C, *spatial] -> [images, groups, lanes, positions].

    Padding taps are zero inputs; a reduction's element k (taps in order, channels fastest) goes
    to lane k mod ``lanes``. Counted tap by tap on strided views of the input, never building
    the windows.

    Example:
        >>> layer = MacLayer("c", "Conv", "x", "conv", 1, 1, (2,), (1,), (1,), (1, 0))
        >>> conv_lane_counts(np.array([[[True, False, True]]]), layer, 2)[0, 0].tolist()  # windows 01, 10, 01
        [[0, 1, 0], [1, 0, 1]]
    """
    spatial = nonzero.shape[2:]
    rank = len(spatial)
    padded = np.pad(nonzero, [(0, 0), (0, 0), *conv_pads(layer, spatial)])
    outputs = conv_output_size(layer, spatial)
    images, channels = nonzero.shape[:2]
    group = layer.group
    per_group = channels // group
    padded = padded.reshape(images, group, per_group, *padded.shape[2:])
    widest = -(-per_group * math.prod(layer.kernel) // lanes)  # most inputs one lane can get
    counts = np.zeros((images, group, lanes, *outputs), np.uint8 if widest < 2**8 else np.int32)
    for number, tap in enumerate(np.ndindex(*layer.kernel)):
        window = tuple(slice(tap[a] * layer.dilations[a], tap[a] * layer.dilations[a]
                             + (outputs[a] - 1) * layer.strides[a] + 1, layer.strides[a]) for a in range(rank))
        view = padded[(slice(None), slice(None), slice(None), *window)]  # [images, groups, C/groups, *outputs]
        for block in range(0, per_group, lanes):  # at most one channel per lane in a block
            chunk = view[:, :, block:block + lanes]
            first = (number * per_group + block) % lanes
            head = min(chunk.shape[2], lanes - first)
            counts[:, :, first:first + head] += chunk[:, :, :head]
            if head < chunk.shape[2]:  # the block wraps around to lane 0
                counts[:, :, :chunk.shape[2] - head] += chunk[:, :, head:]
    return counts.reshape(images, group, lanes, -1)


@dataclasses.dataclass
class LayerTally:
    """Sums over images of one layer's costs (mutable, filled batch by batch by :meth:`add`).

    Example:
        >>> tally = LayerTally(MacLayer("fc", "Gemm", "x", "linear", out_features=2, in_features=4),
        ...                    QuantizedTensor("x", "QuantizeLinear", (0,)), lanes=2, groups=1, activation_bits=8,
        ...                    run_bits=5, buffer_bits=1e6)
        >>> tally.add(np.array([[0, 3, 0, 0]], np.uint8), 1)
        >>> tally.images, tally.zero_macs, tally.imbalanced_cycles, tally.encoded["bitmap"], tally.density
        (1, 6, 2, 12, 0.25)
    """

    layer: MacLayer
    tensor: QuantizedTensor
    lanes: int
    groups: int
    activation_bits: int
    run_bits: int
    buffer_bits: float
    images: int = 0
    dense_macs: int = 0  # per image
    dense_cycles: int = 0  # per image
    rounds: int = 1
    values: int = 0  # codes per image
    weights: int = 0  # weights of the layer
    zero_macs: int = 0
    ideal_cycles: int = 0
    imbalanced_cycles: int = 0
    nonzero_values: int = 0
    skipped_weights: int = 0
    formats: tuple[str, ...] = ACT_FORMATS  # the storage formats whose encoded sizes are tallied
    encoded: dict[str, int] = dataclasses.field(init=False)
    spilled: dict[str, int] = dataclasses.field(init=False)

    def __post_init__(self) -> None:
        self.encoded = dict.fromkeys(self.formats, 0)
        self.spilled = dict.fromkeys(self.formats, 0)

    @property
    def density(self) -> float:
        """Share of the input's values that are not the zero point, over the images tallied so far.

        Example:
            >>> tally = LayerTally(MacLayer("fc", "Gemm", "x", "linear", out_features=2, in_features=4),
            ...                    QuantizedTensor("x", "QuantizeLinear", (0,)), 2, 1, 8, 5, 1e6)
            >>> tally.add(np.array([[0, 3, 0, 0], [1, 3, 0, 0]], np.uint8), 2)
            >>> tally.density
            0.375
        """
        return self.nonzero_values / (self.values * self.images) if self.images and self.values else 0.0

    def add(self, codes: np.ndarray, images: int) -> None:
        """Add a batch: ``codes``, the layer's input for ``images`` images (images first; or images x tokens rows).

        Example:
            >>> tally = LayerTally(MacLayer("fc", "Gemm", "x", "linear", out_features=2, in_features=4),
            ...                    QuantizedTensor("x", "QuantizeLinear", (0,)), 2, 1, 8, 5, 1e6)
            >>> tally.add(np.zeros((2, 1, 4), np.uint8), 2)
            >>> tally.images, tally.density
            (2, 0.0)
        """
        if len(self.tensor.zero_point) > 1:
            raise EdgefaultError(f"{self.layer.node}: per-channel activation zero points ({self.tensor.name}) "
                                 "are not modelled")
        width = codes.dtype.itemsize * 8
        if width > self.activation_bits:
            raise EdgefaultError(f"{self.layer.node}: its input {self.tensor.name} holds {width}-bit codes, wider "
                                 f"than the accelerator's activation_bits ({self.activation_bits})")
        signed = bool(np.issubdtype(codes.dtype, np.signedinteger))
        zero = self.tensor.zero_mask(codes)
        dense, zero_macs = layer_macs(self.layer, zero, images)
        self.dense_macs = dense
        self.zero_macs += int(zero_macs.sum())
        per_image = codes.reshape(images, -1)
        self.values = per_image.shape[1]
        self.nonzero_values += int(np.count_nonzero(~zero))
        for name in self.formats:
            fmt = BufferFormat(name, self.activation_bits, self.tensor.zero_point[0], self.run_bits, signed)
            bits = fmt.encoded_bits(per_image)
            self.encoded[name] += int(bits.sum())
            self.spilled[name] += int(bits[bits > self.buffer_bits].sum())
        self._add_cycles(~zero, images)
        self.images += images

    def _add_cycles(self, nonzero: np.ndarray, images: int) -> None:
        layer = self.layer
        if layer.kind == "conv":
            channels = nonzero.shape[1]
            out_per_group = layer.out_channels // layer.group
            self.weights = layer.out_channels * (channels // layer.group) * math.prod(layer.kernel)
            silent = ~nonzero.reshape(images, channels, -1).any(axis=2)
            self.skipped_weights += int(silent.sum()) * out_per_group * math.prod(layer.kernel)
        else:
            nonzero = nonzero.reshape(images, -1, layer.in_features)  # rows of one image
            out_per_group = layer.out_features
            self.weights = layer.in_features * layer.out_features
            self.skipped_weights += int((~nonzero.any(axis=1)).sum()) * layer.out_features
        self.rounds = -(-out_per_group // self.groups)
        if layer.kind == "conv":
            reduction = (nonzero.shape[1] // layer.group) * math.prod(layer.kernel)
            positions = math.prod(conv_output_size(layer, nonzero.shape[2:]))
            step = max(1, WINDOW_ELEMENTS // max(1, layer.group * self.lanes * positions))
            for start in range(0, images, step):
                counts = conv_lane_counts(nonzero[start:start + step], layer, self.lanes)
                busy = counts.sum(axis=2, dtype=np.int64)
                self.ideal_cycles += self.rounds * int(((busy + self.lanes - 1) // self.lanes).sum())
                self.imbalanced_cycles += self.rounds * int(counts.max(axis=2).sum(dtype=np.int64))
            self.dense_cycles = self.rounds * layer.group * positions * -(-reduction // self.lanes)
            return
        step = max(1, WINDOW_ELEMENTS // max(1, nonzero[0].size))
        values = nonzero.astype(np.float32)  # 1.0 where non-zero, ready for the lane product
        for start in range(0, images, step):
            ideal, imbalanced = lane_cycles(values[start:start + step], self.lanes)
            self.ideal_cycles += self.rounds * int(ideal.sum())
            self.imbalanced_cycles += self.rounds * int(imbalanced.sum())
        positions, reduction = nonzero.shape[1:]
        self.dense_cycles = self.rounds * positions * -(-reduction // self.lanes)
