"""Fill the generated regions of README.md and docs/*.md from the study reports they quote.

A number in the documentation has one source: the report a run wrote, kept under ``results/``
(``results/<name>/report.md``, written by ``edgefault reproduce`` and copied there unchanged).
A page quotes it through a region::

    <!-- generated from results/full/report.md: claims -->
    ...what this script writes...
    <!-- end generated -->

``python tools/regions.py`` rewrites every region from its source; ``--check`` only reports the
regions that differ (exit 1), and the test suite runs it, so a page cannot drift from its source.
What a region holds is named after the colon:

- ``claims``: a table of the report's claims (statement, first measured line, verdict);
- ``section: TITLE``: the body of the report's ``## TITLE`` section (no title: what comes before
  the first section), its links made relative to the page, its figures left out (they live
  beside the report, not in the docs);
- ``line: PREFIX``: the report's first line that starts with PREFIX.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PAGES = ("README.md", "docs/*.md")
REGION = re.compile(r"(<!-- generated from (?P<source>\S+): (?P<what>.+?) -->\n)(?P<body>.*?)(<!-- end generated -->)",
                    re.S)
# "**Claim 1.** Statement. — **held**" (the claims) and "**Claim: statement.** — **held**" (later sections)
CLAIM = re.compile(r"^\*\*(?P<head>Claim.+?)(?:\*\*)? — \*\*(?P<verdict>[^*]+)\*\*$")


def sections(report: str) -> dict[str, list[str]]:
    """The report's ``## `` sections by title, each as its body lines; ``""``: the lines before the first.

    Example:
        >>> found = sections("# T\\nintro\\n## A\\nx\\n## B\\ny\\nz\\n")
        >>> found["B"], found[""]
        (['y', 'z'], ['intro'])
    """
    found: dict[str, list[str]] = {"": []}
    current = found[""]  # what comes before the first section, the title left out
    for line in report.splitlines():
        if line.startswith("## "):
            current = found.setdefault(line[3:].strip(), [])
        elif not line.startswith("# "):
            current.append(line)
    return found


def claims_table(report: str) -> list[str]:
    """Every claim of a report as a Markdown table: claim, its first measured line, verdict.

    Example:
        >>> text = "## The claims\\n\\n**Claim 1.** Sparse loses more. — **held**\\n\\n- d = +1.0 [0.5, 1.5]\\n"
        >>> claims_table(text)[2]
        '| Claim 1. Sparse loses more. | d = +1.0 [0.5, 1.5] | **held** |'
    """
    rows = ["| claim | measured (first comparison; the report has all) | verdict |", "|---|---|---|"]
    body = report.splitlines()
    for i, line in enumerate(body):
        match = CLAIM.match(line.strip())
        if match is None:
            continue
        evidence = next((item[2:] for item in body[i + 1:] if item.startswith("- ")), "")
        cells = (match["head"].replace("**", ""), evidence, f"**{match['verdict']}**")
        rows.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    if len(rows) == 2:
        raise ValueError("the report has no claims")
    return rows


def _relink(line: str, source: Path, page: Path) -> str | None:
    """A report line as the page shows it: links relative to the page; None for a figure line."""
    if line.lstrip().startswith("!["):
        return None

    def move(match: re.Match) -> str:
        target = match["target"]
        if "://" in target or target.startswith("#"):
            return match[0]
        moved = os.path.relpath(source.parent / target, page.parent).replace(os.sep, "/")
        return f"]({moved})"

    return re.sub(r"\]\((?P<target>[^)\s]+)\)", move, line)


def render(what: str, source: Path, page: Path) -> str:
    """The text of one region: ``what`` (``claims``, ``section: TITLE``, ``line: PREFIX``) from ``source``."""
    report = source.read_text(encoding="utf-8")
    kind, _, argument = (part.strip() for part in what.partition(":"))
    if kind == "claims":
        lines = claims_table(report)
    elif kind == "section":
        body = sections(report).get(argument)
        if body is None:
            raise ValueError(f"{source}: no section '## {argument}'")
        lines = [moved for moved in (_relink(line, source, page) for line in body) if moved is not None]
    elif kind == "line":
        lines = [next((line for line in report.splitlines() if line.startswith(argument)), "")]
        if not lines[0]:
            raise ValueError(f"{source}: no line starting with {argument!r}")
    else:
        raise ValueError(f"{page}: unknown region kind {kind!r}")
    while lines and not lines[0].strip():
        lines.pop(0)
    while lines and not lines[-1].strip():
        lines.pop()
    return "\n".join(lines) + "\n"


def refresh(page: Path) -> str:
    """The page's text with every generated region rendered anew from its source."""
    def fill(match: re.Match) -> str:
        body = render(match["what"], ROOT / match["source"], page)
        return match[1] + body + match[5]

    return REGION.sub(fill, page.read_text(encoding="utf-8"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="report stale regions, change nothing (exit 1 if any)")
    args = parser.parse_args(argv)
    stale = []
    for pattern in PAGES:
        for page in sorted(ROOT.glob(pattern)):
            text = refresh(page)
            if text != page.read_text(encoding="utf-8"):
                stale.append(page.relative_to(ROOT))
                if not args.check:
                    page.write_text(text, encoding="utf-8")
    for page in stale:
        print(f"{'stale' if args.check else 'updated'}: {page}")
    return 1 if stale and args.check else 0


if __name__ == "__main__":
    sys.exit(main())
