"""Progressive bit search (Rakin, He and Fan, ICCV 2019) on stored two's-complement codes.

One iteration:

1. The loss on the attack batch and its gradient ``g`` with respect to every stored code
   (:meth:`~edgefault.attack.twin.CodeTwin.gradients`).
2. In each layer, the ``topk`` codes of largest ``|g|``. Bit ``b`` of a k-bit code has the weight
   ``2^b``, except the top bit, whose weight is ``-2^(k-1)``; flipping it changes the code by
   ``delta = (1 - 2 * bit) * weight`` and the loss, to first order, by ``g * delta``. The bits
   with ``g * delta > 0`` are the layer's candidates, best first (bits beyond the stored width
   do not exist, so they are never candidates; a bit flipped before is never flipped again,
   so a fault map lists each bit once).
3. The layers' best candidates are tried, one at a time, on the actual batch loss, and the one
   that raises it most is committed. If none raises it, the layers' second-best candidates are
   tried, and so on up to ``tries`` ranks; if still none does, the search has stalled.
"""

from __future__ import annotations

import dataclasses
from typing import Iterator

import numpy as np
import torch

from edgefault.attack.twin import CodeTwin, sign_extend


@dataclasses.dataclass(frozen=True)
class Flip:
    """One committed flip: where, the code before and after, and the attack-batch loss after it.

    Example:
        >>> Flip("fc.weight", 12, 7, 5, -123, 2.31, 0.05).to_entry()["kind"]
        'flip'
    """

    tensor: str
    index: int
    bit: int
    code_before: int
    code_after: int
    loss: float
    predicted_gain: float

    def to_entry(self) -> dict:
        """The fault-map entry of this flip (the fields ``inject --map-in`` reads, and this flip's own).

        Example:
            >>> sorted(Flip("w", 0, 1, 0, 2, 0.5, 0.1).to_entry())[:4]
            ['bit', 'code_after', 'code_before', 'index']
        """
        return {"tensor": self.tensor, "index": self.index, "bit": self.bit, "kind": "flip",
                "code_before": self.code_before, "code_after": self.code_after, "loss": self.loss}


def bit_candidates(codes: np.ndarray, grad: np.ndarray, bits: int, topk: int,
                   taken: frozenset[tuple[int, int]] = frozenset()) -> list[tuple[float, int, int, int]]:
    """The loss-raising bit flips among the ``topk`` codes of largest ``|grad|``, best first.

    Each is ``(first-order gain, code index, bit, code after)``; ``codes`` are flat signed
    ``bits``-bit codes, ``taken`` the (index, bit) pairs already flipped. Ties keep index order.

    Example:
        >>> bit_candidates(np.array([3, -1]), np.array([0.5, 0.0]), bits=4, topk=1)  # 0011: only 0111 is larger
        [(2.0, 0, 2, 7)]
        >>> [c[2] for c in bit_candidates(np.array([3]), np.array([-1.0]), bits=4, topk=1)]  # the sign bit first
        [3, 1, 0]
    """
    count = min(topk, codes.size)
    top = np.argsort(-np.abs(grad), kind="stable")[:count]
    words = np.asarray(codes, dtype=np.int64)[top] & ((1 << bits) - 1)
    positions = np.arange(bits)
    values = (words[:, None] >> positions) & 1
    weights = np.where(positions == bits - 1, -(1 << (bits - 1)), 1 << positions)
    gain = grad[top, None] * (1 - 2 * values) * weights
    after = sign_extend(words[:, None] ^ (1 << positions), bits)
    rows, columns = np.nonzero(gain > 0)
    order = np.lexsort((columns, rows, -gain[rows, columns]))  # best gain first; ties by index, then bit
    found = []
    for row, column in zip(rows[order].tolist(), columns[order].tolist()):
        index = int(top[row])
        if (index, column) not in taken:
            found.append((float(gain[row, column]), index, column, int(after[row, column])))
    return found


def progressive_bit_search(twin: CodeTwin, images: torch.Tensor, labels: torch.Tensor, topk: int = 10,
                           tries: int = 3) -> Iterator[Flip]:
    """Commit one flip per step on the twin's codes and yield it; ends when no candidate raises the loss.

    The caller stops the search when it has enough flips (a generator that is no longer iterated
    does no more work).
    """
    taken: dict[str, set[tuple[int, int]]] = {name: set() for name in twin.names}
    while True:
        loss, grads = twin.gradients(images, labels)
        ranked = {name: bit_candidates(twin.flat_codes(name), grads[name], twin.bits[name], topk,
                                       frozenset(taken[name]))
                  for name in twin.names}
        twin.cache(images)
        best = None
        for rank in range(tries):
            for name in twin.names:
                if rank >= len(ranked[name]):
                    continue
                gain, index, bit, after = ranked[name][rank]
                trial_loss = twin.trial_loss(labels, name, index, after)
                if trial_loss > loss and (best is None or trial_loss > best[0]):
                    best = (trial_loss, name, index, bit, after, gain)
            if best is not None:
                break
        if best is None:
            return
        trial_loss, name, index, bit, after, gain = best
        before = int(twin.flat_codes(name)[index])
        twin.set_code(name, index, after)
        taken[name].add((index, bit))
        yield Flip(name, index, bit, before, after, trial_loss, gain)
