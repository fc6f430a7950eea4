"""Shared fixtures: the built-in dataset and one small trained run, each built once per session."""

from __future__ import annotations

import pytest
import torch

from edgefault.data import load_dataset
from edgefault.train import TrainConfig, train


@pytest.fixture(scope="session")
def mnist5k():
    return load_dataset("mnist5k")


@pytest.fixture(scope="session")
def lenet_run(tmp_path_factory, mnist5k):
    """A lenet5 trained for two epochs (a few seconds), written as a run directory."""
    out = tmp_path_factory.mktemp("runs") / "lenet"
    train(TrainConfig(model="lenet5", epochs=2, seed=0), out, data=mnist5k, progress=False)
    return out


@pytest.fixture(scope="module")
def one_thread():
    """For tiny workloads: one thread is as fast, and immune to OpenMP contention on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _same_torch_random_state():
    """Every test draws the same ``torch.randn`` inputs whichever tests ran before it (or were deselected)."""
    torch.manual_seed(0)
