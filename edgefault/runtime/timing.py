"""Latency at batch 1 and throughput at a large batch, measured on one session.

Each measurement warms up first (ONNX Runtime allocates and pre-packs weights on the
first runs), then repeats until it has both a minimum number of runs and a minimum
duration, so short models get enough samples and long ones stay bounded.
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np

from edgefault.errors import EdgefaultError
from edgefault.runtime.session import DEFAULT_BATCH, Evaluator


@dataclasses.dataclass(frozen=True)
class TimingSettings:
    """How long to measure: warm-up runs, then at least ``min_runs`` and ``min_seconds`` (capped by ``max_runs``).

    Example:
        >>> TimingSettings(min_seconds=0.2).throughput_batch
        256
    """

    warmup: int = 3
    min_runs: int = 10
    max_runs: int = 2000
    min_seconds: float = 1.0
    throughput_batch: int = DEFAULT_BATCH

    def __post_init__(self) -> None:
        if self.warmup < 0 or self.min_runs < 1 or self.max_runs < self.min_runs or self.min_seconds < 0:
            raise EdgefaultError("timing needs warmup >= 0, 1 <= min_runs <= max_runs and min_seconds >= 0")
        if self.throughput_batch < 1:
            raise EdgefaultError(f"throughput batch must be >= 1, got {self.throughput_batch}")


@dataclasses.dataclass(frozen=True)
class Timing:
    """Batch-1 latency percentiles (milliseconds) and large-batch throughput (images per second).

    Example:
        >>> timing = Timing(0.3, 0.4, 200, 256, 2800.0, 12, threads=1)
        >>> timing.latency_p90_ms >= timing.latency_p50_ms
        True
    """

    latency_p50_ms: float
    latency_p90_ms: float
    latency_runs: int
    throughput_batch: int
    throughput_images_per_s: float
    throughput_runs: int
    threads: int  # intra-op threads asked for; 0 means ONNX Runtime's default


def _repeat(run, settings: TimingSettings) -> np.ndarray:
    for _ in range(settings.warmup):
        run()
    durations = []
    started = time.perf_counter()
    while len(durations) < settings.max_runs and (
        len(durations) < settings.min_runs or time.perf_counter() - started < settings.min_seconds
    ):
        begin = time.perf_counter()
        run()
        durations.append(time.perf_counter() - begin)
    return np.asarray(durations)


def measure_timing(evaluator: Evaluator, images: np.ndarray, settings: TimingSettings = TimingSettings()) -> Timing:
    """Time ``evaluator`` on single images and on batches built from ``images`` (repeated if too few).
    """
    if len(images) == 0:
        raise EdgefaultError("timing needs at least one image")
    single = images[:1]
    # np.resize repeats the images cyclically when there are fewer than a batch.
    batch = np.resize(images, (settings.throughput_batch, *images.shape[1:]))
    latencies = _repeat(lambda: evaluator.logits(single, batch_size=1), settings)
    batch_times = _repeat(lambda: evaluator.logits(batch, batch_size=len(batch)), settings)
    return Timing(
        latency_p50_ms=float(np.percentile(latencies, 50) * 1e3),
        latency_p90_ms=float(np.percentile(latencies, 90) * 1e3),
        latency_runs=len(latencies),
        throughput_batch=len(batch),
        throughput_images_per_s=float(len(batch) / np.median(batch_times)),
        throughput_runs=len(batch_times),
        threads=evaluator.settings.intra_op_threads,
    )
