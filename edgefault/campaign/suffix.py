"""Suffix evaluation: clean activations at a model's cuts, cached in the worker, and the suffixes run from them.

A chip whose faults all lie in weights that the nodes before a cut never read leaves the
cut's activations as the clean model computes them. The cell then only needs the suffix:
the sub-model from the cut to the output, with the faulty weights baked in, a new ONNX
Runtime session per cell as for whole models, fed the cached clean activations. Per-layer
cells are the typical case (a fault in the last block's conv runs one block, not twenty).

The cache is built in the worker on the first cell that can use it, at most once per model:
one pass of the clean model with every cut as an extra output. Cuts are kept latest first
(the smallest activations and the largest savings) while they fit the budget; the others
fall back to the whole model. Before a cut is used, its clean suffix must reproduce the
whole model's logits exactly on the first images; a cut that does not is dropped. What was
kept, and why, is logged on ``edgefault.campaign.suffix``, and every results line names the
cut its cell started from.
"""

from __future__ import annotations

import dataclasses
import logging
import time

import numpy as np

from edgefault.errors import EdgefaultError
from edgefault.faults import FaultRecords, Injector, WeightMemory
from edgefault.onnxio import parse_model
from edgefault.runtime import Evaluator, PreparedInputs, SessionSettings
from edgefault.runtime.cuts import Cut, find_cuts, suffix_model
from edgefault.runtime.sparsity import probe_model

MIB = 2**20  # bytes in the megabytes of --cache-mb
DEFAULT_CACHE_MB = 256.0  # per worker, split evenly among the campaign's models
CHECK_IMAGES = 64  # images on which a suffix must reproduce the whole model's logits exactly

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True, eq=False)
class CachedCut:
    """A cut with its clean activations for every test image and an injector on its suffix model.
    """

    cut: Cut
    inputs: PreparedInputs
    injector: Injector

    def evaluator(self, data: bytes, settings: SessionSettings, output_name: str) -> Evaluator:
        """A session on (faulty) suffix bytes that reads the cut tensor.
        """
        return Evaluator(data, settings, input_name=self.cut.name, output_name=output_name)


def remap(records: FaultRecords, memory: WeightMemory) -> FaultRecords:
    """The same faulty bits (tensor, element, bit, kind) as records on another memory holding those tensors.

    Example:
        >>> memory = WeightMemory.from_tensors([("b", "int8", (4,), "t")])
        >>> remap(FaultRecords(("a", "b"), [1], [2], [3], [0], [99]), memory).address.tolist()
        [19]
    """
    positions = {name: i for i, name in enumerate(memory.names)}
    lookup = np.array([positions.get(name, -1) for name in records.tensors], dtype=np.int64)
    tensor = lookup[records.tensor]
    address = memory.addresses(tensor, records.index, records.bit)
    order = np.argsort(address, kind="stable")
    return FaultRecords(memory.names, tensor[order], records.index[order], records.bit[order], records.kind[order],
                        address[order])


class SuffixCache:
    """The cuts of one model in one worker: analysed on first use, activations cached when first useful.

    ``budget`` is in bytes (0 turns suffix evaluation off); suffix injectors are built as the
    worker builds its whole-model one (with the model's ``stored_bits``). ``outputs`` names
    tensors each suffix also outputs where it computes them (``campaign --cost``'s kernel inputs).
    """

    def __init__(self, model, inputs: PreparedInputs, settings: SessionSettings, budget: int, batch_size: int,
                 outputs: tuple[str, ...] = ()):
        self.model, self.inputs, self.settings, self.outputs = model, inputs, settings, outputs
        self.budget, self.batch_size = int(budget), batch_size
        self._cuts: list[Cut] | None = None
        self._cached: list[CachedCut] | None = None

    def cuts(self) -> list[Cut]:
        """Every cut of the model (a graph analysis, done once).
        """
        if self._cuts is None:
            self._cuts = [] if self.budget <= 0 else find_cuts(parse_model(self.model.data), self.model.output_name)
        return self._cuts

    def choose(self, records: FaultRecords) -> CachedCut | None:
        """The latest cached cut whose prefix reads none of the faulty tensors (None: run the whole model).
        """
        faulty = {records.tensors[i] for i in np.unique(records.tensor).tolist()}

        def useful(cut: Cut) -> bool:  # a prefix that reads no weight is only input preprocessing: no gain
            return cut.allows(faulty) and not cut.allows(records.tensors)  # (see _build)

        if not any(useful(cut) for cut in self.cuts()):
            return None  # nothing to gain: do not build the cache for this cell
        if self._cached is None:
            self._cached = self._build(set(records.tensors))
        return next((c for c in reversed(self._cached) if useful(c.cut)), None)

    def _build(self, weights: set[str]) -> list[CachedCut]:
        start = time.perf_counter()
        name, images = self.model.name, self.inputs.images
        # Worth caching: weights on both sides (a prefix without any is input preprocessing, and a
        # suffix without any never meets a fault).
        cuts = [c for c in self.cuts() if not c.allows(weights) and not c.suffix_constants.isdisjoint(weights)]
        proto = parse_model(self.model.data)
        probe = Evaluator(probe_model(proto, [cut.tensor for cut in cuts]), self.settings,
                          input_name=self.model.input_name, output_name=self.model.output_name)
        if probe.fixed_batch:
            logger.info("%s: the graph pins its batch size; every cell runs the whole model", name)
            return []
        outputs = [self.model.output_name, *(cut.name for cut in cuts)]
        first = probe.session.run(outputs, {probe.input_name: images[: self.batch_size].astype(probe.input_dtype)})
        per_image = [value[0].nbytes for value in first[1:]]
        kept, used = set(), 0
        for index in reversed(range(len(cuts))):  # latest first: the smallest tensors and the largest savings
            size = per_image[index] * len(images)
            if used + size <= self.budget:
                kept.add(index)
                used += size
        arrays = {i: np.empty((len(images), *first[1 + i].shape[1:]), first[1 + i].dtype) for i in kept}
        logits = np.empty((len(images), *first[0].shape[1:]), first[0].dtype)
        for begin in range(0, len(images), self.batch_size):
            batch = first if begin == 0 else probe.session.run(
                outputs, {probe.input_name: images[begin : begin + self.batch_size].astype(probe.input_dtype)})
            logits[begin : begin + len(batch[0])] = batch[0]
            for i in kept:
                arrays[i][begin : begin + len(batch[0])] = batch[1 + i]
        cached = self._checked(proto, cuts, arrays, logits)
        skipped = [cuts[i].name for i in range(len(cuts)) if i not in kept]
        logger.info("%s: cached clean activations at %d of %d cuts (%.1f MB of a %.1f MB budget) in %.2f s%s",
                    name, len(cached), len(cuts), used / MIB, self.budget / MIB, time.perf_counter() - start,
                    f"; over budget, not cached: {', '.join(skipped)}" if skipped else "")
        return cached

    def _checked(self, proto, cuts: list[Cut], arrays: dict[int, np.ndarray], logits: np.ndarray) -> list[CachedCut]:
        """Suffixes for the kept cuts, each checked to reproduce the whole model's clean logits exactly."""
        count = min(CHECK_IMAGES, len(logits))
        whole = Evaluator(self.model.data, self.settings, input_name=self.model.input_name,
                          output_name=self.model.output_name).logits(self.inputs.images[:count], self.batch_size)
        if not np.array_equal(whole, logits[:count]):
            logger.warning("%s: adding outputs changed the model's logits; every cell runs the whole model",
                           self.model.name)
            return []
        cached = []
        for index in sorted(arrays):
            cut, values = cuts[index], arrays[index]
            suffix = suffix_model(proto, cut, self.model.output_name, values.dtype, ("batch", *values.shape[1:]))
            if self.outputs:
                computed = {name for node in suffix.graph.node for name in node.output}
                suffix = probe_model(suffix, [name for name in self.outputs if name in computed])
            data = suffix.SerializeToString()
            try:
                entry = CachedCut(cut, PreparedInputs(values, self.inputs.labels), Injector(data, self.model.stored_bits))
                own = entry.evaluator(data, self.settings, self.model.output_name).logits(values[:count],
                                                                                          self.batch_size)
            except EdgefaultError as exc:  # e.g. a suffix without weights, or an input type ORT cannot take
                logger.info("%s: no suffix from %s (%s)", self.model.name, cut.name, exc)
                continue
            if np.array_equal(own, whole):
                cached.append(entry)
            else:
                logger.warning("%s: the suffix from %s does not reproduce the whole model's logits; not used",
                               self.model.name, cut.name)
        return cached
