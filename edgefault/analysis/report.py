"""The sharpness analysis's settings and results, and their JSON form (metrics.json)."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from edgefault import __version__
from edgefault.analysis.curvature import PowerIteration, SamSharpness, TraceEstimate
from edgefault.analysis.objective import WEIGHT_SPACES
from edgefault.errors import EdgefaultError

REPORT_FORMAT = "edgefault-sharpness-1"


@dataclasses.dataclass(frozen=True)
class SharpnessConfig:
    """Settings of ``edgefault sharpness``; with ``seed`` they determine every number on a CPU.

    ``samples`` training images (a seeded subset, the same one for every metric) define the loss.
    ``weight_space`` is ``quantized`` (dequantized int weights, the default) or ``latent`` (see
    :mod:`edgefault.analysis.objective`). Power iteration stops after ``power_iterations``
    Hessian-vector products or when the eigenvalue's relative change drops below
    ``power_tolerance``. The 1-D landscape has ``landscape_points`` points and the 2-D one a
    ``landscape_grid`` x ``landscape_grid`` grid, both over [-extent, extent] (odd counts, so
    the trained weights are a grid point). ``batch_size`` only bounds memory.

    Example:
        >>> SharpnessConfig(rho=0.1, samples=500).hutchinson_probes
        30
    """

    rho: float = 0.05
    seed: int = 0
    samples: int = 1000
    power_iterations: int = 50
    power_tolerance: float = 1e-3
    hutchinson_probes: int = 30
    landscape_points: int = 41
    landscape_grid: int = 15
    landscape_extent: float = 1.0
    weight_space: str = "quantized"
    batch_size: int = 500
    device: str = "auto"

    def __post_init__(self) -> None:
        minimum = {"samples": 1, "power_iterations": 1, "hutchinson_probes": 2, "landscape_points": 3,
                   "landscape_grid": 3, "batch_size": 1, "seed": 0}
        for name, low in minimum.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise EdgefaultError(f"{name} must be an integer >= {low}, got {value!r}")
        for name in ("landscape_points", "landscape_grid"):
            if getattr(self, name) % 2 == 0:
                raise EdgefaultError(f"{name} must be odd so the trained weights are a grid point, "
                                     f"got {getattr(self, name)}")
        for name in ("rho", "power_tolerance", "landscape_extent"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
                raise EdgefaultError(f"{name} must be a finite number > 0, got {value!r}")
        if self.power_tolerance >= 1:
            raise EdgefaultError(f"power_tolerance must be below 1, got {self.power_tolerance!r}")
        if self.weight_space not in WEIGHT_SPACES:
            raise EdgefaultError(f"weight_space must be one of {', '.join(WEIGHT_SPACES)}, got {self.weight_space!r}")
        if self.device not in ("auto", "cpu", "cuda") and not str(self.device).startswith("cuda:"):
            raise EdgefaultError(f"device must be auto, cpu or cuda[:N], got {self.device!r}")


@dataclasses.dataclass(frozen=True)
class Landscape:
    """Loss samples along one direction (``loss_1d`` at ``alphas_1d``) and on a plane.

    ``loss_2d[i][j]`` is the loss at w + alphas_2d[j] d1 + alphas_2d[i] d2; the 1-D curve runs
    along d1, so it is the 2-D landscape's b = 0 row, sampled more finely.

    Example:
        >>> Landscape((-1.0, 0.0, 1.0), (2.0, 0.1, 1.9), (0.0,), ((0.1,),), 1.0).loss_1d[1]
        0.1
    """

    alphas_1d: tuple[float, ...]
    loss_1d: tuple[float, ...]
    alphas_2d: tuple[float, ...]
    loss_2d: tuple[tuple[float, ...], ...]
    extent: float


@dataclasses.dataclass(frozen=True)
class SharpnessReport:
    """Everything ``analyze_sharpness`` measured; the first six fields are the headline numbers.

    ``loss``/``accuracy``: cross-entropy and top-1 accuracy at the trained weights on the
    ``samples`` training images. ``sam_sharpness``: loss(w + rho g/||g||) - loss(w).
    ``top_eigenvalue``: the Hessian's dominant eigenvalue (``power_iteration`` has its
    convergence). ``hessian_trace`` +- ``hessian_trace_stderr``: Hutchinson's estimate (``trace``
    has every probe). ``parameters`` weights in ``layers`` are measured; ``fingerprint`` is a
    hash of the model's state dict; ``seconds`` times each metric; ``files`` names the outputs
    written (empty without an output folder).
    """

    loss: float
    accuracy: float
    sam_sharpness: float
    top_eigenvalue: float
    hessian_trace: float
    hessian_trace_stderr: float
    sam: SamSharpness
    power_iteration: PowerIteration
    trace: TraceEstimate
    landscape: Landscape
    model: str
    source: dict
    data: str
    samples: int
    layers: tuple[str, ...]
    parameters: int
    fingerprint: str
    config: SharpnessConfig
    seconds: dict
    files: dict

    def to_dict(self) -> dict[str, Any]:
        """The metrics.json object: format tag, version and seed first, then every field.
        """
        body = dataclasses.asdict(self)
        body["power_iteration"]["iterations"] = self.power_iteration.iterations
        body["trace"]["probes"] = self.trace.probes
        return {"format": REPORT_FORMAT, "edgefault_version": __version__, "seed": self.config.seed, **body}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> "SharpnessReport":
        """Rebuild a report from its metrics.json object (the inverse of :meth:`to_dict`).
        """
        if not isinstance(raw, dict) or raw.get("format") != REPORT_FORMAT:
            raise EdgefaultError("not an edgefault sharpness report")
        try:
            power = {k: v for k, v in raw["power_iteration"].items() if k != "iterations"}
            trace = {k: v for k, v in raw["trace"].items() if k != "probes"}
            land = raw["landscape"]
            fields = {f.name for f in dataclasses.fields(cls)}
            values = {k: v for k, v in raw.items() if k in fields}
            values.update(
                sam=SamSharpness(**raw["sam"]),
                power_iteration=PowerIteration(**{**power, "history": tuple(power["history"]),
                                                  "relative_changes": tuple(power["relative_changes"])}),
                trace=TraceEstimate(**{**trace, "samples": tuple(trace["samples"])}),
                landscape=Landscape(tuple(land["alphas_1d"]), tuple(land["loss_1d"]), tuple(land["alphas_2d"]),
                                    tuple(tuple(row) for row in land["loss_2d"]), land["extent"]),
                layers=tuple(raw["layers"]),
                config=SharpnessConfig(**raw["config"]),
            )
            return cls(**values)
        except (KeyError, TypeError) as exc:
            raise EdgefaultError(f"a sharpness report with missing or malformed fields ({exc})") from None
