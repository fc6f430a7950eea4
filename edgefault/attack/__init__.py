"""The worst case: adversarial bit flips on a run's deployed model (progressive bit search, Rakin et al. 2019).

:func:`attack_run` searches the flips, measures each in ONNX Runtime and writes a replayable
fault map; :func:`flips_to_break` gives the flips needed to reach chance over several attack
batches, for leaderboards and studies.

Example:
    >>> from edgefault.attack import AttackSettings
    >>> AttackSettings(flips=50).flips
    50
"""

from edgefault.attack.config import AttackResult, AttackSettings, FlipsToBreak, RandomContrast
from edgefault.attack.run import attack_run, deploy, flips_to_break, summary_line
from edgefault.attack.search import Flip, bit_candidates, progressive_bit_search
from edgefault.attack.twin import CodeTwin

__all__ = [
    "AttackResult",
    "AttackSettings",
    "CodeTwin",
    "Flip",
    "FlipsToBreak",
    "RandomContrast",
    "attack_run",
    "bit_candidates",
    "deploy",
    "flips_to_break",
    "progressive_bit_search",
    "summary_line",
]
