"""Text that comes from files (metadata, tensor and node names, paths), made safe for a terminal, CSV and Markdown.

A model's metadata or a tensor's name may hold anything: an escape sequence that retitles the
terminal, a newline that fakes an output line, a cell that a spreadsheet runs as a formula, a
``|`` that breaks a Markdown table. Three functions, used wherever such text leaves edgefault:
:func:`printable` for the terminal, :func:`csv_bytes` for every CSV file, :func:`md_cell` for
every Markdown table cell.
"""

from __future__ import annotations

import csv
import io
from typing import Any, Iterable, Mapping

# OWASP's list: a cell starting with one of these is read as a formula by spreadsheet programs.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def printable(text: Any) -> str:
    """``text`` with every control or invisible formatting character shown as its Python escape.

    Escape sequences, newlines, tabs, bidirectional overrides and undecodable bytes of a file
    name (surrogates) become visible text such as ``\\x1b`` or ``\\n``; everything else stays.

    Example:
        >>> printable("=1+1\\x1b]0;pwned\\x07")
        '=1+1\\\\x1b]0;pwned\\\\x07'
        >>> printable("mnist5k\\nfake line"), printable("conv1.weight")
        ('mnist5k\\\\nfake line', 'conv1.weight')
    """
    text = str(text)
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape", "backslashreplace").decode("ascii")
                   for c in text)


def csv_cell(value: Any) -> Any:
    """A CSV cell that no spreadsheet runs: text starting with ``= + - @``, tab or CR gets a leading ``'``.

    Numbers stay numbers (a negative number is data, not a formula); control characters in text
    are made visible (a bare CR would end the row for many readers).

    Example:
        >>> csv_cell("=cmd|' /C calc'!A0"), csv_cell("-dash"), csv_cell(-0.5), csv_cell("lenet"), csv_cell("\\ra")
        ("'=cmd|' /C calc'!A0", "'-dash", -0.5, 'lenet', "'\\\\ra")
    """
    if not isinstance(value, str):
        return value
    return ("'" if value.startswith(FORMULA_STARTS) else "") + printable(value)


def csv_bytes(columns: Iterable[str], rows: Iterable[Mapping[str, Any]]) -> bytes:
    """The one CSV writer: a header and one line per row (keys outside ``columns`` ignored), cells neutralized.

    Example:
        >>> csv_bytes(["model", "accuracy"], [{"model": "=2+3", "accuracy": 0.5}]).decode()
        "model,accuracy\\n'=2+3,0.5\\n"
    """
    columns = list(columns)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writerow({column: csv_cell(column) for column in columns})
    for row in rows:
        writer.writerow({key: csv_cell(value) for key, value in row.items()})
    return buffer.getvalue().encode()


def md_cell(value: Any) -> str:
    """A Markdown table cell: ``|`` escaped, line breaks and other control characters made visible.

    Example:
        >>> md_cell("a|b\\nc")
        'a\\\\|b\\\\nc'
    """
    return printable(value).replace("|", "\\|")


def md_table(header: Iterable[Any], rows: Iterable[Iterable[Any]]) -> str:
    """A GitHub-flavoured Markdown table with every cell escaped by :func:`md_cell`.

    Example:
        >>> print(md_table(["model", "acc"], [["a|b", "0.9"]]))
        | model | acc |
        |---|---|
        | a\\|b | 0.9 |
    """
    header = [md_cell(cell) for cell in header]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(md_cell(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)
