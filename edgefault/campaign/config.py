"""The settings of a campaign: one frozen, validated dataclass, saved as ``DIR/campaign.json``.

Only what decides the results belongs here (models by content hash, data, kinds, rates,
chips, seed, modes, preprocessing); how the cells run (workers, Ray) does not, so a campaign
may be resumed with a different engine and still extends the same results.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import numbers
from pathlib import Path
from typing import Any

from edgefault import __version__
from edgefault.errors import EdgefaultError
from edgefault.campaign.cells import CHIP_SEEDING
from edgefault.campaign.sites import check_names, check_sites, split_list
from edgefault.cost.accelerator import Accelerator, accelerator_from_dict
from edgefault.faults import KINDS, Chip
from edgefault.runtime.inputs import InputOptions

DEFAULT_KINDS = ("flip", "sa0", "sa1")
DEFAULT_RATES = (1e-4, 1e-3, 5e-3, 1e-2)
DEFAULT_CHIPS = 20
FORMAT = "edgefault-campaign"
# Fields that decide the results; a rerun into the same folder must match them all.
IDENTITY_FIELDS = (
    "model_hashes", "data", "kinds", "rates", "chips", "seed", "per_layer", "per_bit", "limit",
    "input_size", "mean", "std", "version", "protect_bits", "layout", "scale", "normalize",
    "stored_bits", "include_bias", "chip_seeding", "sites", "act_formats", "transient", "accelerator",
)


@dataclasses.dataclass(frozen=True)
class CampaignConfig:
    """What a campaign measures: models x kinds x rates x chips (+ per-layer and per-bit modes).

    ``models`` are ONNX paths and ``model_hashes`` their SHA-256 (``create`` computes them);
    ``limit`` scores only the first N test images; ``input_size``/``mean``/``std`` are the
    preprocessing flags for models without edgefault metadata, with ``layout``, ``scale`` and
    ``normalize`` (``--layout``, ``--scale``, ``--no-normalize``; see
    :class:`edgefault.runtime.InputOptions`). ``protect_bits`` drops every fault on
    those bit positions, as ECC on them would (:func:`edgefault.faults.ecc.ecc_overhead` states the cost).

    Example:
        >>> config = CampaignConfig(models=("a.onnx",), model_hashes=("0" * 64,), rates=(1e-3,), chips=2)
        >>> config.kinds, config.cells_per_model
        (('flip', 'sa0', 'sa1'), 6)
        >>> CampaignConfig(models=("a.onnx",), model_hashes=("0" * 64,), rates=(2.0,))
        Traceback (most recent call last):
        ...
        edgefault.errors.EdgefaultError: rate must lie in [0, 1], got 2.0
    """

    models: tuple[str, ...]
    model_hashes: tuple[str, ...]
    data: str = "mnist5k"
    kinds: tuple[str, ...] = DEFAULT_KINDS
    rates: tuple[float, ...] = DEFAULT_RATES
    chips: int = DEFAULT_CHIPS
    seed: int = 0
    per_layer: bool = False
    per_bit: bool = False
    limit: int | None = None
    input_size: str | None = None
    mean: str | None = None
    std: str | None = None
    version: str = __version__
    protect_bits: tuple[int, ...] = ()
    layout: str | None = None
    scale: str | None = None
    normalize: bool = True
    target_ci: float | None = None  # add chips until every 95% interval is within +/- this (chips: the maximum)
    stored_bits: int | None = None  # --stored-bits: k-bit codes in int8/uint8 weights of foreign models
    include_bias: bool = False  # --include-bias: int32 biases join the weight memory
    chip_seeding: str = CHIP_SEEDING  # "per-rate" only in campaign.json files made before chips were nested
    sites: tuple[str, ...] = ("weights",)  # --sites: the memories faulted (weights, activations)
    act_formats: tuple[str, ...] = ("dense",)  # --act-format: how activation buffers store a tensor
    transient: bool = False  # --transient: activation faults drawn afresh for every image
    accelerator: dict[str, Any] | None = None  # --cost: the accelerator's entries (None: cells record no cost)

    def __post_init__(self) -> None:
        set_field = object.__setattr__
        set_field(self, "protect_bits", Chip("flip", rate=0.0, protect_bits=self.protect_bits).protect_bits)
        set_field(self, "models", tuple(str(m) for m in _sequence("models", self.models)))
        set_field(self, "model_hashes", tuple(_sequence("model_hashes", self.model_hashes)))
        if not self.models:
            raise EdgefaultError("no models: give at least one MODEL.onnx")
        if len(self.model_hashes) != len(self.models):
            raise EdgefaultError(f"{len(self.models)} models but {len(self.model_hashes)} model hashes")
        if not all(isinstance(h, str) and len(h) == 64 for h in self.model_hashes):
            raise EdgefaultError("model_hashes must be SHA-256 hex digests")
        for index, digest in enumerate(self.model_hashes):
            if digest in self.model_hashes[:index]:
                twin = self.models[self.model_hashes.index(digest)]
                raise EdgefaultError(f"{self.models[index]} and {twin} are the same model (identical bytes)")
        set_field(self, "kinds", check_names("kinds", self.kinds, KINDS, "fault kind "))
        set_field(self, "rates", _rates(self.rates))
        if not _is_int(self.chips) or self.chips < 1:
            raise EdgefaultError(f"chips must be a positive integer, got {self.chips!r}")
        if not _is_int(self.seed) or self.seed < 0:
            raise EdgefaultError(f"seed must be a non-negative integer, got {self.seed!r}")
        if self.limit is not None and (not _is_int(self.limit) or self.limit < 1):
            raise EdgefaultError(f"limit must be a positive integer, got {self.limit!r}")
        width = self.target_ci
        if width is not None and (isinstance(width, bool) or not isinstance(width, numbers.Real) or not 0 < width < 1):
            raise EdgefaultError(f"target CI half-width must lie strictly between 0 and 1, got {self.target_ci!r}")
        for name in ("per_layer", "per_bit"):
            if not isinstance(getattr(self, name), bool):
                raise EdgefaultError(f"{name} must be true or false, got {getattr(self, name)!r}")
        if not isinstance(self.data, str) or not self.data:
            raise EdgefaultError("data must be a dataset SPEC such as mnist5k or npz:PATH")
        if not isinstance(self.normalize, bool):
            raise EdgefaultError(f"normalize must be true or false, got {self.normalize!r}")
        if self.stored_bits is not None and (not _is_int(self.stored_bits) or not 1 <= self.stored_bits <= 8):
            raise EdgefaultError(f"stored_bits must be an integer in 1..8, got {self.stored_bits!r}")
        if not isinstance(self.include_bias, bool):
            raise EdgefaultError(f"include_bias must be true or false, got {self.include_bias!r}")
        if self.chip_seeding not in (CHIP_SEEDING, "per-rate"):
            raise EdgefaultError(f"unknown chip_seeding {self.chip_seeding!r}")
        for name, value in zip(("sites", "act_formats", "transient"),
                               check_sites(self.sites, self.act_formats, self.transient)):
            set_field(self, name, value)
        if self.accelerator is not None:
            if not isinstance(self.accelerator, dict):
                raise EdgefaultError(f"accelerator must be a table of accelerator entries, got {self.accelerator!r}")
            entries = {k: v for k, v in self.accelerator.items() if k != "source"}
            set_field(self, "accelerator", accelerator_from_dict(entries, "campaign accelerator").to_dict())
            self.accelerator.pop("source")  # where the file was is not what decides the results
        set_field(self, "layout", self.input_options().layout)  # validated, and "NHWC" whatever the case given

    def cost_accelerator(self) -> Accelerator | None:
        """``--cost``'s accelerator (None when the campaign records no cost).

        Example:
            >>> from edgefault.cost import load_accelerator
            >>> config = CampaignConfig(models=("a",), model_hashes=("0" * 64,), accelerator=load_accelerator().to_dict())
            >>> config.cost_accelerator().lanes, "source" in config.accelerator
            (16, False)
        """
        if self.accelerator is None:
            return None
        return accelerator_from_dict(self.accelerator, "campaign accelerator")

    def input_options(self) -> InputOptions:
        """The preprocessing settings as the runtime takes them (validated there).

        Example:
            >>> CampaignConfig(models=("a",), model_hashes=("0" * 64,), layout="nhwc").input_options().layout
            'NHWC'
        """
        return InputOptions(self.input_size, self.mean, self.std, self.layout, self.scale, self.normalize)

    @classmethod
    def create(cls, models, **settings) -> CampaignConfig:
        """Build a config from model paths, hashing each file (missing files are one-line errors).

        Example:
            >>> config = CampaignConfig.create(["model.onnx"], chips=3)
            >>> config.models, len(config.model_hashes[0]), config.chips
            (('model.onnx',), 64, 3)
        """
        paths = tuple(str(m) for m in _sequence("models", models))
        if not paths:
            raise EdgefaultError("no models: give at least one MODEL.onnx")
        return cls(models=paths, model_hashes=tuple(file_hash(p) for p in paths), **settings)

    @property
    def cells_per_model(self) -> int:
        """Grid cells of one model (memories x kinds x rates x chips), without the clean and per-layer/per-bit cells.

        Each activation format is a memory of its own.

        Example:
            >>> CampaignConfig(models=("a",), model_hashes=("0" * 64,), chips=5).cells_per_model
            60
            >>> CampaignConfig(models=("a",), model_hashes=("0" * 64,), chips=5, sites=("weights", "activations"),
            ...                act_formats=("dense", "bitmap")).cells_per_model
            180
        """
        memories = ("weights" in self.sites) + ("activations" in self.sites) * len(self.act_formats)
        return memories * len(self.kinds) * len(self.rates) * self.chips

    def identity(self) -> dict[str, Any]:
        """The fields that decide the results, JSON-ready.

        Example:
            >>> sorted(CampaignConfig(models=("a.onnx",), model_hashes=("0" * 64,)).identity())[:3]
            ['accelerator', 'act_formats', 'chip_seeding']
        """
        values = self.to_dict()
        return {name: values[name] for name in IDENTITY_FIELDS}

    def check_same(self, saved: CampaignConfig, where: str) -> None:
        """Refuse to extend results made with other settings, naming every field that differs.

        Example:
            >>> a = CampaignConfig(models=("a.onnx",), model_hashes=("0" * 64,), chips=2)
            >>> a.check_same(dataclasses.replace(a, chips=3), "runs/c")
            Traceback (most recent call last):
            ...
            edgefault.errors.EdgefaultError: runs/c holds a campaign with other settings (chips: 3 there, 2 here); use another `out` or the same settings
        """
        if saved.chip_seeding != self.chip_seeding:
            raise EdgefaultError(
                f"{where} holds a campaign made with the old chip seeding (a new chip per rate, before chips were "
                "nested across rates); its results would mix two schemes, so it cannot be resumed: use another `out`"
            )
        mine, theirs = self.identity(), saved.identity()
        differences = [
            f"{name}: {_brief(theirs[name])} there, {_brief(mine[name])} here"
            for name in IDENTITY_FIELDS if mine[name] != theirs[name]
        ]
        if differences:
            raise EdgefaultError(
                f"{where} holds a campaign with other settings ({'; '.join(differences)}); "
                "use another `out` or the same settings"
            )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields (tuples become lists); :meth:`from_dict` reads them back.

        Example:
            >>> c = CampaignConfig(models=("a.onnx",), model_hashes=("0" * 64,))
            >>> CampaignConfig.from_dict(c.to_dict()) == c
            True
        """
        values = dataclasses.asdict(self)
        return {name: list(value) if isinstance(value, tuple) else value for name, value in values.items()}

    @classmethod
    def from_dict(cls, values: Any) -> CampaignConfig:
        """Rebuild a config from :meth:`to_dict` output, rejecting unknown or missing fields.

        Example:
            >>> CampaignConfig.from_dict({"models": ["a.onnx"], "model_hashes": ["0" * 64]}).chips
            20
        """
        if not isinstance(values, dict):
            raise EdgefaultError(f"a campaign config must be a JSON object, got {type(values).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise EdgefaultError(f"unknown campaign setting(s): {', '.join(unknown)}")
        # Files written before chips were nested across rates have no chip_seeding: they used one seed per rate.
        return cls(**{"chip_seeding": "per-rate", **values})


def file_hash(path: str | Path) -> str:
    """SHA-256 of a file's bytes, read in blocks; a missing file is a one-line error.

    Example:
        >>> len(file_hash(__file__))
        64
    """
    file = Path(path)
    if not file.is_file():
        raise EdgefaultError(f"{path}: no such file" if not file.exists() else f"{path}: not a file")
    digest = hashlib.sha256()
    with file.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def parse_kinds(text: str) -> tuple[str, ...]:
    """Parse a kind list such as ``flip,sa0`` into a tuple, checking each kind.

    Example:
        >>> parse_kinds("flip, sa1")
        ('flip', 'sa1')
    """
    return check_names("kinds", split_list(text), KINDS, "fault kind ")


def parse_rates(text: str) -> tuple[float, ...]:
    """Parse a rate list such as ``1e-4,1e-3`` into floats in [0, 1].

    Example:
        >>> parse_rates("1e-4, 0.01")
        (0.0001, 0.01)
    """
    values = []
    for part in (p.strip() for p in text.split(",") if text.strip()):
        if not part:
            raise EdgefaultError(f"rates has an empty entry in {text!r}; give numbers like 1e-4,1e-3")
        try:
            values.append(float(part))
        except ValueError:
            raise EdgefaultError(f"rates must be numbers like 1e-4,1e-3, got {part!r}") from None
    return _rates(tuple(values))


def _rates(values: Any) -> tuple[float, ...]:
    rates = tuple(_sequence("rates", values))
    if not rates:
        raise EdgefaultError("the rate list is empty; give rates such as 1e-4,1e-3")
    for rate in rates:
        if isinstance(rate, bool) or not isinstance(rate, numbers.Real):
            raise EdgefaultError(f"rate must be a number, got {rate!r}")
        if not (math.isfinite(rate) and 0.0 <= rate <= 1.0):
            raise EdgefaultError(f"rate must lie in [0, 1], got {rate}")
    rates = tuple(float(r) for r in rates)
    if len(set(rates)) != len(rates):
        raise EdgefaultError(f"a rate is listed twice in {', '.join(map(str, rates))}")
    return rates


def _sequence(name: str, values: Any) -> tuple:
    if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
        raise EdgefaultError(f"{name} must be a list, got {values!r}")
    return tuple(values)


def _brief(value: Any) -> str:
    if isinstance(value, list) and value and all(isinstance(v, str) and len(v) == 64 for v in value):
        return "[" + ", ".join(v[:12] for v in value) + "]"  # model hashes: a prefix tells them apart
    return str(value)


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)
