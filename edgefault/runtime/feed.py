"""Feeding a model its data: the test split converted once to the model's input, with one line saying how.

The rules, in order:

1. **Shape and layout.** Samples whose shape already is the model's per-sample shape are
   used as stored. Image datasets (uint8 NCHW pixels) are transposed for an NHWC model; an
   npz of images in the other layout is transposed when the model's layout is known; an
   ``N x H x W`` npz gains the single channel axis; single-channel images are flattened
   for an ``[N, F]`` model (or lose the channel axis for ``[N, T, F]``) when the sizes
   match. Anything else is one error naming the dataset, the input and both shapes.
2. **Dtype and scale.** A uint8 or int8 model input is fed the stored integers (of that
   dtype only). For a float input, uint8 image data (an image dataset, or uint8 samples
   for an image input) is scaled by 1/255; every other dtype is fed as stored unless
   ``--scale`` gives a factor, which then replaces the default.
3. **Normalization.** ``(x - mean) / std`` along the channel axis (images) or the last axis
   (features, sequences), when the spec has a mean and std.

The result is read-only: a campaign shares it across thousands of sessions.
"""

from __future__ import annotations

import numpy as np

from edgefault.data import Dataset, Samples
from edgefault.errors import EdgefaultError
from edgefault.runtime.inputs import (FEATURES, FLOAT_INPUTS, SEQUENCE, UNDECIDED, InputSpec, PreparedInputs,
                                      format_shape)
from edgefault.runtime.session import Evaluator, SessionSettings
from edgefault.runtime.layout import IMAGE_LAYOUTS, channel_index, shape_layout, to_layout, transpose_axes


def prepare_inputs(data: Samples | Dataset, spec: InputSpec, limit: int | None = None,
                   scale: float | None = None) -> PreparedInputs:
    """Convert the (first ``limit``) test samples once for ``spec``; ``scale`` is ``--scale``'s factor.
    """
    samples = data if isinstance(data, Samples) else Samples.from_dataset(data)
    reshape, how = _conversion(samples, spec)
    count = len(samples.labels) if limit is None else min(limit, len(samples.labels))
    x = reshape(samples.x[:count])
    notes = [] if how is None else [how]
    if spec.dtype not in FLOAT_INPUTS:
        if samples.x.dtype != np.dtype(spec.dtype):
            raise EdgefaultError(f"model input {spec.name!r} takes {spec.dtype} values but {samples.spec} stores "
                                 f"{samples.x.dtype}; give an npz of {spec.dtype} samples")
        fed = np.ascontiguousarray(x)
    else:
        pixels = samples.x.dtype == np.uint8 and (samples.images or spec.image)
        factor = scale if scale is not None else (1 / 255 if pixels else 1.0)
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):  # checked below, in one line
            fed = _scaled(x, factor)
            if factor != 1.0:
                what = "uint8 images" if pixels else f"{samples.x.dtype} data"
                notes.append(f"{what} scaled by {_factor(factor)}" + (" (--scale)" if scale is not None else ""))
            if spec.mean:
                fed = (fed - _along(spec, spec.mean, fed.ndim)) / _along(spec, spec.std, fed.ndim)
                notes.append(f"normalized with mean {_values(spec.mean)}, std {_values(spec.std)} ({spec.source})")
            else:
                notes.append("not normalized")
        if not np.isfinite(fed).all():
            raise EdgefaultError(f"the input of {spec.name!r} is not finite in float32 after "
                                 f"{', '.join(notes[-2:] if factor != 1.0 else notes[-1:])}; "
                                 "give a smaller `scale`/`mean` or a larger `std` (or data without inf/NaN)")
        fed = np.ascontiguousarray(fed, dtype=spec.dtype)
    if how is None and not any("scaled" in note for note in notes):
        notes.insert(0, "data fed as stored")
    fed.setflags(write=False)  # shared by many sessions: nobody may change it in place
    labels = np.asarray(samples.labels[:count], dtype=np.int64)
    return PreparedInputs(fed, labels, f"{spec.name}: {spec.describe()}, " + ", ".join(notes))


def check_classes(samples: Samples, classes: int | None) -> None:
    """Refuse data naming more classes than the model scores (the model's count wins when labels cover fewer).
    """
    if classes is not None and samples.num_classes > classes:
        raise EdgefaultError(f"dataset {samples.spec} has {samples.num_classes} classes (labels up to "
                             f"{samples.num_classes - 1}) but the model scores only {classes}")


def _fits(shape: tuple[int, ...], wanted: tuple[int | None, ...]) -> bool:
    return len(shape) == len(wanted) and all(w is None or w == s for s, w in zip(shape, wanted))


def _conversion(samples: Samples, spec: InputSpec):
    """How to turn stored samples into the model's input: (function of a batch, what it does in words or None)."""
    have = samples.sample_shape
    want = spec.shape if spec.shape is not None else have
    if _fits(have, want):
        return (lambda x: x), None
    if spec.image and len(have) == 2:
        for layout, shape in (("NCHW", (1, *have)), ("NHWC", (*have, 1))):
            if spec.layout in (layout, UNDECIDED) and _fits(shape, want):
                axis = 1 if layout == "NCHW" else 3
                return (lambda x: np.expand_dims(x, axis)), f"{format_shape(have)} data given a channel axis"
    if spec.layout in IMAGE_LAYOUTS and len(have) == 3:
        source = "NCHW" if samples.images else ("NHWC" if spec.layout == "NCHW" else "NCHW")
        if source != spec.layout and _fits(to_layout(have, source, spec.layout), want):
            axes = transpose_axes(source, spec.layout)
            return (lambda x: x.transpose(axes)), f"{source} data transposed to {spec.layout}"
    if spec.layout in (FEATURES, SEQUENCE) and samples.images and have[0] == 1:
        flat = (int(np.prod(have)),) if spec.layout == FEATURES else have[1:]
        if _fits(flat, want):
            return (lambda x: x.reshape(len(x), *flat)), f"{format_shape(have)} images reshaped to {format_shape(flat)}"
    raise EdgefaultError(_mismatch(samples, spec, have, want))


def _mismatch(samples: Samples, spec: InputSpec, have, want) -> str:
    if spec.image and len(have) == 2:  # N x H x W: single-channel images
        have = (*have, 1) if spec.layout == "NHWC" else (1, *have)
    if spec.image and len(have) == 3:
        source = "NCHW" if samples.images else (shape_layout(have) or spec.layout)
        target = spec.layout if spec.layout in IMAGE_LAYOUTS else source
        if source in IMAGE_LAYOUTS and target in IMAGE_LAYOUTS:
            have = to_layout(have, source, target)
        hint = "; `layout` nchw or nhwc decides" if spec.layout == UNDECIDED else ""
        layout = "NCHW or NHWC" if spec.layout == UNDECIDED else spec.layout
        return (f"dataset {samples.spec} has {format_shape(have)} images but the model takes {format_shape(want)} "
                f"(input {spec.name!r}, {layout}){hint}")
    return f"dataset {samples.spec} has samples of {format_shape(have)} but model input {spec.name!r} takes {spec.describe()}"


def _scaled(x: np.ndarray, factor: float) -> np.ndarray:
    """``x * factor`` as float32, computed in float64 (``p / 255.0`` exactly as the training loaders do)."""
    if factor == 1.0:
        return x.astype(np.float32)
    divisor = 1.0 / factor  # a whole divisor (1/255): divide, exactly as the loaders do; never by round(...) = 0
    whole = round(divisor) >= 1 and abs(divisor - round(divisor)) < 1e-9
    scaled = x / round(divisor) if whole else x * factor
    return scaled.astype(np.float32)


def _along(spec: InputSpec, values: tuple[float, ...], ndim: int) -> np.ndarray:
    array = np.asarray(values, np.float32)
    if array.size == 1:
        return array.reshape(())
    shape = [1] * ndim
    index = channel_index(spec.layout)
    shape[ndim - 1 if index is None else index + 1] = array.size
    return array.reshape(shape)


def _values(values: tuple[float, ...]) -> str:
    return f"{values[0]:g}" if len(set(values)) == 1 else ",".join(f"{v:g}" for v in values)


def _factor(factor: float) -> str:
    inverse = 1 / factor
    return f"1/{inverse:g}" if abs(inverse - round(inverse)) < 1e-9 and inverse > 1 else f"{factor:g}"


def model_classes(data: bytes, io, prepared: PreparedInputs, samples: Samples, settings=None):
    """Run one sample to learn the class count (graphs may not declare it) and check the data against it.

    Returns the evaluator (reusable for scoring) and the class count. A broken model fails
    here, once, rather than in every campaign cell.
    """
    evaluator = Evaluator(data, settings or SessionSettings(intra_op_threads=1), input_name=io.input_name,
                          output_name=io.output_name)
    classes = int(evaluator.logits(prepared.images[:1]).shape[1])
    check_classes(samples, classes)
    return evaluator, classes
