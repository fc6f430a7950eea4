"""The guard of a study-like output folder: it holds one settings file and what those settings made.

``reproduce``, its sweeps, ``reproduce --models`` and ``mitigate`` all reuse finished stages in
their ``--out`` folder, so each must refuse a folder that holds anything else (nothing is ever
overwritten) and must create the folder only together with its settings file.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from edgefault.errors import EdgefaultError
from edgefault.fileio import read_json, to_json, write_json_atomic


@dataclasses.dataclass(frozen=True)
class SettingsFolder:
    """A kind of output folder, told apart by its settings file's name and format.

    Example:
        >>> guard = SettingsFolder("study.json", "edgefault-study-1", "study")
        >>> guard.check(Path("a-new-folder"), {"quick": True})
    """

    file: str
    format: str
    kind: str

    def check(self, folder: Path, settings: dict, kind: str | None = None) -> None:
        """Refuse ``folder`` unless it is new, empty, or holds this same kind of folder with ``settings``.

        ``kind`` names the folder in errors when it differs from the guard's own (a sweep's, say).

        Example:
            >>> SettingsFolder("study.json", "edgefault-study-1", "study").check(Path("new"), {})
        """
        kind = kind or self.kind
        if folder.exists() and not folder.is_dir():
            raise EdgefaultError(f"{folder}: exists and is not a folder")
        if not folder.exists() or not any(folder.iterdir()):
            return
        saved = folder / self.file
        if not saved.exists():
            raise EdgefaultError(f"{folder}: holds other files and no {self.file}; give `out` a new or empty folder")
        raw = read_json(saved)
        if not isinstance(raw, dict) or raw.get("format") != self.format:
            raise EdgefaultError(f"{saved}: not an edgefault {self.kind}; give `out` a new or empty folder")
        if raw.get("config") != json.loads(to_json(settings)):  # compare as saved: tuples become lists
            raise EdgefaultError(f"{folder}: holds another {kind} (different settings in {self.file}); "
                                 "give `out` a new folder or rerun with the same settings")

    def claim(self, folder: Path, settings: dict) -> None:
        """Create ``folder`` with its settings file, after :meth:`check` (the folder is made with this file or not at all).
        """
        if not (folder / self.file).exists():
            write_json_atomic(folder / self.file, {"format": self.format, "config": settings})
