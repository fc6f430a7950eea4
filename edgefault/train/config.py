"""The training recipe: one frozen dataclass, validated, saved beside every run as config.json."""

from __future__ import annotations

import dataclasses
import math

from edgefault.errors import EdgefaultError
from edgefault.models.quant import check_bits

SHARPNESS_METHODS = ("none", "sam", "asam", "saq")
# Perturbation radii that work on the built-in data; ASAM's radius is relative to |w|, hence larger.
DEFAULT_RHO = {"none": 0.0, "sam": 0.05, "asam": 0.5, "saq": 0.05}
OPTIMIZERS = ("adam", "sgd")
# RandBET's curriculum and learned clipping's decay: values that work on the built-in data (README, "Which mitigation?").
DEFAULT_RANDBET_LOSS_THRESHOLD = 0.5
DEFAULT_LEARNED_CLIP_DECAY = 1.0


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a training run (with ``seed``, it reproduces the run on CPU).

    ``rho=None`` takes the method's default radius. ``fat_threshold`` is the FATReLU threshold T
    (0 = plain ReLU); ``act_l1`` weights the L1 penalty on post-activation outputs.
    Mitigations: ``weight_clip`` > 0 keeps every deployed weight within [-w, w] (relative to each
    layer's initial range with ``weight_clip_per_layer``; :mod:`edgefault.train.clipping`);
    ``randbet_rate`` > 0 trains with random bit errors (``randbet_clamp``, ``randbet_loss_threshold``;
    :mod:`edgefault.train.randbet`); ``learned_clip`` learns per-layer ranges with
    ``learned_clip_decay`` (:mod:`edgefault.train.learned_clip`).

    Example:
        >>> TrainConfig(model="lenet5", sharpness="saq").rho
        0.05
    """

    model: str = "lenet5"
    data: str = "mnist5k"
    epochs: int = 30
    batch_size: int = 64
    optimizer: str = "adam"
    lr: float = 2e-3
    weight_decay: float = 0.0
    wbits: int = 8
    abits: int = 8
    fat_threshold: float = 0.0
    act_l1: float = 0.0
    sharpness: str = "none"
    rho: float | None = None
    asam_eta: float = 0.01
    augment: bool = True
    seed: int = 0
    device: str = "auto"
    weight_clip: float = 0.0
    weight_clip_per_layer: bool = False
    randbet_rate: float = 0.0
    randbet_clamp: float = 0.05
    randbet_loss_threshold: float = DEFAULT_RANDBET_LOSS_THRESHOLD
    learned_clip: bool = False
    learned_clip_decay: float = DEFAULT_LEARNED_CLIP_DECAY

    def __post_init__(self) -> None:
        check_bits("wbits", self.wbits)
        check_bits("abits", self.abits)
        if self.sharpness not in SHARPNESS_METHODS:
            raise EdgefaultError(f"sharpness must be one of {', '.join(SHARPNESS_METHODS)}, got {self.sharpness!r}")
        if self.optimizer not in OPTIMIZERS:
            raise EdgefaultError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}")
        if self.rho is None:
            object.__setattr__(self, "rho", DEFAULT_RHO[self.sharpness])
        for name in ("lr", "weight_decay", "fat_threshold", "act_l1", "rho", "asam_eta", "weight_clip",
                     "randbet_rate", "randbet_clamp", "randbet_loss_threshold", "learned_clip_decay"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise EdgefaultError(f"{name} must be a finite number >= 0, got {value!r}")
        if self.lr == 0:
            raise EdgefaultError("lr must be > 0")
        self._check_mitigations()
        if self.sharpness != "none" and self.rho == 0:
            raise EdgefaultError(f"`sharpness` {self.sharpness} needs `rho` > 0")
        for name in ("epochs", "batch_size"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise EdgefaultError(f"{name} must be a positive integer, got {getattr(self, name)!r}")
        if self.device not in ("auto", "cpu", "cuda") and not self.device.startswith("cuda:"):
            raise EdgefaultError(f"device must be auto, cpu or cuda[:N], got {self.device!r}")

    def _check_mitigations(self) -> None:
        if self.randbet_rate > 1:
            raise EdgefaultError(f"randbet_rate is a bit error rate in [0, 1], got {self.randbet_rate}")
        if self.randbet_rate > 0 and self.randbet_clamp == 0:
            raise EdgefaultError("randbet_clamp must be > 0")
        if self.weight_clip_per_layer and not 0 < self.weight_clip <= 1:
            raise EdgefaultError("`weight_clip_per_layer` takes `weight_clip` as a share of each layer's initial "
                                 f"range in (0, 1], got {self.weight_clip}")
        if self.learned_clip and self.weight_clip > 0:
            raise EdgefaultError("`learned_clip` learns the ranges that `weight_clip` fixes; choose one")

    def model_settings(self) -> dict[str, object]:
        """The quantization settings this recipe passes to ``create_model``."""
        return {"wbits": self.wbits, "abits": self.abits, "fat_threshold": self.fat_threshold}
