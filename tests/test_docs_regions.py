"""The documentation's generated regions match the reports they quote (tools/regions.py)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SPEC = importlib.util.spec_from_file_location("regions", ROOT / "tools" / "regions.py")
regions = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(regions)

REPORT = """# study

## The claims

**Claim 1.** Sparse models lose more. — **inconclusive**

- drop(sparse) - drop(standard) = -0.36 pts [95% CI -1.09, +0.36]
- second line

**Claim 2.** SAQ helps. — **held**

- saved = +2.94 pts

## What sparsity buys

| model | speedup |
|---|---|
| sparse | 1.255x |

![a figure](campaign/plot.png)
See [the cost folder](cost/sparse.json).

Seconds per stage on this machine: train 143
"""


def _page(tmp_path: Path, what: str) -> Path:
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "report.md").write_text(REPORT)
    (tmp_path / "docs").mkdir()
    page = tmp_path / "docs" / "page.md"
    page.write_text(f"intro\n<!-- generated from results/report.md: {what} -->\nold text\n<!-- end generated -->\nafter\n")
    return page


def test_every_region_in_the_docs_is_current():
    assert regions.main(["--check"]) == 0, "run: python tools/regions.py"


def test_the_claims_table_takes_each_claim_its_first_line_and_verdict():
    rows = regions.claims_table(REPORT)
    assert rows[2:] == ["| Claim 1. Sparse models lose more. | drop(sparse) - drop(standard) = -0.36 pts "
                        "[95% CI -1.09, +0.36] | **inconclusive** |",
                        "| Claim 2. SAQ helps. | saved = +2.94 pts | **held** |"]


def test_a_section_is_copied_with_links_moved_and_figures_left_out(tmp_path, monkeypatch):
    monkeypatch.setattr(regions, "ROOT", tmp_path)
    page = _page(tmp_path, "section: What sparsity buys")
    text = regions.refresh(page)
    assert "| sparse | 1.255x |" in text and "old text" not in text
    assert "![a figure]" not in text
    assert "[the cost folder](../results/cost/sparse.json)" in text
    assert text.startswith("intro\n") and text.endswith("<!-- end generated -->\nafter\n")
    page.write_text(text)
    assert regions.refresh(page) == text  # rendering is idempotent


def test_a_line_region_and_an_unknown_section_or_kind(tmp_path, monkeypatch):
    monkeypatch.setattr(regions, "ROOT", tmp_path)
    assert "train 143" in regions.refresh(_page(tmp_path, "line: Seconds per stage"))
    page = tmp_path / "docs" / "page.md"
    for what, message in (("section: Nowhere", "no section"), ("table", "unknown region kind")):
        page.write_text(f"<!-- generated from results/report.md: {what} -->\n<!-- end generated -->\n")
        with pytest.raises(ValueError, match=message):
            regions.refresh(page)
