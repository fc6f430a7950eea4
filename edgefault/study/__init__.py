"""The study: the paper's experiment (train, export, paired campaign, sharpness, report) as one call."""

from edgefault.study.config import StudyConfig, Variant
from edgefault.study.pipeline import StudyResult, run_study

__all__ = ["StudyConfig", "StudyResult", "Variant", "run_study"]
