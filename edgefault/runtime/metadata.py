"""The metadata an exported edgefault model carries in its ONNX ``metadata_props``.

Every entry is keyed ``edgefault.<field>`` and holds a JSON value, so the file stays
readable in Netron and by any ONNX tool, and ``eval``/``campaign`` need no preprocessing
flags for a model edgefault wrote. Other ``edgefault.*`` keys (for example the chip that
``inject`` records) are left alone: reading ignores them and writing keeps them.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import onnx

from edgefault import __version__
from edgefault.errors import EdgefaultError
from edgefault.numbers import check_finite
from edgefault.reading import parse_json

PREFIX = "edgefault."
LAYOUTS = ("NCHW",)
# 2..8 are the integer widths of the deployed contract; 32 marks a float reference model.
ALLOWED_BITS = (2, 3, 4, 5, 6, 7, 8, 32)
MAX_VALUE_CHARS = 1 << 20  # one metadata entry; a recipe is a few hundred characters


@dataclasses.dataclass(frozen=True)
class ModelMetadata:
    """What a deployed model needs to be evaluated, and how it was made.

    ``input_shape`` is (C, H, W) of one image; the model sees ``(image - mean) / std`` of
    images in [0, 1]. ``class_names`` is empty or has ``num_classes`` entries. ``recipe``
    holds the training settings (JSON-serialisable); ``dataset`` is the dataset SPEC.

    Example:
        >>> meta = ModelMetadata(input_name="input", input_shape=(1, 28, 28), mean=(0.1307,),
        ...                      std=(0.3081,), num_classes=10, wbits=8, abits=8,
        ...                      recipe={"model": "lenet5"}, dataset="mnist5k", clean_accuracy=0.97)
        >>> ModelMetadata.from_props(meta.to_props()) == meta
        True
    """

    input_name: str
    input_shape: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    num_classes: int
    wbits: int
    abits: int
    dataset: str
    recipe: dict[str, Any] = dataclasses.field(default_factory=dict, hash=False)
    class_names: tuple[str, ...] = ()
    clean_accuracy: float | None = None
    layout: str = "NCHW"
    version: str = __version__

    def __post_init__(self) -> None:
        # Normalise sequences to tuples so metadata read back from JSON compares equal.
        set_field = object.__setattr__
        set_field(self, "input_shape", _int_tuple("input_shape", self.input_shape))
        set_field(self, "mean", _float_tuple("mean", self.mean))
        set_field(self, "std", _float_tuple("std", self.std))
        set_field(self, "class_names", tuple(str(name) for name in self.class_names))
        self._validate()

    def _validate(self) -> None:
        if not isinstance(self.input_name, str) or not self.input_name:
            raise EdgefaultError("metadata input_name must be a non-empty string")
        if len(self.input_shape) != 3 or min(self.input_shape) < 1:
            raise EdgefaultError(f"metadata input_shape must be three positive ints (C, H, W), got {self.input_shape}")
        channels = self.input_shape[0]
        if len(self.mean) != channels or len(self.std) != channels:
            raise EdgefaultError(f"metadata mean and std need one value per channel ({channels})")
        for value in self.mean:
            check_finite(value, "metadata mean")
        for value in self.std:  # a divisor: positive, and its reciprocal finite in float32
            check_finite(value, "metadata std", positive=True, reciprocal=True)
        if self.layout not in LAYOUTS:
            raise EdgefaultError(f"metadata layout must be one of {LAYOUTS}, got {self.layout!r}")
        if not _is_int(self.num_classes) or self.num_classes < 1:
            raise EdgefaultError(f"metadata num_classes must be a positive int, got {self.num_classes!r}")
        if self.class_names and len(self.class_names) != self.num_classes:
            raise EdgefaultError(f"metadata has {len(self.class_names)} class names for {self.num_classes} classes")
        for name in ("wbits", "abits"):
            bits = getattr(self, name)
            if not _is_int(bits) or bits not in ALLOWED_BITS:
                raise EdgefaultError(f"metadata {name} must be one of {ALLOWED_BITS}, got {bits!r}")
        if not isinstance(self.recipe, dict):
            raise EdgefaultError("metadata recipe must be a dict of training settings")
        try:
            json.dumps(self.recipe, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise EdgefaultError(f"metadata recipe is not JSON-serialisable: {exc}") from None
        if not isinstance(self.dataset, str) or not self.dataset:
            raise EdgefaultError("metadata dataset must be a non-empty dataset SPEC")
        if self.clean_accuracy is not None and not (
            isinstance(self.clean_accuracy, (int, float)) and 0.0 <= self.clean_accuracy <= 1.0
        ):
            raise EdgefaultError(f"metadata clean_accuracy must be None or in [0, 1], got {self.clean_accuracy!r}")
        if not isinstance(self.version, str) or not self.version:
            raise EdgefaultError("metadata version must be a non-empty string")

    def to_props(self) -> dict[str, str]:
        """The ``metadata_props`` entries: ``edgefault.<field>`` -> JSON text.
        """
        values = dataclasses.asdict(self)
        return {PREFIX + name: json.dumps(values[name], allow_nan=False) for name in _field_names()}

    def write_to(self, model: onnx.ModelProto) -> None:
        """Store these entries in ``model.metadata_props``, replacing older ones of the same keys.
        """
        props = self.to_props()
        kept = [(entry.key, entry.value) for entry in model.metadata_props if entry.key not in props]
        del model.metadata_props[:]
        for key, value in [*kept, *props.items()]:
            model.metadata_props.add(key=key, value=value)

    @classmethod
    def from_props(cls, props: dict[str, str]) -> ModelMetadata | None:
        """Parse ``edgefault.*`` entries; None when there are none of this class's keys.

        Example:
            >>> ModelMetadata.from_props({"producer": "x"}) is None
            True
        """
        names = _field_names()
        present = {name: props[PREFIX + name] for name in names if PREFIX + name in props}
        if not present:
            return None
        required = [f.name for f in dataclasses.fields(cls) if f.default is dataclasses.MISSING
                    and f.default_factory is dataclasses.MISSING]
        missing = [PREFIX + name for name in required if name not in present]
        if missing:
            raise EdgefaultError(f"model metadata is incomplete: missing {', '.join(missing)}")
        values = {}
        for name, text in present.items():
            if len(text) > MAX_VALUE_CHARS:
                raise EdgefaultError(f"model metadata {PREFIX}{name} is longer than {MAX_VALUE_CHARS:,} characters")
            values[name] = parse_json(text, f"model metadata {PREFIX}{name}")
        try:
            return cls(**values)
        except TypeError as exc:  # a value of the wrong kind, e.g. a list where a number belongs
            raise EdgefaultError(f"model metadata is malformed: {exc}") from None

    @classmethod
    def from_model(cls, model: onnx.ModelProto) -> ModelMetadata | None:
        """Read the metadata of a loaded ONNX model; None when it carries no edgefault metadata.
        """
        return cls.from_props({entry.key: entry.value for entry in model.metadata_props})


def _field_names() -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(ModelMetadata))


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _int_tuple(name: str, values: Any) -> tuple[int, ...]:
    try:
        items = tuple(values)
    except TypeError:
        raise EdgefaultError(f"metadata {name} must be a list of ints, got {values!r}") from None
    if not all(_is_int(v) for v in items):
        raise EdgefaultError(f"metadata {name} must be a list of ints, got {values!r}")
    return items


def _float_tuple(name: str, values: Any) -> tuple[float, ...]:
    try:
        items = tuple(values)
    except TypeError:
        raise EdgefaultError(f"metadata {name} must be a list of numbers, got {values!r}") from None
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in items):
        raise EdgefaultError(f"metadata {name} must be a list of numbers, got {values!r}")
    return tuple(float(v) for v in items)
