"""The settings of ``edgefault mitigate``: which mitigations, how long they train, the fault sweep they face.

A method is a training recipe (overrides of :class:`~edgefault.train.TrainConfig`), except
``ecc``, which is the conventional model's campaign with protected bits (storage-side).
"""

from __future__ import annotations

import dataclasses

from edgefault import __version__
from edgefault.attack import AttackSettings
from edgefault.errors import EdgefaultError
from edgefault.models import available_models
from edgefault.numbers import check_rates, check_whole
from edgefault.stages import MAX_SEEDS, SweepSettings
from edgefault.train import TrainConfig

# Bounds and rates chosen on mnist5k (README, "Which mitigation?"): clipping at 0.1 keeps LeNet-5
# within ~1 point of its clean accuracy; RandBET trains at a 1% bit error rate, Stutz et al.'s choice.
WEIGHT_CLIP = 0.1
RANDBET_RATE = 0.01
ECC_BITS = (7,)  # the sign bit of an int8 weight: the costliest bit to lose

METHODS: dict[str, dict[str, object]] = {
    "qat": {},
    "sam": {"sharpness": "sam"},
    "saq": {"sharpness": "saq"},
    "clip": {"weight_clip": WEIGHT_CLIP},
    "randbet": {"randbet_rate": RANDBET_RATE},
    "randbet_clip": {"randbet_rate": RANDBET_RATE, "weight_clip": WEIGHT_CLIP},
    "saq_clip": {"sharpness": "saq", "weight_clip": WEIGHT_CLIP},
    "learned_clip": {"learned_clip": True},
    "ecc": {},  # not trained: the qat model, evaluated with ECC on ECC_BITS
}
LABELS = {
    "qat": "conventional QAT", "sam": "SAM", "saq": "SAQ", "clip": f"weight clipping ({WEIGHT_CLIP})",
    "randbet": f"RandBET (p={RANDBET_RATE})", "randbet_clip": "RandBET + clipping", "saq_clip": "SAQ + clipping",
    "learned_clip": "learned clipping (WCAT)", "ecc": "conventional + ECC on the sign bit",
}
BASELINE = "qat"

# cost_limit / attack_limit: test images for the cost model and the attack's ORT accuracy (0: all); attack_batches
# attack batches per method, up to attack_flips flips each (flips to chance + 1 point).
QUICK = {"epochs": 15, "rates": (1e-3, 5e-3, 1e-2, 2e-2, 5e-2, 1e-1, 2e-1), "chips": 10, "cost_limit": 500,
         "attack_flips": 60, "attack_batches": 2, "attack_limit": 500}
FULL = {"epochs": 30, "rates": (1e-4, 1e-3, 3e-3, 1e-2, 2e-2, 5e-2, 1e-1, 2e-1), "chips": 30, "cost_limit": 0,
        "attack_flips": 100, "attack_batches": 3, "attack_limit": 0}


@dataclasses.dataclass(frozen=True)
class MitigateConfig(SweepSettings):
    """Settings of ``edgefault mitigate``; saved as ``DIR/mitigate.json`` and checked on every rerun.

    ``epochs``, ``rates`` and ``chips`` default to the quick or the full profile. ``ecc`` needs
    ``qat`` (the model it protects); ``qat`` is always trained, as the baseline of training times.
    ``seeds`` models per method (training seeds ``seed``, ``seed + 1``, ...) meet the same chips, and
    the leaderboard pools over them; it is not among the saved settings, so more seeds reuse the folder.

    Example:
        >>> MitigateConfig(quick=True, methods=("qat", "clip")).chips
        10
        >>> MitigateConfig(methods=("qat", "magic"))
        Traceback (most recent call last):
        ...
        edgefault.errors.EdgefaultError: unknown mitigation 'magic'; choose from qat, sam, saq, clip, randbet, randbet_clip, saq_clip, learned_clip, ecc
    """

    data: str = "mnist5k"
    model: str = "lenet5"
    methods: tuple[str, ...] = tuple(METHODS)
    quick: bool = False
    seed: int = 0
    seeds: int = 1
    version: str = __version__

    def __post_init__(self) -> None:
        if self.model not in available_models():
            raise EdgefaultError(f"unknown architecture {self.model!r}; available: {', '.join(available_models())}")
        methods = tuple(self.methods)
        for name in methods:
            if name not in METHODS:
                raise EdgefaultError(f"unknown mitigation {name!r}; choose from {', '.join(METHODS)}")
        if not methods or len(set(methods)) != len(methods):
            raise EdgefaultError(f"`methods` must list distinct mitigations, got {', '.join(methods) or 'none'}")
        object.__setattr__(self, "methods", methods)
        profile = QUICK if self.quick else FULL
        for name in ("epochs", "rates", "chips", "cost_limit", "attack_flips", "attack_batches", "attack_limit"):
            if getattr(self, name) is None:
                object.__setattr__(self, name, profile[name])
        object.__setattr__(self, "rates", tuple(sorted(check_rates(self.rates, "rates"))))
        self.check_sweep()
        check_whole(self.seeds, "seeds", 1, MAX_SEEDS)

    @property
    def training_seeds(self) -> tuple[int, ...]:
        """The training seeds of each method's models, the first being ``seed``.

        Example:
            >>> MitigateConfig(seeds=3).training_seeds
            (0, 1, 2)
        """
        return tuple(self.seed + i for i in range(self.seeds))

    @property
    def trained(self) -> tuple[str, ...]:
        """The methods that train a model (``ecc`` reuses ``qat``), baseline first.

        Example:
            >>> MitigateConfig(methods=("clip", "ecc")).trained
            ('qat', 'clip')
        """
        # Always QAT: ECC protects it, and every method's training time is relative to it.
        return (BASELINE,) + tuple(m for m in self.methods if m not in ("ecc", BASELINE))

    @property
    def reported(self) -> tuple[str, ...]:
        """The leaderboard's rows: every trained method, then ``ecc`` if asked for."""
        return self.trained + (("ecc",) if "ecc" in self.methods else ())

    def recipe(self, method: str, seed: int | None = None) -> TrainConfig:
        """The training recipe of one method (training seed ``seed``, default the study's ``seed``).

        Example:
            >>> MitigateConfig(quick=True).recipe("randbet_clip").weight_clip
            0.1
        """
        return TrainConfig(model=self.model, data=self.data, epochs=self.epochs,
                           seed=self.seed if seed is None else seed, **METHODS[method])

    def attack_settings(self) -> AttackSettings:
        """The attack's settings on the leaderboard: the profile's flips and test images, no random contrast.

        Example:
            >>> MitigateConfig(quick=True).attack_settings().flips
            60
        """
        return AttackSettings(flips=self.attack_flips, seed=self.seed, chips=0, limit=self.attack_limit or None)

    def to_dict(self) -> dict:
        """The saved settings (``seeds`` left out: each seed's models are reused whatever their number)."""
        values = dataclasses.asdict(self)
        values.pop("seeds")
        return values
