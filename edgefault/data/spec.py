"""Dataset SPEC strings: ``mnist5k``, ``cifar10:PATH``, ``cifar100:PATH``, ``mnist:PATH``, ``folder:PATH``, ``npz:PATH``."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from edgefault.errors import EdgefaultError

BUILTIN_KINDS = ("mnist5k",)
PATH_KINDS = ("cifar10", "cifar100", "mnist", "folder", "npz")


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """A parsed dataset SPEC: its kind and, for on-disk data, its path.
    """

    kind: str
    path: Path | None = None

    def __str__(self) -> str:
        return self.kind if self.path is None else f"{self.kind}:{self.path}"


def parse_spec(text: str) -> DatasetSpec:
    """Parse a SPEC string, refusing unknown kinds and missing paths with one clear message.

    Example:
        >>> parse_spec("mnist5k").kind
        'mnist5k'
    """
    kind, sep, path = text.partition(":")
    if kind in BUILTIN_KINDS:
        if sep:
            raise EdgefaultError(f"dataset SPEC {text!r}: the built-in {kind} takes no path")
        return DatasetSpec(kind)
    if kind not in PATH_KINDS:
        known = ", ".join([*BUILTIN_KINDS, *(f"{k}:PATH" for k in PATH_KINDS)])
        raise EdgefaultError(f"unknown dataset SPEC {text!r}; use one of {known}")
    if not path:
        raise EdgefaultError(f"dataset SPEC {text!r} needs a path: {kind}:PATH")
    resolved = Path(path).expanduser()
    if not resolved.exists():
        raise EdgefaultError(f"dataset SPEC {text!r}: {resolved} does not exist")
    return DatasetSpec(kind, resolved)
