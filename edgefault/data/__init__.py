"""Datasets: SPEC parsing, loaders for the supported on-disk formats, and augmentation."""

from edgefault.data.dataset import Dataset
from edgefault.data.loaders import load_dataset
from edgefault.data.samples import Samples, load_samples
from edgefault.data.spec import DatasetSpec, parse_spec

__all__ = ["Dataset", "DatasetSpec", "Samples", "load_dataset", "load_samples", "parse_spec"]
