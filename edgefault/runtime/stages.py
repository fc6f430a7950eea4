"""Running a model segment by segment, with a hook on the integer tensors between the segments.

:func:`~edgefault.runtime.cuts.split_model` cuts the graph at chosen integer tensors (an
activation memory's buffers); :class:`StagedModel` holds one ONNX Runtime session per segment
and runs them in order on a batch, passing each split tensor through a hook (numpy in, numpy
out) before any later segment reads it. The sessions are built once and serve every cell, so
what a hook does to a buffer (a fault pattern that changes with every image, a sparse format
whose decoder shifts values by data-dependent amounts) costs numpy work, not a new session.

The segments meet at integer tensors, which ONNX Runtime's fused kernels compute and consume
alike; :class:`StagedModel` checks on the first images that the segments without a hook give
the whole model's outputs bit for bit, and refuses the model otherwise.

Example (``model.onnx`` split at its quantized input, whose buffer a hook then zeroes):
    >>> images = np.random.default_rng(0).random((8, 1, 4, 4), np.float32)
    >>> with open("model.onnx", "rb") as file:
    ...     staged = StagedModel(file.read(), ["input_q"], "input", "logits", SessionSettings(), images[:4])
    >>> staged.logits(staged.feed(images), lambda name, value: np.zeros_like(value)).tolist()[0]
    [0.0, 0.0, 0.0]
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from edgefault.errors import EdgefaultError
from edgefault.runtime.cuts import Segment, segment_model, split_model
from edgefault.errors import error_line
from edgefault.onnxio import parse_model
from edgefault.runtime.session import ORT_ERRORS, Evaluator, SessionSettings, create_session
from edgefault.runtime.sparsity import probe_model

Hook = Callable[[str, np.ndarray], np.ndarray]


class StagedModel:
    """A model split at ``tensors`` (names of integer tensors), run segment by segment.

    ``sample`` (prepared images, at least one) fixes each split tensor's dtype and per-image
    shape and is where the split model must reproduce the whole model's outputs exactly.

    Example:
        >>> sample = np.ones((2, 1, 4, 4), np.float32)
        >>> with open("model.onnx", "rb") as file:
        ...     staged = StagedModel(file.read(), ["input_q"], "input", "logits", SessionSettings(), sample)
        >>> [segment.output for segment in staged.segments], list(staged.feed(sample))
        (['input_q', 'logits'], ['input'])
        >>> staged.outputs(sample)["input_q"].shape, staged.logits(staged.feed(sample), lambda name, value: value).shape
        ((2, 1, 4, 4), (2, 3))
    """

    def __init__(self, data: bytes, tensors: Sequence[str], input_name: str, output_name: str,
                 settings: SessionSettings, sample: np.ndarray):
        proto = parse_model(data)
        self.input_name, self.output_name, self.tensors = input_name, output_name, tuple(tensors)
        self.segments: list[Segment] = split_model(proto, self.tensors, output_name)
        probe = Evaluator(probe_model(proto, list(self.tensors)), settings,
                          input_name=input_name, output_name=output_name)
        if probe.fixed_batch:
            raise EdgefaultError("the graph pins its batch size; segment-by-segment evaluation needs a free batch axis")
        self.input_dtype = probe.input_dtype
        sample = sample.astype(self.input_dtype, copy=False)
        names = [output_name, *self.tensors]
        first = dict(zip(names, probe.session.run(names, {input_name: sample})))
        types = {name: (value.dtype, value.shape[1:]) for name, value in first.items()}
        types[input_name] = (np.dtype(self.input_dtype), sample.shape[1:])
        for name, value in first.items():
            if value.ndim < 1 or value.shape[0] != len(sample):
                raise EdgefaultError(f"tensor {name!r} has shape {list(value.shape)} for {len(sample)} images; "
                                     "segment-by-segment evaluation needs the images on its first axis")
        self.types = types
        self.sessions = [None if not segment.nodes else
                         create_session(segment_model(proto, segment, types).SerializeToString(), settings.options(),
                                        f"segment computing {segment.output}")
                         for segment in self.segments]
        if not np.array_equal(self.logits(self.feed(sample), _unchanged), first[output_name]):
            raise EdgefaultError("the model run segment by segment does not reproduce its own outputs exactly; "
                                 "its activations cannot be faulted between the segments")

    def feed(self, images: np.ndarray) -> dict[str, np.ndarray]:
        """The values a run starts from: the images, as the data input takes them."""
        return {self.input_name: images.astype(self.input_dtype, copy=False)}

    def outputs(self, images: np.ndarray) -> dict[str, np.ndarray]:
        """Every split tensor and the output on a batch of images, without faults."""
        values = self.feed(images)
        self.logits(values, _unchanged)
        return values

    def logits(self, values: dict[str, np.ndarray], hook: Hook, start: int = 0) -> np.ndarray:
        """Run the segments from ``start`` on; every split tensor passes through ``hook(name, value)``.

        ``values`` holds the data input and, for segments before ``start``, their outputs
        (clean activations from a cache); it receives every tensor computed. Returns the
        model's output, one row per image.
        """
        for index, (segment, session) in enumerate(zip(self.segments, self.sessions)):
            if index >= start and session is not None:
                try:
                    (value,) = session.run([segment.output], {name: values[name] for name in segment.inputs})
                except ORT_ERRORS as exc:
                    raise EdgefaultError(f"ONNX Runtime failed on the segment computing {segment.output} "
                                         f"({error_line(exc)})") from None
            else:
                value = values[segment.output]
            values[segment.output] = hook(segment.output, value) if segment.output in self.tensors else value
        return values[self.output_name]


def _unchanged(name: str, value: np.ndarray) -> np.ndarray:
    return value
