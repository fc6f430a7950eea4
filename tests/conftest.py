"""Shared fixtures: the built-in dataset and one small trained run, each built once per session."""

from __future__ import annotations

import contextlib

import pytest
import torch

from edgefault.data import load_dataset
from edgefault.train import TrainConfig, train


@pytest.fixture(scope="session")
def mnist5k():
    return load_dataset("mnist5k")


@contextlib.contextmanager
def torch_threads(count: int):
    """torch's intra-op threads within the block: its float reductions (convolution gradients) then add up in the
    same order on every machine, whatever its core count."""
    threads = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def lenet_run(tmp_path_factory, mnist5k):
    """A lenet5 trained for two epochs (a few seconds) on one thread, written as a run directory: the same weights
    on any machine with the same CPU kernels, and whichever test asks first."""
    out = tmp_path_factory.mktemp("runs") / "lenet"
    with torch_threads(1):
        train(TrainConfig(model="lenet5", epochs=2, seed=0), out, data=mnist5k, progress=False)
    return out


@pytest.fixture(scope="module")
def one_thread():
    """For tiny workloads: one thread is as fast, immune to OpenMP contention on a busy machine, and trains the
    same model whatever the machine's core count."""
    with torch_threads(1):
        yield


@pytest.fixture(autouse=True)
def _same_torch_random_state():
    """Every test draws the same ``torch.randn`` inputs whichever tests ran before it (or were deselected)."""
    torch.manual_seed(0)
