"""Progress on stderr, one way for every stage: a live bar on a terminal, one line per stage in a log.

On a terminal a tqdm bar updates in place and vanishes when done. When stderr is a file or a
pipe (``make demo > demo.log 2>&1``), no ``\\r`` updates are written: a stage that asks for
it prints one line when it ends, and :func:`say` lines (e.g. one per epoch) go out as they are.
"""

from __future__ import annotations

import sys
import time
from typing import Any


def on_terminal() -> bool:
    """Whether stderr is a terminal (live bars) rather than a log.
    """
    return sys.stderr.isatty()


def say(line: str) -> None:
    """Print one line on stderr without breaking a live bar.
    """
    if on_terminal():
        from tqdm import tqdm

        tqdm.write(line, file=sys.stderr)
    else:
        print(line, file=sys.stderr, flush=True)


class Progress:
    """A stage's progress: ``update`` as work is done, ``close`` (or leave the ``with`` block) at the end.

    ``label=None`` shows nothing. ``log``: when stderr is not a terminal, print one line at the
    end of the stage (label, count, seconds, the last postfix).

    Example:
        >>> with Progress(3, "sharpness", unit="step") as bar:
        ...     bar.update(3)
        ...     bar.set_postfix_str("loss 0.1")
    """

    def __init__(self, total: int, label: str | None, unit: str = "it", initial: int = 0, log: bool = True) -> None:
        self.total, self.label, self.unit, self.done = total, label, unit, initial
        self.log = log and label is not None and not on_terminal()
        self.postfix = ""
        self._started = time.perf_counter()
        self._bar: Any = None
        self._closed = False
        if label is not None and on_terminal():
            from tqdm import tqdm

            self._bar = tqdm(total=total, initial=initial, desc=label, unit=unit, file=sys.stderr, leave=False,
                             dynamic_ncols=True)

    @property
    def live(self) -> bool:
        """Whether a live bar is shown (worth computing a postfix for)."""
        return self._bar is not None

    def update(self, count: int = 1) -> None:
        """Count ``count`` more units as done."""
        self.done += count
        if self._bar is not None:
            self._bar.update(count)

    def set_description(self, text: str) -> None:
        """Name the current step on the live bar (the log line keeps the stage's label)."""
        if self._bar is not None:
            self._bar.set_description(text, refresh=False)

    def shorten(self, count: int) -> None:
        """Expect ``count`` fewer units (a step that converged early)."""
        self.total -= count
        if self._bar is not None:
            self._bar.total = self.total
            self._bar.refresh()

    def set_postfix_str(self, text: str) -> None:
        """Show ``text`` after the bar (and in the closing log line)."""
        self.postfix = text
        if self._bar is not None:
            self._bar.set_postfix_str(text, refresh=False)

    def close(self) -> None:
        """End the stage: the bar vanishes; in a log, the stage's one line is printed."""
        if self._closed:
            return
        self._closed = True
        if self._bar is not None:
            self._bar.close()
        if self.log:
            seconds = time.perf_counter() - self._started
            extra = f", {self.postfix}" if self.postfix else ""
            print(f"{self.label}: {self.done}/{self.total} {self.unit}s in {seconds:.1f} s{extra}", file=sys.stderr,
                  flush=True)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

