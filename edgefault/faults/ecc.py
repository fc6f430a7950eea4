"""ECC as a mitigation: the storage cost of SEC-DED on chosen bit positions of every weight word.

A single-error-correcting Hamming code over k data bits needs r check bits with
2^r >= k + r + 1; one more overall parity bit makes it SEC-DED (single error correction,
double error detection). edgefault protects *per word*: the k protected bits of each stored
weight (e.g. the sign bit, k = 1) form one codeword with their r + 1 check bits, so the cost is
(r + 1) / word_bits extra storage. A campaign with ``protect_bits`` models the ideal outcome of
that code: every fault on a protected bit is corrected, faults on the other bits stay, and the
check bits themselves are assumed fault-free (at a bit error rate p a codeword of n bits holds
two or more errors with probability about C(n, 2) p^2, which the model ignores).
"""

from __future__ import annotations

import dataclasses

from edgefault.errors import EdgefaultError


def secded_check_bits(data_bits: int) -> int:
    """Check bits of a SEC-DED Hamming code over ``data_bits`` bits (0 for none).

    Example:
        >>> [secded_check_bits(k) for k in (1, 4, 8, 64)]
        [3, 4, 5, 8]
    """
    if data_bits < 0:
        raise EdgefaultError(f"data_bits must be >= 0, got {data_bits}")
    if data_bits == 0:
        return 0
    r = 1
    while 2**r < data_bits + r + 1:
        r += 1
    return r + 1


@dataclasses.dataclass(frozen=True)
class EccOverhead:
    """What protecting ``protected_bits`` of each ``word_bits``-bit weight costs.

    Example:
        >>> ecc_overhead((7,)).describe()
        'SEC-DED on bit 7 of each 8-bit weight: 3 check bits per word, +37.5% weight storage'
    """

    protected_bits: tuple[int, ...]
    word_bits: int
    check_bits: int

    @property
    def relative(self) -> float:
        """Extra storage as a share of the weight memory."""
        return self.check_bits / self.word_bits

    def describe(self) -> str:
        if not self.protected_bits:
            return "no ECC: no extra storage"
        bits = ", ".join(map(str, self.protected_bits))
        noun = "bit" if len(self.protected_bits) == 1 else "bits"
        return (f"SEC-DED on {noun} {bits} of each {self.word_bits}-bit weight: {self.check_bits} check bits per "
                f"word, +{self.relative:.1%} weight storage")

    def to_dict(self) -> dict:
        return {"protected_bits": list(self.protected_bits), "word_bits": self.word_bits,
                "check_bits_per_word": self.check_bits, "relative_storage": self.relative,
                "description": self.describe()}


def ecc_overhead(protected_bits, word_bits: int = 8) -> EccOverhead:
    """The SEC-DED cost of protecting ``protected_bits`` in every ``word_bits``-bit weight word.

    Example:
        >>> ecc_overhead((6, 7)).check_bits
        4
    """
    bits = tuple(sorted(set(int(b) for b in protected_bits)))
    if any(not 0 <= b < word_bits for b in bits):
        raise EdgefaultError(f"protected bits must lie in 0..{word_bits - 1} for {word_bits}-bit weights, got {bits}")
    return EccOverhead(bits, word_bits, secded_check_bits(len(bits)))
