"""The memories a campaign faults: the weight memory, and the activation memory in one or more storage formats.

``--sites weights,activations`` puts activation cells beside the weight cells; each activation
format (``--act-format dense,bitmap``) is a memory of its own, with its own cells, all on the
same chips (chip ``k`` of a kind has one seed for every memory, model and rate), so the
memories, the formats and the models are compared paired. ``--transient`` draws the
activation faults afresh for every image (see :mod:`edgefault.campaign.activations`).

A memory is named by a short label in results and summaries: ``weights``,
``activations/dense``, ``activations/bitmap/transient``.
"""

from __future__ import annotations

from typing import Any

from edgefault.errors import EdgefaultError
from edgefault.faults.formats import ACT_FORMATS

SITES = ("weights", "activations")
WEIGHTS = "weights"


def check_sites(sites: Any, formats: Any, transient: Any) -> tuple[tuple[str, ...], tuple[str, ...], bool]:
    """Validate the memory settings of a campaign; return them normalized (tuples in the given order).

    Example:
        >>> check_sites(["weights", "activations"], ["bitmap"], False)
        (('weights', 'activations'), ('bitmap',), False)
        >>> check_sites(["weights"], ["dense"], True)
        Traceback (most recent call last):
        ...
        edgefault.errors.EdgefaultError: `transient` applies to activation faults; add activations to `sites`
    """
    sites, formats = check_names("`sites`", sites, SITES), check_names("`act_formats`", formats, ACT_FORMATS)
    if not isinstance(transient, bool):
        raise EdgefaultError(f"`transient` must be true or false, got {transient!r}")
    if "activations" not in sites:
        if transient:
            raise EdgefaultError("`transient` applies to activation faults; add activations to `sites`")
        if formats != ("dense",):
            raise EdgefaultError("`act_formats` applies to activation faults; add activations to `sites`")
    return sites, formats, transient


def parse_sites(text: str) -> tuple[str, ...]:
    """Parse ``--sites weights,activations`` (``all`` is both).

    Example:
        >>> parse_sites("activations"), parse_sites("all")
        (('activations',), ('weights', 'activations'))
    """
    if text.strip() == "all":
        return SITES
    return check_names("`sites`", split_list(text), SITES)


def parse_formats(text: str) -> tuple[str, ...]:
    """Parse ``--act-format dense,bitmap``.

    Example:
        >>> parse_formats("bitmap, dense")
        ('bitmap', 'dense')
    """
    return check_names("`act_formats`", split_list(text), ACT_FORMATS)


def memory_label(site: str, act_format: str | None = None, transient: bool = False) -> str:
    """The label of a memory in results and summaries.

    Example:
        >>> memory_label("weights"), memory_label("activations", "bitmap", True)
        ('weights', 'activations/bitmap/transient')
    """
    if site == WEIGHTS:
        return WEIGHTS
    return f"{site}/{act_format}" + ("/transient" if transient else "")


def memory_fields(label: str) -> dict[str, Any]:
    """The ``site``, ``act_format`` and ``transient`` of a memory label (the inverse of :func:`memory_label`).

    Example:
        >>> memory_fields("activations/bitmap/transient")
        {'site': 'activations', 'act_format': 'bitmap', 'transient': True}
    """
    site, *rest = label.split("/")
    return {"site": site, "act_format": rest[0] if rest else None, "transient": rest[1:] == ["transient"]}


def memories(config) -> list[tuple[str, str | None, bool]]:
    """(site, format, transient) of every memory of a campaign config, weights first.

    Example:
        >>> from types import SimpleNamespace
        >>> memories(SimpleNamespace(sites=("weights", "activations"), act_formats=("dense", "rle"), transient=False))
        [('weights', None, False), ('activations', 'dense', False), ('activations', 'rle', False)]
    """
    found: list[tuple[str, str | None, bool]] = [(WEIGHTS, None, False)] if WEIGHTS in config.sites else []
    if "activations" in config.sites:
        found += [("activations", name, config.transient) for name in config.act_formats]
    return found


def split_list(text: str) -> tuple[str, ...]:
    """The comma-separated entries of ``text``, stripped (an empty entry stays, to be refused as unknown).

    Example:
        >>> split_list(" flip, sa0,"), split_list(" ")
        (('flip', 'sa0', ''), ())
    """
    return tuple(part.strip() for part in text.split(",")) if text.strip() else ()


def check_names(setting: str, values: Any, known: tuple[str, ...], what: str = "") -> tuple[str, ...]:
    """``values`` as a tuple of distinct names from ``known`` (a list of ``what``), else one user error.

    Example:
        >>> check_names("kinds", ["flip", "zap"], ("flip", "sa0"), "fault kind ")
        Traceback (most recent call last):
        ...
        edgefault.errors.EdgefaultError: kinds: unknown fault kind 'zap'; choose from flip, sa0
    """
    if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
        raise EdgefaultError(f"{setting} must be a list, got {values!r}")
    names = tuple(values)
    if not names:
        raise EdgefaultError(f"{setting} is empty; choose from {', '.join(known)}")
    for name in names:
        if name not in known:
            raise EdgefaultError(f"{setting}: unknown {what}{name!r}; choose from {', '.join(known)}")
    if len(set(names)) != len(names):
        raise EdgefaultError(f"{setting} lists {', '.join(n for n in known if names.count(n) > 1)} twice")
    return names
