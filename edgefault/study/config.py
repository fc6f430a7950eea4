"""The study's settings: which models to train, how, and the fault sweep they face."""

from __future__ import annotations

import dataclasses
import math

from edgefault import __version__
from edgefault.errors import EdgefaultError
from edgefault.models import available_models
from edgefault.numbers import check_rates, check_whole
from edgefault.stages import MAX_SEEDS, SweepSettings

# The activation-sparse recipe: FATReLU threshold and L1 weight chosen on mnist5k (lenet5: ~79%
# exact zeros at about the standard model's accuracy; see the README's foundation numbers).
SPARSE_FAT_THRESHOLD = 0.5
SPARSE_ACT_L1 = 0.01


@dataclasses.dataclass(frozen=True)
class Variant:
    """One trained model of the study: activation-sparse or not, and its sharpness-aware method.

    ``fat_threshold``, ``act_l1`` and ``rho`` override the study's recipe (the sweeps set them).

    Example:
        >>> Variant("sparse_saq", sparse=True, sharpness="saq").label
        'activation-sparse, SAQ'
    """

    name: str
    sparse: bool
    sharpness: str
    fat_threshold: float | None = None
    rho: float | None = None
    act_l1: float | None = None

    @property
    def label(self) -> str:
        method = {"none": "conventional", "saq": "SAQ", "sam": "SAM"}[self.sharpness]
        if self.rho is not None:
            method += f" rho={self.rho:g}"
        kind = "activation-sparse" if self.sparse else "standard"
        if self.fat_threshold is not None:
            kind = f"FATReLU T={self.fat_threshold:g}" if self.sparse else "plain ReLU"
        if self.act_l1 is not None:
            kind += f" L1={self.act_l1:g}"
        return f"{kind}, {method}"


CORE_VARIANTS = (
    Variant("standard", False, "none"),
    Variant("sparse", True, "none"),
    Variant("standard_saq", False, "saq"),
    Variant("sparse_saq", True, "saq"),
)
SAM_VARIANTS = (Variant("standard_sam", False, "sam"), Variant("sparse_sam", True, "sam"))

# LeNet-5 at int8 keeps ~92% accuracy at a bit error rate of 1e-2 (its clipped activations bound the damage),
# so the sweep reaches up to 5e-2 / 1e-1, where the models part ways.
# seeds: training seeds per recipe. Claims about recipes need several; make demo's 6 minutes on 2 cores hold
# one (each further lenet5 seed costs ~4 minutes there), so the quick profile's verdicts are about its
# trained models, and its report names the --seeds command that makes them recipe verdicts (docs/study.md).
# The activation-memory campaign (flip, permanent, dense and bitmap): LeNet-5's activation memory holds ~20k
# bits per image, so 1e-3 already costs ~14 points (bitmap ~28); its rates sit a decade below the weights'.
# cost_limit / attack_limit: test images for the cost model and for the attack's ORT accuracy (0: all);
# attack_batches: attack batches per model (flips to chance + 1 point, median and range). The quick profile's one
# batch: its four LeNet-5s break in 12-26 flips (71 search iterations against 356 for two batches with the old
# 11% target), a fifth of the stage's time: ~7 s of the ~35 s it took (docs/attack.md, "The study's budget").
EXTRA_QUICK = {"act_rates": (1e-4, 1e-3), "act_chips": 6, "cost_limit": 500, "attack_flips": 60,
               "attack_batches": 1, "attack_limit": 500}
# Full: 5 training seeds (the fewest whose t quantile, 2.78, decides the larger effects), each about 9 minutes on
# 2 cores (the quick profile's stage times scaled): 20 epochs (LeNet-5 on mnist5k stops improving by then), 30 chips
# per (kind, rate), smaller Hessian estimates than a one-model study would use (their spread is reported), 10
# activation chips, and an attack budget that breaks the standard model (up to 100 flips; one attack batch per
# model, the spread coming from the seeds: three batches cost ~3 minutes per model on 2 cores).
EXTRA_FULL = {"act_rates": (1e-4, 5e-4, 1e-3), "act_chips": 10, "cost_limit": 0, "attack_flips": 100,
              "attack_batches": 1, "attack_limit": 500}
QUICK = {"epochs": 15, "rates": (5e-3, 1e-2, 2e-2, 5e-2), "chips": 20, "sharpness_samples": 500,
         "sharpness_probes": 15, "landscape_grid": 11, "seeds": 1, **EXTRA_QUICK}
FULL = {"epochs": 20, "rates": (1e-3, 5e-3, 1e-2, 2e-2, 5e-2, 1e-1), "chips": 30, "sharpness_samples": 1000,
        "sharpness_probes": 20, "landscape_grid": 13, "seeds": 5, **EXTRA_FULL}
ACT_FORMATS = ("dense", "bitmap")
# Per architecture, what differs from the profile, so every architecture's stage takes minutes on 2 cores:
# resnet20 reaches ~97% on mnist5k in 2 epochs (26 s each) but costs ~100x LeNet-5 per image, so its quick
# campaign, Hessian estimates, activation campaign and attack (~5 s per search iteration) are smaller;
# vit_tiny needs ~15 epochs (4 s each) for 95%.
MODEL_PROFILES = {
    "quick": {"resnet20": {"epochs": 2, "chips": 10, "rates": (5e-3, 1e-2, 2e-2), "sharpness_samples": 200,
                           "sharpness_probes": 6, "landscape_grid": 7, "act_rates": (1e-3,), "act_chips": 3,
                           "attack_flips": 15, "attack_batches": 1, "attack_limit": 200, "cost_limit": 200},
              "vgg_small": {"epochs": 2, "chips": 10, "rates": (5e-3, 1e-2, 2e-2), "sharpness_samples": 200,
                            "sharpness_probes": 6, "landscape_grid": 7, "act_rates": (1e-3,), "act_chips": 3,
                            "attack_flips": 15, "attack_batches": 1, "attack_limit": 200, "cost_limit": 200},
              "vit_tiny": {"epochs": 15}},
    "full": {"resnet20": {"epochs": 8}, "vgg_small": {"epochs": 8}, "vit_tiny": {"epochs": 30}},
}
# The sweeps: FATReLU thresholds from plain ReLU (the standard model) up to >= 90% exact zeros, each
# with the sparse recipe's L1 penalty; SAQ radii around the default 0.05.
SWEEPS = ("sparsity", "rho")
# lenet5 on mnist5k (15 epochs): T = 1 gives 83% zeros, T = 2 collapses to chance (99.9% zeros), so the steps
# between them are fine.
THRESHOLDS = {"quick": (0.0, 0.5, 1.0, 1.25, 1.5, 1.75, 2.0),
              "full": (0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0)}
# Past ~86% zeros a higher threshold only collapses lenet5 (T >= 1.5 with L1 0.01, and T >= 1.25 with L1
# 0.03 or 0.05, end at chance); a stronger L1 penalty at a moderate threshold is what reaches >= 90% with
# a working model (15 epochs: T = 0.5 / L1 0.1 -> 89.0% zeros at 97.7%; T = 0.75 / L1 0.1 -> 92.5% at 97.6%).
# The sparsity sweep adds these thresholds with STRONG_ACT_L1.
STRONG_ACT_L1 = 0.1
STRONG_THRESHOLDS = {"quick": (0.5, 0.75), "full": (0.25, 0.5, 0.75)}
RADII = {"quick": (0.01, 0.05, 0.2, 0.5), "full": (0.01, 0.02, 0.05, 0.1, 0.2, 0.5)}


@dataclasses.dataclass(frozen=True)
class StudyConfig(SweepSettings):
    """Settings of ``edgefault reproduce``; saved as ``DIR/study.json`` and checked on every rerun.

    ``epochs``, ``rates``, ``chips`` and ``seeds`` default to the quick or the full profile. ``seeds``
    models per recipe are trained, with training seeds ``seed``, ``seed + 1``, ...; every model meets
    the same chips (drawn from ``seed``). The first training seed's models live in the folder itself,
    the others' in ``seeds/<training seed>/``, so a rerun with more seeds trains only the new ones.

    Example:
        >>> StudyConfig(quick=True).chips
        20
        >>> StudyConfig(quick=True, seed=3, seeds=2).training_seeds
        (3, 4)
    """

    data: str = "mnist5k"
    model: str = "lenet5"
    quick: bool = False
    with_sam: bool = False
    seed: int = 0
    seeds: int | None = None
    rho: float = 0.05
    sharpness_samples: int | None = None
    sharpness_probes: int | None = None
    landscape_grid: int | None = None
    sweeps: tuple[str, ...] = ()
    thresholds: tuple[float, ...] | None = None
    strong_thresholds: tuple[float, ...] | None = None
    radii: tuple[float, ...] | None = None
    act_rates: tuple[float, ...] | None = None
    act_chips: int | None = None
    version: str = __version__

    def __post_init__(self) -> None:
        if self.model not in available_models():
            raise EdgefaultError(f"unknown architecture {self.model!r} for reproduce; available: "
                                 f"{', '.join(available_models())}")
        level = "quick" if self.quick else "full"
        profile = {**(QUICK if self.quick else FULL), **MODEL_PROFILES[level].get(self.model, {}),
                   "thresholds": THRESHOLDS[level], "strong_thresholds": STRONG_THRESHOLDS[level],
                   "radii": RADII[level]}
        for name in ("epochs", "rates", "chips", "sharpness_samples", "sharpness_probes", "landscape_grid",
                     "thresholds", "strong_thresholds", "radii", "seeds", "act_rates", "act_chips", "cost_limit",
                     "attack_flips", "attack_batches", "attack_limit"):
            if getattr(self, name) is None:
                object.__setattr__(self, name, profile[name])
        unknown = sorted(set(self.sweeps) - set(SWEEPS))
        if unknown:
            raise EdgefaultError(f"unknown sweep {', '.join(map(repr, unknown))}; available: {', '.join(SWEEPS)}")
        object.__setattr__(self, "sweeps", tuple(dict.fromkeys(self.sweeps)))
        for name in ("thresholds", "radii"):
            values = tuple(float(v) for v in getattr(self, name))
            object.__setattr__(self, name, values)
            if len(values) < 2 or any(not math.isfinite(v) or v < 0 for v in values) or len(set(values)) < len(values):
                raise EdgefaultError(f"{name} must be at least two distinct finite numbers >= 0, got {values}")
        strong = tuple(float(v) for v in self.strong_thresholds)
        object.__setattr__(self, "strong_thresholds", strong)
        if any(not math.isfinite(v) or v <= 0 for v in strong) or len(set(strong)) < len(strong):
            raise EdgefaultError(f"strong_thresholds must be distinct finite numbers > 0, got {strong}")
        if 0.0 not in self.thresholds:
            raise EdgefaultError("the sparsity sweep's thresholds must include 0 (plain ReLU, its baseline)")
        if 0.0 in self.radii:
            raise EdgefaultError("the rho sweep's radii must be > 0 (its baseline is conventional training)")
        object.__setattr__(self, "rates", check_rates(self.rates, "rates", zero=True))
        object.__setattr__(self, "act_rates", check_rates(self.act_rates, "act_rates"))
        self.check_sweep()
        for name, low, high in (("seeds", 1, MAX_SEEDS), ("act_chips", 2, 10_000)):
            check_whole(getattr(self, name), name, low, high)

    @property
    def training_seeds(self) -> tuple[int, ...]:
        """The training seeds of each recipe's models, the first being ``seed`` (the one-seed study's)."""
        return tuple(self.seed + i for i in range(self.seeds))

    @property
    def variants(self) -> tuple[Variant, ...]:
        return CORE_VARIANTS + (SAM_VARIANTS if self.with_sam else ())

    def to_dict(self) -> dict:
        """The settings that determine the main study (the sweeps are checked in their own folders; each training
        seed's models are reused whatever the number of seeds, so ``seeds`` is not among them)."""
        values = dataclasses.asdict(self)
        for name in ("sweeps", "thresholds", "strong_thresholds", "radii", "seeds"):
            values.pop(name)
        return values
