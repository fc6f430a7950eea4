"""The test split as it is stored, for evaluation: any per-sample shape and dtype.

Training needs NCHW float images (:class:`~edgefault.data.Dataset`); evaluation feeds a
model its data as stored. An npz's test arrays are kept exactly (dtype and shape); an image
dataset (folder, cifar, mnist, mnist5k) gives its uint8 pixels in NCHW, which the runtime
converts to the model's layout.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from edgefault.data.dataset import Dataset
from edgefault.data.loaders import load_dataset
from edgefault.data.npz import read_npz
from edgefault.data.spec import DatasetSpec, parse_spec
from edgefault.errors import EdgefaultError


@dataclasses.dataclass(frozen=True, eq=False)
class Samples:
    """Test samples ``x`` (``[N, ...]``, as stored) and their int64 labels.

    ``images`` is True for image datasets, whose ``x`` are uint8 NCHW pixels; an npz's ``x``
    is whatever it stores. ``num_classes`` is the number of classes the data names (its
    class list, or the largest label plus one); a model may score more.

    Example:
        >>> samples = load_samples("mnist5k")
        >>> samples.x.shape, samples.x.dtype, samples.images
        ((1000, 1, 28, 28), dtype('uint8'), True)
    """

    spec: str
    x: np.ndarray
    labels: np.ndarray
    num_classes: int
    images: bool
    array: str = "x"  # the array the samples came from, for messages

    def __post_init__(self) -> None:
        if self.x.ndim < 2 or len(self.x) != len(self.labels) or len(self.labels) == 0:
            raise EdgefaultError(f"{self.spec}: needs at least one test sample with a label, got x of shape "
                                 f"{self.x.shape} and {len(self.labels)} labels")

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return tuple(int(d) for d in self.x.shape[1:])

    @classmethod
    def from_dataset(cls, dataset: Dataset) -> Samples:
        """The test split of an image dataset, back as the uint8 pixels its loader read.

        Example:
            >>> int(Samples.from_dataset(load_dataset("mnist5k")).x.max())
            255
        """
        pixels = np.rint(np.clip(dataset.test_images, 0.0, 1.0) * 255.0).astype(np.uint8)
        return cls(dataset.spec, pixels, dataset.test_labels, dataset.num_classes, images=True)


def load_samples(spec: str | DatasetSpec) -> Samples:
    """The test split a SPEC names, as stored: an npz's test arrays, or an image dataset's pixels.
    """
    parsed = parse_spec(spec) if isinstance(spec, str) else spec
    if parsed.kind != "npz":
        return Samples.from_dataset(load_dataset(parsed))
    splits = read_npz(parsed.path)
    return Samples(str(parsed), splits.test_x, splits.test_y, splits.classes, images=False, array=splits.test_name)
