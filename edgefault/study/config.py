"""The study's settings: which models to train, how, and the fault sweep they face."""

from __future__ import annotations

import dataclasses

from edgefault import __version__
from edgefault.errors import EdgefaultError
from edgefault.models import available_models

# The activation-sparse recipe: FATReLU threshold and L1 weight chosen on mnist5k (lenet5: ~79%
# exact zeros at about the standard model's accuracy; see the README's foundation numbers).
SPARSE_FAT_THRESHOLD = 0.5
SPARSE_ACT_L1 = 0.01


@dataclasses.dataclass(frozen=True)
class Variant:
    """One trained model of the study: activation-sparse or not, and its sharpness-aware method.

    Example:
        >>> Variant("sparse_saq", sparse=True, sharpness="saq").label
        'activation-sparse, SAQ'
    """

    name: str
    sparse: bool
    sharpness: str

    @property
    def label(self) -> str:
        method = {"none": "conventional", "saq": "SAQ", "sam": "SAM"}[self.sharpness]
        return f"{'activation-sparse' if self.sparse else 'standard'}, {method}"


CORE_VARIANTS = (
    Variant("standard", False, "none"),
    Variant("sparse", True, "none"),
    Variant("standard_saq", False, "saq"),
    Variant("sparse_saq", True, "saq"),
)
SAM_VARIANTS = (Variant("standard_sam", False, "sam"), Variant("sparse_sam", True, "sam"))

# LeNet-5 at int8 keeps ~92% accuracy at a bit error rate of 1e-2 (its clipped activations bound the damage),
# so the sweep reaches up to 5e-2 / 1e-1, where the models part ways.
QUICK = {"epochs": 15, "rates": (5e-3, 1e-2, 2e-2, 5e-2), "chips": 20, "sharpness_samples": 500,
         "sharpness_probes": 15, "landscape_grid": 11}
FULL = {"epochs": 30, "rates": (1e-3, 5e-3, 1e-2, 2e-2, 5e-2, 1e-1), "chips": 50, "sharpness_samples": 2000,
        "sharpness_probes": 30, "landscape_grid": 15}


@dataclasses.dataclass(frozen=True)
class StudyConfig:
    """Settings of ``edgefault reproduce``; saved as ``DIR/study.json`` and checked on every rerun.

    ``epochs``, ``rates`` and ``chips`` default to the quick or the full profile.

    Example:
        >>> StudyConfig(quick=True).chips
        20
    """

    data: str = "mnist5k"
    model: str = "lenet5"
    quick: bool = False
    with_sam: bool = False
    seed: int = 0
    epochs: int | None = None
    kinds: tuple[str, ...] = ("flip", "sa0", "sa1")
    rates: tuple[float, ...] | None = None
    chips: int | None = None
    rho: float = 0.05
    sharpness_samples: int | None = None
    sharpness_probes: int | None = None
    landscape_grid: int | None = None
    version: str = __version__

    def __post_init__(self) -> None:
        if self.model not in available_models():
            raise EdgefaultError(f"unknown architecture {self.model!r} for reproduce; available: "
                                 f"{', '.join(available_models())}")
        profile = QUICK if self.quick else FULL
        for name in ("epochs", "rates", "chips", "sharpness_samples", "sharpness_probes", "landscape_grid"):
            if getattr(self, name) is None:
                object.__setattr__(self, name, profile[name])
        object.__setattr__(self, "rates", tuple(float(r) for r in self.rates))
        object.__setattr__(self, "kinds", tuple(self.kinds))
        if not self.rates or any(not 0 <= r <= 1 for r in self.rates):
            raise EdgefaultError(f"rates must be a non-empty list in [0, 1], got {self.rates}")
        if self.chips < 2:
            raise EdgefaultError(f"chips must be >= 2 for confidence intervals, got {self.chips}")
        if self.epochs < 1:
            raise EdgefaultError(f"epochs must be >= 1, got {self.epochs}")

    @property
    def variants(self) -> tuple[Variant, ...]:
        return CORE_VARIANTS + (SAM_VARIANTS if self.with_sam else ())

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)
