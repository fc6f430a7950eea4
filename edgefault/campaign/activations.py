"""Activation cells: a model run segment by segment, its activation buffers faulted in numpy between the segments.

How a cell is evaluated. The model is split at the tensors of its activation memory
(:class:`~edgefault.runtime.stages.StagedModel`, one ONNX Runtime session per segment, built
once per worker and model and checked to reproduce the whole model's outputs exactly). For
a batch of images, each segment's integer output is stored in its buffer as the format says,
the chip's faulty cells act on the stored bits, and the next segments read the buffer back as
a device's decoder would:

* ``dense``: the faults act on the codes directly (clear, set and toggle masks on the faulty
  codes only), which is the format's encode -> fault -> decode without building the bits;
* ``bitmap`` and ``rle``: :class:`~edgefault.faults.formats.BufferFormat` encodes the batch
  (vectorized, one row per image), the faults act on the cells, and the decoder reads the
  faulty rows back; its shifts depend on each image's zeros, so this is per-image work, done
  for a whole batch at once.

Why not a faulty ONNX file per chip, as for weights: a permanent dense chip can be masks in
the graph (``inject --site activations`` writes that file, and the tests check that both
paths give the same logits), but transient faults change with every image and a sparse
format's decoder moves values by data-dependent amounts, which no constant mask expresses.
The segment sessions serve every cell of a worker, so a cell costs the numpy work and the
segments it must run, never a session; clean activations of every buffer are cached once per
worker (within the suffix-cache budget), so a cell starts at the first faulty buffer.

Time scales. A *permanent* chip faults the same buffer cells for every image. A *transient*
chip gives every image fresh faults: the images are taken in blocks of
:data:`TRANSIENT_BLOCK` (image ``i`` in block ``i // TRANSIENT_BLOCK``), and block ``j`` is a
*tape*, its images' buffers laid end to end, faulted by the chip on its own seed stream
``(3, j)``. Image ``i``'s faults are thus a function of the chip seed and ``i`` alone: batch
size, workers and order change nothing, chips stay nested across rates, and drawing them
costs one draw per block, in proportion to the faults.

Example:
    >>> cells = ActivationCells(model, prepared, SessionSettings(intra_op_threads=1), budget=64 << 20)  # doctest: +SKIP
    >>> cells.measure(Cell(0, "grid", "flip", 1e-3, 0, 7, site="activations", act_format="bitmap"))["accuracy"]  # doctest: +SKIP
    0.958
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import numpy as np

from edgefault.campaign.cells import Cell
from edgefault.errors import EdgefaultError
from edgefault.faults import Chip, FaultRecords, sample_faults
from edgefault.faults.activations import ActivationMemory
from edgefault.faults.formats import BufferFormat, apply_bit_faults
from edgefault.faults.memory import AddressedMemory
from edgefault.faults.records import patch_words, word_masks
from edgefault.onnxio import parse_model
from edgefault.runtime import Evaluator, PreparedInputs, SessionSettings
from edgefault.runtime.actprobe import activation_memory
from edgefault.runtime.stages import StagedModel

Observer = Callable[[dict[str, np.ndarray], int], None]
TRANSIENT_BLOCK = 64  # images per transient tape (a constant of the fault model, not of the evaluation)
TAPE_STREAM = 3  # seed streams: weights (), activations (1,), per-image chips (2, image), tapes (3, block)

# Images per run of the segments (results do not depend on it): dense buffers cost little numpy work,
# so larger batches save ONNX Runtime calls; encoded buffers expand to one byte per stored bit.
DENSE_BATCH, CODED_BATCH = 256, 64


@dataclasses.dataclass(frozen=True)
class Buffer:
    """One activation buffer: the tensor it holds, where its cells start, and how it stores the codes.

    ``shape`` is one image's shape, ``dtype`` the ONNX Runtime dtype of the tensor.

    Example:
        >>> b = Buffer("act3", 0, (120,), np.dtype(np.uint8), BufferFormat("bitmap", 8, 0))
        >>> b.size, b.capacity
        (120, 1080)
    """

    name: str
    start: int
    shape: tuple[int, ...]
    dtype: np.dtype
    format: BufferFormat

    @functools.cached_property
    def size(self) -> int:
        """Codes of one image."""
        return int(np.prod(self.shape, dtype=np.int64))

    @functools.cached_property
    def capacity(self) -> int:
        """Cells the format encodes (the memory rounds the buffer up to whole words; cells past this hold nothing)."""
        return self.format.capacity_bits(self.size)

    def fault(self, values: np.ndarray, rows: np.ndarray | None, cells: np.ndarray, kinds: np.ndarray
              ) -> tuple[np.ndarray, int]:
        """The batch ``values`` as read back from faulty buffers, and how many stored bits the faults changed.

        ``cells`` are positions in one image's buffer; ``rows`` the image (row of ``values``) of
        each, or None for a permanent chip (the same cells in every row). Cells are in
        increasing order within each row.

        Example:
            >>> b = Buffer("a", 0, (3,), np.dtype(np.uint8), BufferFormat("dense", 8, 0))
            >>> out, changed = b.fault(np.array([[1, 2, 3]], np.uint8), None, np.array([8]), np.array([0]))
            >>> out.tolist(), changed
            ([[1, 3, 3]], 1)
        """
        used = cells < self.capacity  # the padding cells of the last word hold nothing a decoder reads
        if not used.all():
            rows, cells, kinds = None if rows is None else rows[used], cells[used], kinds[used]
        flat = values.reshape(len(values), self.size)
        if not cells.size:
            return values, 0
        if self.format.name == "dense":
            faulty, changed = self._dense(flat, rows, cells, kinds)
        else:
            buffer = self.format.encode(flat.astype(np.int64))
            if rows is None:
                hit = apply_bit_faults(buffer, cells, kinds)
            else:
                hit = apply_bit_faults(buffer.reshape(-1), rows * self.capacity + cells, kinds).reshape(buffer.shape)
            changed = int(np.count_nonzero(hit != buffer))
            faulty = self.format.decode(hit, self.size).astype(self.dtype)
        return faulty.reshape(values.shape), changed

    def _dense(self, flat, rows, cells, kinds) -> tuple[np.ndarray, int]:
        """Dense buffers hold the codes themselves: patch the faulty codes' bits in place of encode/decode."""
        width, signed = self.format.bits, self.format.signed
        unsigned = np.ascontiguousarray(flat).view(np.dtype(f"u{flat.dtype.itemsize}"))
        code, bit = np.divmod(cells, width)
        words = code if rows is None else rows * self.size + code
        starts, clear, stuck_one, toggle = word_masks(words, bit, kinds, unsigned.dtype)
        columns = code[starts]
        if rows is None:
            before = unsigned[:, columns]
        else:
            before = unsigned.reshape(-1)[words[starts]]
        after = patch_words(before, clear, stuck_one, toggle)
        changed = int(np.unpackbits((before ^ after).view(np.uint8)).sum())
        if signed and width < 8 * flat.dtype.itemsize:  # a k-bit code in a wider word: sign-extend it
            after = _sign_extend(after, width, unsigned.dtype)
        out = unsigned.copy()
        if rows is None:
            out[:, columns] = after
        else:
            out.reshape(-1)[words[starts]] = after
        return out.view(flat.dtype), changed


def _sign_extend(words: np.ndarray, width: int, dtype) -> np.ndarray:
    low = words & np.asarray((1 << width) - 1, dtype)
    high = np.asarray(((1 << (8 * np.dtype(dtype).itemsize)) - 1) ^ ((1 << width) - 1), dtype)
    return np.where(low >> np.asarray(width - 1, dtype) & 1, low | high, low)


class ActivationCells:
    """Runs the activation cells of one model in one worker (see the module docstring).

    ``model`` is the worker's :class:`~edgefault.campaign.worker.WorkerModel`, ``inputs`` its
    prepared test images, ``budget`` the bytes its clean-activation cache may take (0: none).

    Example:
        >>> ActivationCells(model, prepared, SessionSettings(intra_op_threads=1), 0).measure(cell)["faults"]  # doctest: +SKIP
        21.0
    """

    def __init__(self, model, inputs: PreparedInputs, settings: SessionSettings, budget: int,
                 batch_size: int | None = None):
        self.model, self.inputs, self.settings, self.budget = model, inputs, settings, budget
        self.batch_size = batch_size
        self.memories: dict[str, ActivationMemory] = {}
        self.staged = StagedModel(model.data, self.memory("dense").names, model.input_name, model.output_name,
                                  settings, inputs.images[:CODED_BATCH])
        self.segment = {segment.output: index for index, segment in enumerate(self.staged.segments)}
        self._cache: dict[str, np.ndarray] | None = None
        self._tapes: dict[str, Tape] = {}

    def memory(self, act_format: str) -> ActivationMemory:
        """The model's activation memory in a storage format (built once per format).

        Example:
            >>> cells.memory("bitmap").nbits  # doctest: +SKIP
            23166
        """
        if act_format not in self.memories:
            self.memories[act_format] = (activation_memory(parse_model(self.model.data)) if act_format == "dense"
                                         else self.memory("dense").with_format(act_format))
        return self.memories[act_format]

    def buffers(self, act_format: str) -> list[Buffer]:
        """The buffers of the memory in a format, in memory order.

        Example:
            >>> [b.name for b in cells.buffers("dense")][:2]  # doctest: +SKIP
            ['input_quant', 'pool1']
        """
        return [Buffer(t.name, t.start, self.staged.types[t.name][1], self.staged.types[t.name][0], t.buffer_format)
                for t in self.memory(act_format).tensors]

    def measure(self, cell: Cell, observe: Observer | None = None) -> dict[str, Any]:
        """The predicted class of every test image, with the faulty cells and the stored bits they changed
        (each a mean per image). ``observe(values, images)`` sees every batch's buffers as the segments read them.

        Example:
            >>> cells.measure(cell)["predictions"][:3]  # doctest: +SKIP
            array([7, 2, 1])
        """
        logits, faults, changed = self.run(cell, observe)
        if logits.ndim != 2:
            raise EdgefaultError(f"model output has shape {list(logits.shape)}; a campaign needs [N, classes]")
        return {"predictions": np.argmax(logits, axis=1), "faults": faults, "faulty_bits": changed}

    def run(self, cell: Cell, observe: Observer | None = None) -> tuple[np.ndarray, float, float]:
        """The model's outputs for every test image under the cell's chip, and the faults and changed bits per image.

        ``observe``, when given, is called after each batch with every buffer's values (faulty
        where the chip hit them) and the batch's image count.

        Example:
            >>> logits, faults, changed = cells.run(cell)  # doctest: +SKIP
        """
        memory = self.memory(cell.act_format)
        by_name = {b.name: b for b in self.buffers(cell.act_format)}
        if cell.transient:
            if cell.act_format not in self._tapes:
                self._tapes[cell.act_format] = Tape.of(memory, TRANSIENT_BLOCK, ())
            faults = _TransientFaults(self._tapes[cell.act_format], len(memory.tensors), cell.to_chip())
        else:
            faults = _PermanentFaults(memory, cell.to_chip())
        images = len(self.inputs.images)
        step = self.batch_size or (DENSE_BATCH if cell.act_format == "dense" else CODED_BATCH)
        outputs, count, changed = [], 0, 0
        cache = self._clean()
        for begin in range(0, images, step):
            end = min(begin + step, images)
            hits = faults.batch(begin, end)  # buffer name -> (image rows or None, cells, kinds)
            count += sum(cells.size for _, cells, _ in hits.values()) * (1 if cell.transient else end - begin)

            def hook(name: str, value: np.ndarray) -> np.ndarray:
                nonlocal changed
                if name not in hits:
                    return value
                faulty, bits = by_name[name].fault(value, *hits[name])
                changed += bits
                return faulty

            if cache is None:
                values, start = self.staged.feed(self.inputs.images[begin:end]), 0
            else:  # start after the first faulty buffer: the segments before it compute clean values
                values = {name: array[begin:end] for name, array in cache.items()}
                start = min((self.segment[name] for name in hits), default=len(self.segment) - 1) + 1
            outputs.append(self.staged.logits(values, hook, start))
            if observe is not None:
                observe(values, end - begin)
        return np.concatenate(outputs), count / images, changed / images

    def _clean(self) -> dict[str, np.ndarray] | None:
        """Every buffer's clean codes and the clean outputs for all test images, when they fit the budget.

        Built once, and checked against the whole model's outputs on every image.
        """
        if self._cache is None and self.budget > 0:
            per_image = sum(np.dtype(dtype).itemsize * int(np.prod(shape)) for dtype, shape in self.staged.types.values())
            images = self.inputs.images
            if per_image * len(images) <= self.budget:
                batches = [self.staged.outputs(images[b:b + DENSE_BATCH]) for b in range(0, len(images), DENSE_BATCH)]
                cache = {name: np.concatenate([batch[name] for batch in batches]) for name in batches[0]}
                whole = Evaluator(self.model.data, self.settings, input_name=self.model.input_name,
                                  output_name=self.model.output_name).logits(images, DENSE_BATCH)
                if not np.array_equal(whole, cache[self.model.output_name]):
                    raise EdgefaultError("the model run segment by segment does not reproduce its own outputs on "
                                         "every test image; its activations cannot be faulted between the segments")
                self._cache = cache
        return self._cache


class _PermanentFaults:
    """A permanent chip: the same cells of every buffer for every image."""

    transient = False

    def __init__(self, memory, chip: Chip):
        self.hits = _by_tensor(sample_faults(memory, chip), memory, None)

    def batch(self, begin: int, end: int) -> dict[str, tuple]:
        return self.hits


class _TransientFaults:
    """A transient chip: image ``i``'s faults from the tape of its block (see the module docstring)."""

    transient = True

    def __init__(self, tape: Tape, tensors: int, chip: Chip):
        self.tape, self.tensors, self.chip = tape, tensors, chip
        self._blocks: dict[int, dict[str, tuple]] = {}

    def batch(self, begin: int, end: int) -> dict[str, tuple]:
        parts: dict[str, list[tuple]] = {}
        for block in range(begin // TRANSIENT_BLOCK, (end - 1) // TRANSIENT_BLOCK + 1):
            for name, (image, cells, kinds) in self._block(block).items():
                keep = (image >= begin) & (image < end)
                parts.setdefault(name, []).append((image[keep] - begin, cells[keep], kinds[keep]))
        return {name: tuple(np.concatenate(column) for column in zip(*chunks)) for name, chunks in parts.items()}

    def _block(self, block: int) -> dict[str, tuple]:
        if block not in self._blocks:
            tape = Tape(self.tape.tensors, (TAPE_STREAM, block))
            records = sample_faults(tape, self.chip)
            hits = _by_tensor(records, tape, self.tensors)
            self._blocks[block] = {name: (rows + block * TRANSIENT_BLOCK, cells, kinds)
                                   for name, (rows, cells, kinds) in hits.items()}
        return self._blocks[block]


def _by_tensor(records: FaultRecords, memory, tensors: int | None) -> dict[str, tuple]:
    """Faults grouped by buffer: (image of each, or None; cell within one image's buffer; kind code).

    On a tape, ``tensors`` is the number of buffers per image: tape tensor ``p`` is buffer
    ``p % tensors`` of image ``p // tensors``.
    """
    cells = records.address - memory.bit_starts[records.tensor]
    buffer = records.tensor if tensors is None else records.tensor % tensors
    hits = {}
    for position in np.unique(buffer).tolist():
        rows = buffer == position
        image = None if tensors is None else records.tensor[rows] // tensors
        hits[records.tensors[position]] = (image, cells[rows], records.kind[rows])
    return hits


@dataclasses.dataclass(frozen=True)
class Tape(AddressedMemory):
    """The buffers of ``images`` images laid end to end (image-major), faulted as one memory on its own seed stream.

    Tensor ``p`` of a tape is buffer ``p % m`` of image ``p // m`` (``m`` buffers per image);
    the names repeat, so a chip's ``layers`` filter picks the same buffer in every image.

    Example:
        >>> memory = ActivationMemory.from_tensors([("x", "uint8", (4,), 0, 0.1, "Conv")])
        >>> tape = Tape.of(memory, 3, (2, 0))
        >>> tape.nbits, tape.names
        (96, ('x', 'x', 'x'))
    """

    tensors: tuple
    seed_stream: tuple[int, ...] = ()
    label = "activation"

    @classmethod
    def of(cls, memory: ActivationMemory, images: int, stream: tuple[int, ...]) -> Tape:
        """The tape of ``images`` copies of ``memory``'s buffers, drawn from seed stream ``stream``.

        Example:
            >>> Tape.of(ActivationMemory.from_tensors([("x", "uint8", (4,), 0, 0.1, "Conv")]), 2, (2, 5)).seed_stream
            (2, 5)
        """
        per_image = memory.nbits
        tensors = tuple(dataclasses.replace(t, start=image * per_image + t.start)
                        for image in range(images) for t in memory.tensors)
        return cls(tensors, tuple(stream))
