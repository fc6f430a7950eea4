"""The cells of a campaign and the chips they use.

A cell is one measurement: a model, and either nothing (its clean accuracy) or one chip.
Chip ``k`` of a kind gets a seed derived from the campaign seed, the kind and ``k`` only:
never from the model, so every model meets the same fault addresses (the comparison between
models is paired, as if each had been deployed on the same faulty device), and never from the
rate, so chips are nested across rates: chip ``k``'s faults at one rate include its faults at
every lower rate, and its accuracy curve is that of one device getting worse.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re

from edgefault.campaign.sites import WEIGHTS, memories, memory_label
from edgefault.errors import EdgefaultError
from edgefault.faults import Chip

MODES = ("clean", "grid", "layer", "bit")
BIT_POSITIONS = tuple(range(8))  # int8/uint8 weights store 8 bits; bit 7 is the sign of an int8 weight


CHIP_SEEDING = "per-chip"  # one seed per (kind, chip) for all rates; "per-rate" was the scheme before nesting


def chip_seed(seed: int, kind: str, chip: int) -> int:
    """The seed of chip ``chip`` of a kind in a campaign seeded ``seed``, for every rate; the model plays no part.

    A hash rather than ``seed + chip`` keeps the chips of different kinds unrelated.

    Example:
        >>> chip_seed(0, "flip", 0) == chip_seed(0, "flip", 0) != chip_seed(0, "flip", 1)
        True
    """
    text = f"edgefault-chip:{seed}:{kind}:{chip}"
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") >> 1


@dataclasses.dataclass(frozen=True)
class Cell:
    """One measurement of a campaign.

    ``model`` indexes the campaign's models; ``mode`` is ``clean`` (no faults), ``grid``
    (the chip over the whole memory), ``layer`` (only the tensor named ``target``)
    or ``bit`` (only bit position ``target`` of every weight). ``site`` is the memory the
    chip sits in (``weights`` or ``activations``); activation cells also name the storage
    format (``act_format``) and whether faults are drawn afresh for every image (``transient``).

    Example:
        >>> cell = Cell(model=0, mode="bit", kind="flip", rate=1e-3, chip=2, seed=11, target=7)
        >>> cell.to_chip().bits
        (7,)
        >>> cell.key("ab" * 32)
        'abababababababab/bit/7/flip/0x1.0624dd2f1a9fcp-10/2'
        >>> Cell(0, "grid", "flip", 1e-3, 2, 11, site="activations", act_format="bitmap").key("ab" * 32)
        'abababababababab/activations/bitmap/grid//flip/0x1.0624dd2f1a9fcp-10/2'
    """

    model: int
    mode: str
    kind: str | None = None
    rate: float | None = None
    chip: int | None = None
    seed: int | None = None
    target: str | int | None = None
    protect_bits: tuple[int, ...] = ()
    include_bias: bool = False
    site: str = WEIGHTS
    act_format: str | None = None
    transient: bool = False

    @property
    def memory(self) -> str:
        """The label of the memory this cell faults (see :func:`edgefault.campaign.sites.memory_label`).

        Example:
            >>> Cell(model=0, mode="grid", site="activations", act_format="rle", transient=True).memory
            'activations/rle/transient'
        """
        return memory_label(self.site, self.act_format, self.transient)

    def key(self, model_hash: str) -> str:
        """A stable identity across runs: model content, memory, mode, target, kind, exact rate, chip number.

        Weight cells keep the keys they had before activation cells existed, so older campaigns resume.

        Example:
            >>> Cell(model=0, mode="clean").key("0" * 64)
            '0000000000000000/clean'
        """
        if self.mode == "clean":
            return f"{model_hash[:16]}/clean"
        memory = "" if self.site == WEIGHTS else f"{self.memory}/"
        return f"{model_hash[:16]}/{memory}{self.mode}/{'' if self.target is None else self.target}/{self.kind}/" \
               f"{float(self.rate).hex()}/{self.chip}"

    def to_chip(self) -> Chip:
        """The chip this cell injects (clean cells have none).

        Example:
            >>> Cell(model=0, mode="layer", kind="sa1", rate=0.01, chip=0, seed=5, target="fc.w").to_chip().layers
            '^fc\\\\.w$'
        """
        if self.mode == "clean":
            raise ValueError("a clean cell has no chip")
        common = {"rate": self.rate, "seed": self.seed, "protect_bits": self.protect_bits,
                  "include_bias": self.include_bias}
        if self.mode == "layer":
            return Chip(self.kind, layers=f"^{re.escape(str(self.target))}$", **common)
        if self.mode == "bit":
            return Chip(self.kind, bits=(int(self.target),), **common)
        return Chip(self.kind, **common)


def plan_cells(config, tensors: list[tuple[str, ...]], bit_widths: list[int] | None = None,
               act_tensors: list[tuple[str, ...]] | None = None) -> list[Cell]:
    """Every cell of a campaign in run order: clean cells, the grid, then per-layer and per-bit cells.

    ``tensors[m]`` lists model ``m``'s weight tensors (the per-layer targets); ``bit_widths[m]``
    is the widest stored weight code of model ``m`` (the per-bit targets are its bits 0..w-1;
    8 when not given), so a 4-bit model gets no cells for bits its device does not have.
    ``act_tensors[m]`` lists its activation tensors (the per-layer targets of activation cells;
    per-bit cells are weight cells only). Each block runs memory by memory (weights, then each
    activation format), and within a memory chips vary fastest, so an interrupted campaign has
    whole (kind, rate) groups done early. Every memory uses the same chip seeds.

    Example:
        >>> from edgefault.campaign.config import CampaignConfig
        >>> config = CampaignConfig(models=("a.onnx",), model_hashes=("0" * 64,), kinds=("flip",), rates=(0.01,), chips=3)
        >>> [c.mode for c in plan_cells(config, [("w",)])]
        ['clean', 'grid', 'grid', 'grid']
    """
    if config.chip_seeding != CHIP_SEEDING:
        raise EdgefaultError(f"campaign uses chip seeding {config.chip_seeding!r}; only {CHIP_SEEDING!r} can run")
    seeds = {(kind, k): chip_seed(config.seed, kind, k) for kind in config.kinds for k in range(config.chips)}
    cells = [Cell(model=m, mode="clean") for m in range(len(config.models))]

    sites = memories(config)

    def block(mode: str, targets_of, only_weights: bool = False) -> None:
        for site, act_format, transient in sites:
            if only_weights and site != WEIGHTS:
                continue
            bias = config.include_bias and site == WEIGHTS
            for m in range(len(config.models)):
                for target in targets_of(m, site):
                    for kind in config.kinds:
                        for rate in config.rates:
                            for k in range(config.chips):
                                cells.append(Cell(m, mode, kind, rate, k, seeds[kind, k], target, config.protect_bits,
                                                  bias, site, act_format, transient))

    block("grid", lambda m, site: (None,))
    if config.per_layer:
        block("layer", lambda m, site: tensors[m] if site == WEIGHTS else act_tensors[m])
    if config.per_bit:
        block("bit", lambda m, site: BIT_POSITIONS if bit_widths is None else tuple(range(bit_widths[m])), True)
    return cells
