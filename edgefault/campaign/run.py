"""``edgefault campaign`` as a Python call: check, open the folder, run the pending cells, summarize, plot.

The folder holds ``campaign.json`` (the settings, written once), ``results.jsonl`` (one line
per finished cell attempt, appended and synced at once), and the summary files and plots,
which are rebuilt from the results at the end of every run. A file lock keeps two campaigns
from writing into one folder at the same time.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import os
import time
from pathlib import Path
from typing import Any

from edgefault.campaign.cells import Cell, plan_cells
from edgefault.campaign.config import FORMAT, CampaignConfig
from edgefault.campaign.costsummary import summarize_cost
from edgefault.campaign.engines import LocalEngine, RayEngine, available_cores, check_ray_address
from edgefault.campaign.plots import write_plots
from edgefault.campaign.precision import ChipTargets, group_key
from edgefault.campaign.prepare import PreparedCampaign, prepare_campaign
from edgefault.campaign.report import write_summary
from edgefault.campaign.results import MAX_ATTEMPTS, ResultsLog, finished_keys, successes
from edgefault.campaign.sites import memory_fields
from edgefault.campaign.stats import summarize
from edgefault.campaign.suffix import DEFAULT_CACHE_MB, MIB
from edgefault.campaign.worker import failed_record
from edgefault.errors import EdgefaultError
from edgefault.faults.ecc import EccOverhead, ecc_overhead
from edgefault.fileio import check_output_folder, folder_lock, is_lock_file, output_folder, read_json, write_json_atomic
from edgefault.progress import Progress

CAMPAIGN_FILE, RESULTS_FILE = "campaign.json", "results.jsonl"


@dataclasses.dataclass(frozen=True)
class ExecutionSettings:
    """How cells run; none of this changes the results.

    ``workers``: local processes (default: one per core), or with ``ray`` the number of actors
    (default: the cluster's CPUs). ``ray``: ``auto`` or a cluster address. ``progress``: a
    progress bar on stderr when it is a terminal. ``cache_mb``: each worker's budget for the
    clean activations of suffix evaluation (0: every cell runs the whole model).

    Example:
        >>> ExecutionSettings(workers=2).engine().workers
        2
    """

    workers: int | None = None
    ray: str | None = None
    progress: bool = False
    cache_mb: float = DEFAULT_CACHE_MB

    def __post_init__(self) -> None:
        if self.workers is not None and (isinstance(self.workers, bool) or not isinstance(self.workers, int)
                                         or self.workers < 1):
            raise EdgefaultError(f"workers must be a positive integer, got {self.workers!r}")
        if self.ray is not None and (not isinstance(self.ray, str) or not self.ray.strip()):
            raise EdgefaultError("ray takes auto or a cluster address such as 10.0.0.5:6379")
        if isinstance(self.cache_mb, bool) or not isinstance(self.cache_mb, (int, float)) or not (
                0 <= self.cache_mb < float("inf")):
            raise EdgefaultError(f"cache_mb must be a number of megabytes >= 0, got {self.cache_mb!r}")

    def engine(self) -> LocalEngine | RayEngine:
        """The engine these settings describe (not started).

        Example:
            >>> ExecutionSettings(ray="auto").engine().address
            'auto'
        """
        if self.ray is not None:
            return RayEngine(self.ray.strip(), self.workers)
        workers = self.workers or available_cores()
        # N workers share the cores: more threads each would only make them fight over the cores.
        return LocalEngine(workers, max(1, available_cores() // workers))


@dataclasses.dataclass(frozen=True)
class CampaignResult:
    """What a campaign run did: the summary, the files written, cells run now, wall time.
    """

    folder: Path
    summary: dict[str, Any]
    files: tuple[Path, ...]
    ran: int
    resumed: int
    seconds: float
    engine: str
    models: tuple[dict[str, Any], ...] = ()  # campaign.json's models: name, feed, weight-memory coverage
    ecc: EccOverhead = ecc_overhead(())

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields for ``--json``.
        """
        return {"folder": str(self.folder), "files": [str(f) for f in self.files], "ran": self.ran,
                "resumed": self.resumed, "seconds": self.seconds, "engine": self.engine, "summary": self.summary,
                "ecc": self.ecc.to_dict()}


def run_campaign(config: CampaignConfig, out: str | os.PathLike,
                 execution: ExecutionSettings = ExecutionSettings()) -> CampaignResult:
    """Run (or resume) a campaign into folder ``out`` and write its summary and plots.

    Every check that can fail on user input runs before the folder is created.
    """
    started = time.perf_counter()
    folder = Path(out)
    engine = execution.engine()
    if isinstance(engine, RayEngine):
        check_ray_address(engine.address)  # seconds before the models load, not after
    check_output_folder(folder, config.models)
    saved = _saved_campaign(folder)
    prepared = prepare_campaign(config)
    if saved is not None:
        _check_same(config, prepared, saved, folder)
    if isinstance(engine, RayEngine):
        engine.connect()
    results = folder / RESULTS_FILE
    try:  # a failed run leaves nothing new behind, unless it finished cells worth resuming from
        with output_folder(folder, keep=lambda: results.is_file() and results.stat().st_size > 0), _locked(folder):
            if (folder / CAMPAIGN_FILE).exists():
                saved = _saved_campaign(folder)
                _check_same(config, prepared, saved, folder)
            else:
                saved = {"format": FORMAT, "config": config.to_dict(), **prepared.info}
                write_json_atomic(folder / CAMPAIGN_FILE, saved)
            log = ResultsLog(folder / RESULTS_FILE)
            try:
                records = log.read()
                cells = plan_cells(config, prepared.tensors, prepared.bit_widths, prepared.act_tensors)
                done, tries = finished_keys(records)
                hashes = config.model_hashes
                targets = None
                if config.target_ci is not None:
                    targets = ChipTargets(cells, hashes, config.target_ci, config.chips)
                    for record in records:
                        targets.add(record, final=record["key"] in done)
                    # Chip-major order: chip k of every group before chip k + 1, so each group's
                    # early chips come back, and can stop it, before its later ones are sent.
                    cells = sorted(cells, key=lambda c: -1 if c.chip is None else c.chip)
                pending = [(c, tries.get(c.key(hashes[c.model]), 0) + 1)
                           for c in cells if c.key(hashes[c.model]) not in done and (not targets or targets.wanted(c))]
                new = []
                if pending:
                    new = execute_cells(engine, prepared, pending, log, execution.progress, len(cells), records,
                                        targets, int(execution.cache_mb * MIB))
                records += new
            finally:
                log.close()
            summary = _summary(prepared, cells, records, targets)
            files = [folder / CAMPAIGN_FILE, folder / RESULTS_FILE]
            files += write_summary(folder, summary, config.to_dict())
            files += write_plots(folder, summary, config.kinds)
    finally:
        engine.close()  # also stops a Ray cluster started here when no cell was left to run
    ran = len({r["key"] for r in new})  # with --target-ci, fewer than were pending
    return CampaignResult(folder, summary, tuple(files), ran, sum(c.key(hashes[c.model]) in done for c in cells),
                          round(time.perf_counter() - started, 3), engine.describe(), tuple(saved["models"]),
                          ecc_overhead(config.protect_bits))


def execute_cells(engine, prepared: PreparedCampaign, pending: list[tuple[Cell, int]], log: ResultsLog,
                  progress: bool = False, total: int | None = None, previous: list[dict[str, Any]] = (),
                  targets: ChipTargets | None = None,
                  cache_bytes: int = int(DEFAULT_CACHE_MB * MIB)) -> list[dict[str, Any]]:
    """Run ``(cell, attempt)`` pairs on an engine, appending each record to ``log`` as it arrives; return the records.

    A failed attempt is written, then retried once (``MAX_ATTEMPTS``); other cells go on
    meanwhile. ``total`` and ``previous`` (records of an earlier run) only feed the progress bar.
    With ``targets``, cells whose group has all the chips it needs are skipped when their
    turn comes. ``cache_bytes`` is each worker's suffix-cache budget.
    """
    total = len(pending) if total is None else total
    queue = collections.deque(pending)
    in_flight: dict[int, tuple[Cell, int]] = {}
    new: list[dict[str, Any]] = []
    accuracies = [r["accuracy"] for r in previous if r.get("error") is None and r.get("mode") != "clean"]
    bar = Progress(total, "campaign" if progress else None, unit="cell", initial=total - len(pending))
    engine.open(dataclasses.replace(prepared.payload(engine.threads), cache_bytes=cache_bytes), len(pending))
    try:
        task = 0
        while queue or in_flight:
            while queue and len(in_flight) < engine.capacity:
                cell, attempt = queue.popleft()
                if targets is not None and not targets.wanted(cell):
                    bar.update(1)
                    continue
                engine.submit(task, cell, attempt)
                in_flight[task] = (cell, attempt)
                task += 1
            for finished, outcome in engine.collect():
                cell, attempt = in_flight.pop(finished)
                if isinstance(outcome, str):  # the worker died with this cell in flight
                    model = prepared.models[cell.model]
                    outcome = failed_record(cell, model.sha256, model.name, attempt, outcome)
                log.append(outcome)
                new.append(outcome)
                if targets is not None:
                    targets.add(outcome, final=outcome["error"] is None or attempt >= MAX_ATTEMPTS)
                if outcome["error"] is not None and attempt < MAX_ATTEMPTS:
                    queue.appendleft((cell, attempt + 1))
                    continue
                if outcome["error"] is None and outcome["mode"] != "clean":
                    accuracies.append(outcome["accuracy"])
                bar.update(1)
                if accuracies:
                    bar.set_postfix_str(f"mean acc {sum(accuracies) / len(accuracies):.4f}")
    finally:
        engine.close()
        bar.close()
    return new


def _summary(prepared: PreparedCampaign, cells: list[Cell], records: list[dict[str, Any]],
             targets: ChipTargets | None = None) -> dict[str, Any]:
    if targets is not None:
        cells = [c for c in cells if targets.wanted(c)]  # each group's first n chips: what --chips n reports
    models = [{"name": m.name, "sha256": m.sha256} for m in prepared.models]
    planned = [{"key": c.key(prepared.models[c.model].sha256), "model": c.model, "memory": c.memory, "mode": c.mode,
                "target": c.target, "kind": c.kind, "rate": c.rate, "chip": c.chip} for c in cells]
    keys = {p["key"] for p in planned}
    done, _ = finished_keys(records)
    found = successes(records)
    last_error = {r["key"]: r["error"] for r in records if r.get("error") is not None}
    failures = {k: last_error[k] for k in done if k not in found and k in keys}
    summary = summarize(models, planned, {k: v for k, v in found.items() if k in keys}, failures)
    summary["from_cut"] = sum(found[k].get("cut") is not None for k in keys if k in found)  # suffix evaluation
    if prepared.accelerator is not None:
        summary["cost"] = {"accelerator": prepared.accelerator.name,
                           "groups": summarize_cost(models, planned, {k: v for k, v in found.items() if k in keys})}
    if targets is not None:
        index = {m.name: i for i, m in enumerate(prepared.models)}
        for row in summary["groups"]:
            group = group_key(Cell(index[row["model"]], row["mode"], row["kind"], row["rate"], 0, None, row["target"],
                                   **memory_fields(row["memory"])))
            row["target_met"] = targets.met.get(group)
        summary["target_ci"] = targets.width
    return summary


def _saved_campaign(folder: Path) -> dict[str, Any] | None:
    """The saved ``campaign.json`` of an existing campaign folder; refuses anything else in the way."""
    if not folder.exists():
        return None
    if not folder.is_dir():
        raise EdgefaultError(f"`out` {folder} is a file; give a folder for the campaign")
    saved = folder / CAMPAIGN_FILE
    if not saved.exists():
        if any(not is_lock_file(p.name) for p in folder.iterdir()):
            raise EdgefaultError(f"`out` {folder} is not empty and holds no {CAMPAIGN_FILE}; give a new or empty folder")
        return None
    document = read_json(saved)
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise EdgefaultError(f"{saved}: not an edgefault campaign file")
    return document


def _check_same(config: CampaignConfig, prepared: PreparedCampaign, saved: dict[str, Any], folder: Path) -> None:
    config.check_same(CampaignConfig.from_dict(saved.get("config")), str(folder))
    theirs = saved.get("data", {}).get("fingerprint")
    if theirs != prepared.info["data"]["fingerprint"]:
        raise EdgefaultError(f"{folder} holds a campaign on other test images (the data behind "
                             f"{config.data!r} changed); use another `out`")


def _locked(folder: Path) -> contextlib.AbstractContextManager[None]:
    """An exclusive lock on the campaign folder, a hidden file in it while held (a finished folder holds only
    results); the operating system drops it if the process dies."""
    folder.mkdir(parents=True, exist_ok=True)
    return folder_lock(folder, busy=f"another campaign is running in {folder}; wait for it or use another `out`",
                       purpose="campaign")
