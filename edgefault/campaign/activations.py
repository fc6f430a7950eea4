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
  into its fields (vectorized, one row per image; laid end to end, the fields are the
  buffer's cells), the faults patch the fields' bits, and the decoder reads the faulty fields
  back; its shifts depend on each image's zeros, so this is per-image work, done for a whole
  batch at once.

Permanent dense chips have a faster exact path. In the dense format a permanent chip is
constant masks, ``((T & and) | or) ^ xor`` on each buffer ``T`` (what ``inject --site
activations`` writes into a file); so each worker builds, once per model, the model with
every buffer passing through and/or/xor masks that are model *inputs*
(:func:`~edgefault.faults.actinject.mask_input_model`), and a permanent dense chip that
faults the first buffer (at rates of 1e-4 and up, nearly all of them) is one run of that
session per batch, fed the chip's masks: no segment boundaries, which cost ONNX Runtime its
NHWC layout between convolutions, and no new session, which a weight cell pays. A chip whose
first fault lies later starts from the cached clean activations on the segment path, and so
does every dense chip of a model on which masks would cost ONNX Runtime an integer kernel
(checked once per worker). The
tests check that the mask-input session, the segment path and the file with constant masks
give identical logits and changed-bit counts. Transient faults change with every image and a
sparse format's decoder moves values by data-dependent amounts, which no mask expresses:
those cells take the segment path. Its sessions serve every cell of a worker, so a cell costs
the numpy work and the segments it must run, never a session; clean activations of every
buffer are cached once per worker (within the suffix-cache budget), so a cell starts at the
first faulty buffer.

Time scales. A *permanent* chip faults the same buffer cells for every image. A *transient*
chip gives every image fresh faults: :func:`~edgefault.faults.activations.transient_faults`
draws them once per cell for all the test images (a tape, one copy of the buffers per image),
and image ``i``'s faults depend on the chip seed and ``i`` alone, so batch size, workers and
order change nothing, chips stay nested across rates, and drawing costs what the faults cost.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import numpy as np

from edgefault.campaign.cells import Cell
from edgefault.errors import EdgefaultError, error_line
from edgefault.faults import Chip, FaultRecords, sample_faults
from edgefault.faults.activations import ActivationMemory, transient_faults
from edgefault.faults.actinject import mask_feed, mask_input_model, tensor_masks
from edgefault.faults.formats import BufferFormat
from edgefault.faults.records import patch_words, word_masks
from edgefault.onnxio import parse_model
from edgefault.runtime import Evaluator, PreparedInputs, SessionSettings, optimized_kernel_counts
from edgefault.runtime.actprobe import activation_memory
from edgefault.runtime.session import DEFAULT_BATCH, ORT_ERRORS, create_session
from edgefault.runtime.stages import StagedModel

Observer = Callable[[dict[str, np.ndarray], int], None]


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
            faulty, changed = self._coded(flat, rows, cells, kinds)
        return faulty.reshape(values.shape), changed

    def _coded(self, flat, rows, cells, kinds) -> tuple[np.ndarray, int]:
        """Encoded buffers: the faults patch the encoder's fields (exactly its cells, without building them),
        and the decoder reads the faulty fields back."""
        fields = self.format.encode_fields(flat.astype(np.int64))
        changed, start = 0, 0
        for region, (width, count) in zip(fields, self.format.fields(self.size)):
            inside = (cells >= start) & (cells < start + width * count)
            if inside.any():
                field, bit = np.divmod(cells[inside] - start, width)
                words = field if rows is None else rows[inside] * count + field
                starts, clear, stuck_one, toggle = word_masks(words, bit, kinds[inside], np.int64)
                table = region if rows is None else region.reshape(-1)
                index = (slice(None), field[starts]) if rows is None else words[starts]
                before = table[index]
                after = patch_words(before, clear, stuck_one, toggle)
                changed += int(np.unpackbits(np.ascontiguousarray(before ^ after).view(np.uint8)).sum())
                table[index] = after
            start += width * count
        return self.format.decode_fields(fields, self.size).astype(self.dtype), changed

    def changed_bits(self, values: np.ndarray, rows: np.ndarray | None, cells: np.ndarray, kinds: np.ndarray) -> int:
        """How many stored bits of a dense buffer holding ``values`` the faults change (as :meth:`fault` counts them).

        Example:
            >>> b = Buffer("a", 0, (3,), np.dtype(np.uint8), BufferFormat("dense", 8, 0))
            >>> b.changed_bits(np.array([[1, 2, 3], [1, 3, 3]], np.uint8), None, np.array([8]), np.array([1]))
            1
        """
        _, before, after = self._patch(values.reshape(len(values), self.size), rows, cells, kinds)
        return int(np.unpackbits(np.ascontiguousarray(before ^ after).view(np.uint8)).sum())

    def _patch(self, flat, rows, cells, kinds) -> tuple[tuple | np.ndarray, np.ndarray, np.ndarray]:
        """The faulty words of dense codes: where they are (an index into the unsigned view), before and after."""
        unsigned = np.ascontiguousarray(flat).view(np.dtype(f"u{flat.dtype.itemsize}"))
        code, bit = np.divmod(cells, self.format.bits)
        words = code if rows is None else rows * self.size + code
        starts, clear, stuck_one, toggle = word_masks(words, bit, kinds, unsigned.dtype)
        index = (slice(None), code[starts]) if rows is None else words[starts]
        before = unsigned[index] if rows is None else unsigned.reshape(-1)[index]
        return index, before, patch_words(before, clear, stuck_one, toggle)

    def _dense(self, flat, rows, cells, kinds) -> tuple[np.ndarray, int]:
        """Dense buffers hold the codes themselves: patch the faulty codes' bits in place of encode/decode."""
        index, before, after = self._patch(flat, rows, cells, kinds)
        changed = int(np.unpackbits(np.ascontiguousarray(before ^ after).view(np.uint8)).sum())
        unsigned = np.ascontiguousarray(flat).view(np.dtype(f"u{flat.dtype.itemsize}"))
        if self.format.signed and self.format.bits < 8 * flat.dtype.itemsize:  # a k-bit code in a wider word
            after = _sign_extend(after, self.format.bits, unsigned.dtype)
        out = unsigned.copy()
        if rows is None:
            out[index] = after
        else:
            out.reshape(-1)[index] = after
        return out.view(flat.dtype), changed


def _sign_extend(words: np.ndarray, width: int, dtype) -> np.ndarray:
    low = words & np.asarray((1 << width) - 1, dtype)
    high = np.asarray(((1 << (8 * np.dtype(dtype).itemsize)) - 1) ^ ((1 << width) - 1), dtype)
    return np.where(low >> np.asarray(width - 1, dtype) & 1, low | high, low)


class ActivationCells:
    """Runs the activation cells of one model in one worker (see the module docstring).

    ``model`` is the worker's :class:`~edgefault.campaign.worker.WorkerModel`, ``inputs`` its
    prepared test images, ``budget`` the bytes its clean-activation cache may take (0: none).
    """

    def __init__(self, model, inputs: PreparedInputs, settings: SessionSettings, budget: int,
                 batch_size: int | None = None):
        self.model, self.inputs, self.settings, self.budget = model, inputs, settings, budget
        self.batch_size = batch_size
        self.memories: dict[str, ActivationMemory] = {}
        self.staged = StagedModel(model.data, self.memory("dense").names, model.input_name, model.output_name,
                                  settings, inputs.images[:DEFAULT_BATCH])
        self.segment = {segment.output: index for index, segment in enumerate(self.staged.segments)}
        self._cache: dict[str, np.ndarray] | None = None
        self._mask_session, self._channels_last = None, False  # built for the first dense cell that needs it

    def memory(self, act_format: str) -> ActivationMemory:
        """The model's activation memory in a storage format (built once per format).
        """
        if act_format not in self.memories:
            self.memories[act_format] = (activation_memory(parse_model(self.model.data)) if act_format == "dense"
                                         else self.memory("dense").with_format(act_format))
        return self.memories[act_format]

    def buffers(self, act_format: str) -> list[Buffer]:
        """The buffers of the memory in a format, in memory order.
        """
        return [Buffer(t.name, t.start, self.staged.types[t.name][1], self.staged.types[t.name][0], t.buffer_format)
                for t in self.memory(act_format).tensors]

    def measure(self, cell: Cell, observe: Observer | None = None) -> dict[str, Any]:
        """The predicted class of every test image, with the faulty cells and the stored bits they changed
        (each a mean per image). ``observe(values, images)`` sees every batch's buffers as the segments read them.
        """
        logits, faults, changed = self.run(cell, observe)
        if logits.ndim != 2:
            raise EdgefaultError(f"model output has shape {list(logits.shape)}; a campaign needs [N, classes]")
        return {"predictions": np.argmax(logits, axis=1), "faults": faults, "faulty_bits": changed}

    def run(self, cell: Cell, observe: Observer | None = None) -> tuple[np.ndarray, float, float]:
        """The model's outputs for every test image under the cell's chip, and the faults and changed bits per image.

        ``observe``, when given, is called after each batch with every buffer's values (faulty
        where the chip hit them) and the batch's image count.
        """
        memory = self.memory(cell.act_format)
        by_name = {b.name: b for b in self.buffers(cell.act_format)}
        images = len(self.inputs.images)
        faults = (_TransientFaults(memory, cell.to_chip(), images) if cell.transient
                  else _PermanentFaults(memory, cell.to_chip()))
        cache = self._clean()
        if cell.act_format == "dense" and faults.hits:
            first = min(self.segment.get(name, 0) for name in faults.hits)
            # The segments would run the whole model anyway: the model with mask inputs does it in one session
            # (not for the cost observer, which reads every buffer, and only the segments hold them).
            if observe is None and (cell.transient or cache is None or first == 0) and self._mask_ready(memory):
                return self._masked(memory, faults, by_name, cell.transient)
        step = self.batch_size or DEFAULT_BATCH  # results do not depend on it; on LeNet 256 beats 64
        outputs, count, changed = [], 0, 0
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

    def _masked(self, memory: ActivationMemory, faults, by_name: dict[str, Buffer], transient: bool
                ) -> tuple[np.ndarray, float, float]:
        """A dense chip in one session: the model with its buffers' masks as inputs, fed this chip's masks.

        A permanent chip's masks are one image's, broadcast over the batch; a transient chip's
        are one per image. The stored bits the faults changed are counted on the values each
        faulty buffer held before its masks (extra outputs of the model), as the segment path
        counts them.
        """
        position = {name: index for index, name in enumerate(memory.names)}
        images, step = self.inputs.images, self.batch_size or DEFAULT_BATCH
        outputs, count, changed, feed = [], 0, 0, None
        for begin in range(0, len(images), step):
            batch = images[begin:begin + step].astype(self.staged.input_dtype, copy=False)
            hits = faults.batch(begin, begin + len(batch))
            if feed is None or transient:
                masks = {}
                for name, (rows, cells, kinds) in hits.items():
                    tensor = memory.tensors[position[name]]
                    masks[name] = tensor_masks(tensor, cells // tensor.bits, cells % tensor.bits, kinds, rows,
                                               len(batch))
                feed = mask_feed(memory, masks, self._channels_last)
            computed = [name for name in hits if name != self.model.input_name]
            wanted = [self.model.output_name, *(f"{name}/edgefault_clean" for name in computed)]
            try:
                logits, *before = self._mask_session.run(wanted, {self.model.input_name: batch, **feed})
            except ORT_ERRORS as exc:
                raise EdgefaultError(f"ONNX Runtime failed on the model with activation masks ({error_line(exc)})"
                                     ) from None
            stored = {self.model.input_name: batch, **dict(zip(computed, before))}
            for name, (rows, cells, kinds) in hits.items():
                changed += by_name[name].changed_bits(stored[name], rows, cells, kinds)
                count += cells.size * (1 if transient else len(batch))
            outputs.append(logits)
        return np.concatenate(outputs), count / len(images), changed / len(images)

    def _mask_ready(self, memory: ActivationMemory) -> bool:
        """Whether the model with mask inputs runs every conv/linear layer as an integer kernel, as the model does.

        Built and checked once: masks channels last where ONNX Runtime then keeps its integer
        kernels (and its NHWC layout between convolutions), else in place; if neither keeps
        them, dense cells take the segment path.
        """
        if self._mask_session is None:
            self._mask_session = False
            proto = parse_model(self.model.data)
            clean = optimized_kernel_counts(self.model.data, self.settings)
            for channels_last in (True, False):
                masked = mask_input_model(proto, memory, channels_last).SerializeToString()
                kernels = optimized_kernel_counts(masked, self.settings)
                if (kernels.integer_kernels, kernels.float_kernels) == (clean.integer_kernels, clean.float_kernels):
                    self._mask_session = create_session(masked, self.settings.options(), "model with activation masks")
                    self._channels_last = channels_last
                    break
        return self._mask_session is not False

    def _clean(self) -> dict[str, np.ndarray] | None:
        """Every buffer's clean codes and the clean outputs for all test images, when they fit the budget.

        Built once, and checked against the whole model's outputs on every image.
        """
        if self._cache is None and self.budget > 0:
            per_image = sum(np.dtype(dtype).itemsize * int(np.prod(shape)) for dtype, shape in self.staged.types.values())
            images = self.inputs.images
            if per_image * len(images) <= self.budget:
                step = DEFAULT_BATCH
                batches = [self.staged.outputs(images[b:b + step]) for b in range(0, len(images), step)]
                cache = {name: np.concatenate([batch[name] for batch in batches]) for name in batches[0]}
                whole = Evaluator(self.model.data, self.settings, input_name=self.model.input_name,
                                  output_name=self.model.output_name).logits(images, DEFAULT_BATCH)
                if not np.array_equal(whole, cache[self.model.output_name]):
                    raise EdgefaultError("the model run segment by segment does not reproduce its own outputs on "
                                         "every test image; its activations cannot be faulted between the segments")
                self._cache = cache
        return self._cache


class _PermanentFaults:
    """A permanent chip: the same cells of every buffer for every image."""

    def __init__(self, memory: ActivationMemory, chip: Chip):
        records = sample_faults(memory, chip)
        self.hits = _by_tensor(records, memory, records.address)

    def batch(self, begin: int, end: int) -> dict[str, tuple]:
        return {name: (None, cells, kinds) for name, (_, cells, kinds) in self.hits.items()}


class _TransientFaults:
    """A transient chip: every test image's own faults, drawn at once (see the module docstring)."""

    def __init__(self, memory: ActivationMemory, chip: Chip, images: int):
        records = transient_faults(memory, chip, images)
        image, address = np.divmod(records.address, memory.nbits)
        self.hits = _by_tensor(records, memory, address, image)

    def batch(self, begin: int, end: int) -> dict[str, tuple]:
        hits = {}
        for name, (image, cells, kinds) in self.hits.items():  # images in increasing order within a buffer
            low, high = np.searchsorted(image, [begin, end]).tolist()
            if high > low:
                hits[name] = (image[low:high] - begin, cells[low:high], kinds[low:high])
        return hits


def _by_tensor(records: FaultRecords, memory: ActivationMemory, address: np.ndarray,
               image: np.ndarray | None = None) -> dict[str, tuple]:
    """Faults grouped by buffer: (image of each, or None; cell within one image's buffer; kind code).

    ``address`` is each record's address within one image's buffers.
    """
    cells = address - memory.bit_starts[records.tensor]
    hits = {}
    for position in np.unique(records.tensor).tolist():
        rows = records.tensor == position
        hits[records.tensors[position]] = (None if image is None else image[rows], cells[rows], records.kind[rows])
    return hits
