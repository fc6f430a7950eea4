"""The training-side mitigations of one run, as the loop uses them: clipping, RandBET, learned ranges.

Weight clipping (:mod:`edgefault.train.clipping`), random bit error training
(:mod:`edgefault.train.randbet`) and learned clipping ranges (:mod:`edgefault.train.learned_clip`)
touch the loop at four points, which :class:`RunMitigations` collects: an extra loss term, the
optimizer a step uses, a hook after each optimizer step, and a final pass before saving.
"""

from __future__ import annotations

import torch
from torch import nn

from edgefault.train.clipping import WeightClipper
from edgefault.train.config import TrainConfig
from edgefault.train.learned_clip import bake_learned_clip, enable_learned_clip, range_penalty
from edgefault.train.randbet import RandBET

RANDBET_SEED_OFFSET = 0x5EED  # the bit-error generator's seed differs from the shuffling generator's


class RunMitigations:
    """The mitigations a recipe asks for, bound to its model; inert when it asks for none.

    Build it before the optimizer (learned ranges are parameters).
    """

    def __init__(self, config: TrainConfig, model: nn.Module):
        self.config, self.model = config, model
        device = next(model.parameters()).device
        if config.learned_clip:
            enable_learned_clip(model)
        self.clipper = WeightClipper(model, config.weight_clip, config.weight_clip_per_layer) \
            if config.weight_clip > 0 else None
        self.randbet = None
        if config.randbet_rate > 0:
            generator = torch.Generator(device=device).manual_seed(config.seed + RANDBET_SEED_OFFSET)
            self.randbet = RandBET(model, config.randbet_rate, generator, config.randbet_clamp,
                                   config.randbet_loss_threshold)
        if self.clipper is not None:
            self.clipper()  # train inside the bound from the first step on

    def extra_loss(self) -> torch.Tensor | float:
        """The learned ranges' decay term (0 without learned clipping)."""
        return range_penalty(self.model, self.config.learned_clip_decay) if self.config.learned_clip else 0.0

    def optimizer(self, optimizer: torch.optim.Optimizer, closure) -> torch.optim.Optimizer:
        """The optimizer for this step (RandBET's averaging stand-in once its curriculum has started)."""
        return optimizer if self.randbet is None else self.randbet.wrap(optimizer, closure)

    def after_step(self, clean_loss: torch.Tensor) -> None:
        """Project onto the clipping bound and advance RandBET's curriculum."""
        if self.clipper is not None:
            self.clipper()
        if self.randbet is not None:
            self.randbet.observe(clean_loss)

    def finish(self) -> dict:
        """Bake learned ranges into the weights; return what the metrics record about the mitigations."""
        info: dict = {}
        if self.config.learned_clip:
            info["learned_ranges"] = [round(r, 6) for r in bake_learned_clip(self.model)]
        if self.clipper is not None:
            info["clip_bounds"] = [round(b, 6) for b in self.clipper.bounds()]
        if self.randbet is not None:
            info["randbet_started_step"] = self.randbet.started_at
        return info
