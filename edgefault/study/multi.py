"""``reproduce --models a,b,c``: the study on several architectures, one folder each, and one report across them."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Sequence

from edgefault.errors import EdgefaultError
from edgefault.fileio import read_json, write_bytes_atomic
from edgefault.study.config import StudyConfig
from edgefault.study.pipeline import STUDY_FILE, StudyResult, check_study_folder, claim_study_folder, run_study
from edgefault.text import printable

CLAIM_TITLES = {1: "sparse models lose more under faults", 2: "SAQ improves both",
                3: "SAQ-sparse beats conventional standard", 4: "sparse minima are sharper and sharpness tracks drop"}


@dataclasses.dataclass(frozen=True)
class MultiStudyResult:
    """The cross-architecture report, each architecture's study, and the seconds each took.
    """

    report: Path
    studies: dict[str, StudyResult]
    seconds: dict[str, float]


def _settings(configs: Sequence[StudyConfig]) -> dict:
    return {"models": [c.model for c in configs], "studies": [c.to_dict() for c in configs]}


def check_multi_folder(folder: Path, configs: Sequence[StudyConfig]) -> None:
    """Accept a new or empty folder, this same cross-architecture study, or per-architecture studies run before.

    Example:
        >>> check_multi_folder(Path("new-multi"), [StudyConfig(quick=True)])
    """
    if folder.exists() and (folder / STUDY_FILE).exists():
        check_study_folder(folder, _settings(configs), "cross-architecture study")
    elif folder.is_dir():
        strangers = sorted(p.name for p in folder.iterdir() if not (p.is_dir() and p.name in {c.model for c in configs}))
        if strangers:
            raise EdgefaultError(f"{folder}: holds other files ({', '.join(strangers[:3])}) and no {STUDY_FILE}; "
                                 "give `out` a new or empty folder")
    elif folder.exists():
        raise EdgefaultError(f"{folder}: exists and is not a folder")
    for config in configs:
        check_study_folder(folder / config.model, config)


def run_studies(configs: Sequence[StudyConfig], out: str | Path, progress: bool = True) -> MultiStudyResult:
    """Run the study for each config (one architecture each) into ``out/<model>``, then write ``out/report.md``.

    Each architecture's folder is an ordinary study folder: a rerun reuses every finished stage,
    and a study run before with ``--model NAME --out out/NAME`` is reused as is.
    """
    models = [c.model for c in configs]
    if len(set(models)) != len(models) or not models:
        raise EdgefaultError(f"`models` needs distinct architectures, got {', '.join(models) or 'none'}")
    folder = Path(out)
    check_multi_folder(folder, configs)
    claim_study_folder(folder, _settings(configs))
    studies, seconds = {}, {}
    for config in configs:
        started = time.perf_counter()
        studies[config.model] = run_study(config, folder / config.model, progress)
        seconds[config.model] = time.perf_counter() - started
    report = folder / "report.md"
    write_bytes_atomic(report, "\n".join(cross_report_lines(configs, studies, folder)).encode())
    return MultiStudyResult(report, studies, seconds)


def _headline(result: StudyResult, number: int) -> str:
    claim = next(c for c in result.claims if c.number == number)
    evidence = claim.evidence[0].split("; per seed")[0] + (")" if "; per seed" in claim.evidence[0] else "")
    if number in (1, 3) and "=" in evidence:
        evidence = evidence.split("=", 1)[1].strip()  # the difference and its interval
    elif number == 2:
        evidence = "; ".join(item.split("; per seed")[0].split("=", 1)[1].strip() + (")" if "; per seed" in item else "")
                             for item in claim.evidence if "=" in item)
    elif number == 4:
        evidence = evidence.split(":")[0].replace("Hessian trace(sparse) - trace(standard) = ", "trace diff ")
    return f"**{claim.verdict}** ({evidence})"


def cross_scope(configs: Sequence[StudyConfig]) -> str:
    """What the cross-architecture verdicts are about (one seed: the trained models; several: the recipes).

    Example:
        >>> cross_scope([StudyConfig(quick=True)]).startswith("One training seed")
        True
    """
    seeds = configs[0].seeds
    if seeds == 1:
        return ("One training seed per recipe: the verdicts are about these trained models, not the recipes "
                "(`--seeds 5` makes them recipe verdicts); intervals over chips.")
    return f"{seeds} training seeds per recipe: intervals over seeds and chips, verdicts about the recipes."


def cross_report_lines(configs: Sequence[StudyConfig], studies: dict[str, StudyResult], folder: Path) -> list[str]:
    """The lines of the cross-architecture report: a claims-by-architecture table, then each study's models.
    """
    models = [c.model for c in configs]
    lines = [
        "# edgefault study across architectures", "",
        f"The paper's four claims on {', '.join(models)} ({printable(configs[0].data)}"
        f"{', quick profile' if configs[0].quick else ''}). Each architecture's own report, with every interval, "
        f"sits in its folder. {cross_scope(configs)} Claim 1/3: paired drop or faulty-accuracy difference in points [95% CI]; "
        "claim 2: the drop SAQ saved for the standard and the sparse model; claim 4: the Hessian trace difference "
        "(sparse - standard) [95% CI].", "",
        "| claim | " + " | ".join(models) + " |", "|---|" + "---|" * len(models),
    ]
    for number, title in CLAIM_TITLES.items():
        lines.append(f"| {number}. {title} | " + " | ".join(_headline(studies[m], number) for m in models) + " |")
    lines += ["", "## The models per architecture", "",
              "| architecture | epochs | model | PyTorch acc. | int8 acc. (ORT) | parity | activation sparsity |",
              "|---|---|---|---|---|---|---|"]
    for config in configs:
        for variant in config.variants:
            metrics = read_json(folder / config.model / "runs" / variant.name / "metrics.json")
            export = read_json(folder / config.model / "models" / f"{variant.name}.export.json")
            lines.append(f"| {config.model} | {config.epochs} | {variant.label} | {100 * metrics['test_accuracy']:.2f}% | "
                         f"{100 * export['onnx_accuracy']:.2f}% | {100 * export['agreement']:.2f}% | "
                         f"{100 * metrics['activation_sparsity']['overall']:.1f}% |")
    lines += ["", "## Claims per architecture", ""]
    for config in configs:
        result = studies[config.model]
        lines += [f"### {config.model} ([report]({config.model}/report.md))", ""]
        for claim in result.claims:
            lines.append(f"- **Claim {claim.number}: {claim.verdict}.** " + "; ".join(claim.evidence))
        stages = ", ".join(f"{k} {v:.0f}" for k, v in result.seconds.items())
        lines += ["", f"Seconds per stage: {stages} (total {sum(result.seconds.values()):.0f}; reused stages ~0).", ""]
    return lines
