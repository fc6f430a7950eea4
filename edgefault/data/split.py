"""The deterministic train/test split of a dataset stored without one (mnist5k, image folders, npz)."""

from __future__ import annotations

import numpy as np

# A fixed seed makes the built-in split, and the 80/20 split of unsplit data, the same everywhere.
SPLIT_SEED = 20240614


def stratified_split(labels: np.ndarray, test_share: float) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic per-class split of indices into (train, test).

    Example:
        >>> train, test = stratified_split(np.repeat(np.arange(2), 10), 0.2)
        >>> len(train), len(test)
        (16, 4)
    """
    rng = np.random.default_rng(SPLIT_SEED)
    train, test = [], []
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        cut = int(round(len(members) * test_share))
        test.append(members[:cut])
        train.append(members[cut:])
    # Shuffled, not grouped by class: the first N test images (--limit N) then cover every class.
    return rng.permutation(np.concatenate(train)), rng.permutation(np.concatenate(test))
