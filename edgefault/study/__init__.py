"""The study: the paper's experiment (train, export, paired campaign, sharpness, report) as one call,
on one architecture or several, with sweeps of the sparsity level and of SAQ's rho."""

from edgefault.study.config import StudyConfig, Variant
from edgefault.study.multi import MultiStudyResult, run_studies
from edgefault.study.pipeline import StudyResult, run_study
from edgefault.study.sweeps import SweepResult

__all__ = ["MultiStudyResult", "StudyConfig", "StudyResult", "SweepResult", "Variant", "run_studies", "run_study"]
