"""The in-memory dataset training consumes: float NCHW images (uint8 pixels scaled to [0, 1]), with their normalization."""

from __future__ import annotations

import dataclasses

import numpy as np

from edgefault.errors import EdgefaultError


@dataclasses.dataclass(frozen=True, eq=False)
class Dataset:
    """Train and test splits as float32 NCHW images with int64 labels.

    Images stored as uint8 pixels are scaled to [0, 1]; float images are kept as stored.
    Evaluation reads the test split as stored instead (:mod:`edgefault.data.samples`).

    ``mean`` and ``std`` are per channel; models see ``(image - mean) / std``.

    Example:
        >>> from edgefault.data import load_dataset
        >>> data = load_dataset("mnist5k")
        >>> data.input_shape, data.num_classes, len(data.test_labels)
        ((1, 28, 28), 10, 1000)
    """

    spec: str
    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    class_names: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __post_init__(self) -> None:
        for split, images, labels in (
            ("train", self.train_images, self.train_labels),
            ("test", self.test_images, self.test_labels),
        ):
            if images.ndim != 4:
                raise EdgefaultError(f"{self.spec}: {split} images must be NCHW, got shape {images.shape}")
            if len(images) != len(labels):
                raise EdgefaultError(f"{self.spec}: {len(images)} {split} images but {len(labels)} labels")
            if len(labels) and (labels.min() < 0 or labels.max() >= len(self.class_names)):
                raise EdgefaultError(f"{self.spec}: {split} labels outside 0..{len(self.class_names) - 1}")
        if len(self.test_labels) == 0:
            raise EdgefaultError(f"{self.spec}: the test split is empty")
        if len(self.mean) != self.input_shape[0] or len(self.std) != self.input_shape[0]:
            raise EdgefaultError(f"{self.spec}: mean/std need one value per channel ({self.input_shape[0]})")

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(int(d) for d in self.test_images.shape[1:])  # type: ignore[return-value]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def normalized(self, images: np.ndarray, mean=None, std=None) -> np.ndarray:
        """Return ``(images - mean) / std`` as float32; defaults to this dataset's statistics.
        """
        mean = np.asarray(self.mean if mean is None else mean, np.float32).reshape(1, -1, 1, 1)
        std = np.asarray(self.std if std is None else std, np.float32).reshape(1, -1, 1, 1)
        return ((images - mean) / std).astype(np.float32)
