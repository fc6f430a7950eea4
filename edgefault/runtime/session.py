"""One ONNX Runtime session per model, and scoring prepared test images with it.

:class:`Evaluator` is the object campaigns reuse: it is built from a file or from
serialized bytes (a faulty model never has to touch the disk), holds one
``InferenceSession``, and scores :class:`~edgefault.runtime.inputs.PreparedInputs`.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import onnx
import onnxruntime as ort
from onnxruntime.capi import onnxruntime_pybind11_state as ort_state

from edgefault.errors import EdgefaultError, error_line, unsupported_input
from edgefault.progress import Progress
from edgefault.runtime.inputs import PreparedInputs
from edgefault.onnxio import load_model

# What ONNX Runtime raises for a model it cannot load or run; all become one-line user errors.
ORT_ERRORS = (
    ort_state.Fail,
    ort_state.InvalidArgument,
    ort_state.InvalidGraph,
    ort_state.InvalidProtobuf,
    ort_state.NoSuchFile,
    ort_state.NotImplemented,
    ort_state.RuntimeException,
    ort_state.EPFail,
    RuntimeError,
)
OPTIMIZATION_LEVELS = {
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}
DEFAULT_BATCH = 256
# ONNX Runtime's input type names -> the numpy dtype fed (float, uint8 and int8 inputs; see model_io).
ORT_INPUT_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64,
                   "tensor(uint8)": np.uint8, "tensor(int8)": np.int8}


@dataclasses.dataclass(frozen=True)
class SessionSettings:
    """How sessions are built: intra-op threads (0 lets ONNX Runtime choose) and optimization level.

    Example:
        >>> SessionSettings(intra_op_threads=1).options().intra_op_num_threads
        1
    """

    intra_op_threads: int = 0
    optimization: str = "all"

    def __post_init__(self) -> None:
        if self.intra_op_threads < 0:
            raise EdgefaultError(f"threads must be >= 0 (0 = ONNX Runtime's choice), got {self.intra_op_threads}")
        if self.optimization not in OPTIMIZATION_LEVELS:
            raise EdgefaultError(f"optimization must be one of {', '.join(OPTIMIZATION_LEVELS)}")

    def options(self, optimized_model_path: str | None = None) -> ort.SessionOptions:
        """Fresh ``SessionOptions``; ``optimized_model_path`` saves the optimized graph there.

        Example:
            >>> SessionSettings().options("/tmp/opt.onnx").optimized_model_filepath
            '/tmp/opt.onnx'
        """
        options = ort.SessionOptions()
        options.graph_optimization_level = OPTIMIZATION_LEVELS[self.optimization]
        options.intra_op_num_threads = self.intra_op_threads
        options.inter_op_num_threads = 1  # sequential execution: a second pool would only idle
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.enable_profiling = False
        # Warnings (e.g. on saving an NCHWc-optimized graph) would clutter the one-line error contract.
        options.log_severity_level = 3
        if optimized_model_path is not None:
            options.optimized_model_filepath = optimized_model_path
        return options


def create_session(data: bytes, options: ort.SessionOptions, source: str = "model") -> ort.InferenceSession:
    """An ``InferenceSession`` on the CPU for serialized model bytes; load failures are user errors.
    """
    try:
        return ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    except ORT_ERRORS as exc:
        raise EdgefaultError(f"{source}: ONNX Runtime cannot load it ({error_line(exc)})") from None


@dataclasses.dataclass(frozen=True, eq=False)
class Score:
    """Top-1 accuracy on prepared inputs, with the predicted class of every image.
    """

    accuracy: float
    correct: int
    total: int
    predictions: np.ndarray


class Evaluator:
    """Holds one ONNX Runtime session and scores images with it.

    ``model`` is a path (loaded safely, external data included), serialized model bytes, or
    an ``onnx.ModelProto``. Building from bytes does not parse the model in Python, so a
    campaign can afford one evaluator per faulty model.
    """

    def __init__(
        self,
        model: bytes | str | os.PathLike | onnx.ModelProto,
        settings: SessionSettings = SessionSettings(),
        *,
        input_name: str | None = None,
        output_name: str | None = None,
    ) -> None:
        if isinstance(model, (bytes, bytearray, memoryview)):
            data, source = bytes(model), "model bytes"
        elif isinstance(model, onnx.ModelProto):
            data, source = model.SerializeToString(), model.graph.name or "model"
        else:
            data, source = load_model(model).SerializeToString(), str(model)
        self.settings = settings
        self.session = create_session(data, settings.options(), source)
        self.input_name, self.input_dtype, self.fixed_batch = self._pick_input(input_name, source)
        self.output_name = self._pick_output(output_name, source)

    def _pick_input(self, name: str | None, source: str) -> tuple[str, type, int | None]:
        inputs = self.session.get_inputs()
        chosen = [arg for arg in inputs if name is None or arg.name == name]
        if len(chosen) != 1:
            names = ", ".join(arg.name for arg in inputs)
            raise EdgefaultError(f"{source}: cannot pick the data input among ({names})")
        arg = chosen[0]
        if arg.type not in ORT_INPUT_TYPES:
            raise unsupported_input(arg.name, arg.type.removeprefix("tensor(").rstrip(")"))
        batch = arg.shape[0] if arg.shape and isinstance(arg.shape[0], int) and arg.shape[0] > 0 else None
        return arg.name, ORT_INPUT_TYPES[arg.type], batch

    def _pick_output(self, name: str | None, source: str) -> str:
        outputs = [arg.name for arg in self.session.get_outputs()]
        if name is None:
            return outputs[0]
        if name not in outputs:
            raise EdgefaultError(f"{source}: no output named {name!r} (outputs: {', '.join(outputs)})")
        return name

    def logits(self, images: np.ndarray, batch_size: int = DEFAULT_BATCH, progress: str | None = None) -> np.ndarray:
        """Class scores ``[N, classes]`` for prepared samples (any input shape the model takes), run in batches.

        ``progress`` is the label of a progress bar on stderr (shown only on a terminal).
        """
        # A graph with a pinned batch size (often 1) is fed exactly that many images per run.
        step = self.fixed_batch or max(1, batch_size)
        chunks = []
        with progress_bar(len(images), progress) as bar:
            for start in range(0, len(images), step):
                batch = images[start : start + step]
                chunks.append(self._run(batch, len(batch)))
                bar.update(len(batch))
        if not chunks:
            return np.zeros((0, 0), np.float32)
        return np.concatenate(chunks)

    def _run(self, batch: np.ndarray, count: int) -> np.ndarray:
        if self.fixed_batch and count < self.fixed_batch:
            padding = np.zeros((self.fixed_batch - count, *batch.shape[1:]), batch.dtype)
            batch = np.concatenate([batch, padding])
        try:
            feed = {self.input_name: batch.astype(self.input_dtype, copy=False)}
            (scores,) = self.session.run([self.output_name], feed)
        except ORT_ERRORS as exc:
            raise EdgefaultError(f"ONNX Runtime failed to run the model ({error_line(exc)})") from None
        if scores.ndim != 2 or scores.shape[0] != len(batch):
            raise EdgefaultError(
                f"model output {self.output_name!r} has shape {list(scores.shape)} for a batch of {len(batch)}; "
                "eval needs [N, classes] class scores"
            )
        return scores[:count]

    def predict(self, images: np.ndarray, batch_size: int = DEFAULT_BATCH) -> np.ndarray:
        """Top-1 class of each image.
        """
        return np.argmax(self.logits(images, batch_size), axis=1)

    def score(
        self, inputs: PreparedInputs, batch_size: int = DEFAULT_BATCH, progress: str | None = None
    ) -> Score:
        """Top-1 accuracy on prepared inputs.
        """
        predictions = np.argmax(self.logits(inputs.images, batch_size, progress), axis=1)
        correct = int(np.sum(predictions == inputs.labels))
        total = len(inputs)
        return Score(correct / total if total else 0.0, correct, total, predictions)


def progress_bar(total: int, label: str | None) -> Progress:
    """A bar over ``total`` images on stderr, shown only when labelled and on a terminal (a short pass: no log line).

    Example:
        >>> with progress_bar(10, None) as bar:
        ...     bar.update(10)
    """
    return Progress(total, label, unit="img", log=False)

