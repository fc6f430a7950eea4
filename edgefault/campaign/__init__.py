"""Fault campaigns: models x fault kinds x rates x chips, paired across models, streamed, resumable, summarized.

Example:
    >>> from edgefault.campaign import CampaignConfig, ExecutionSettings, run_campaign
"""

from edgefault.campaign.cells import BIT_POSITIONS, Cell, chip_seed, plan_cells
from edgefault.campaign.config import CampaignConfig, file_hash, parse_kinds, parse_rates
from edgefault.campaign.engines import LocalEngine, RayEngine, available_cores, check_ray_address
from edgefault.campaign.prepare import PreparedCampaign, model_names, prepare_campaign
from edgefault.campaign.results import CampaignRecord, ResultsLog, finished_keys, measured_records, successes
from edgefault.campaign.run import CampaignResult, ExecutionSettings, run_campaign
from edgefault.campaign.stats import Estimate, estimate, summarize
from edgefault.campaign.worker import CellRunner, WorkerModel, WorkerPayload

__all__ = [
    "BIT_POSITIONS", "CampaignConfig", "CampaignRecord", "CampaignResult", "Cell", "CellRunner", "Estimate", "ExecutionSettings",
    "LocalEngine", "PreparedCampaign", "RayEngine", "ResultsLog", "WorkerModel", "WorkerPayload", "available_cores",
    "check_ray_address", "chip_seed", "estimate", "file_hash", "finished_keys", "measured_records", "model_names", "parse_kinds",
    "parse_rates", "plan_cells", "prepare_campaign", "run_campaign", "successes", "summarize",
]
