"""Everything checked and loaded before a campaign writes anything: models, dataset, fit, weight memories.

Each model is loaded safely, its input spec resolved (edgefault metadata, its graph, the flags),
the test split fitted to it as ``eval`` does (same code, same messages), one sample run
through ONNX Runtime to confirm the class count,
and its weight memory found. Only when all of that holds does the campaign create its folder,
so bad input leaves nothing behind.
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path
from typing import Any

import numpy as np

from edgefault.campaign.config import CampaignConfig
from edgefault.campaign.worker import WorkerModel, WorkerPayload
from edgefault.cost.accelerator import Accelerator
from edgefault.cost.api import Kernels
from edgefault.data import load_samples
from edgefault.errors import about_model
from edgefault.faults import Injector
from edgefault.faults.activations import ActivationMemory
from edgefault.onnxio import load_model
from edgefault.runtime import InputSpec, check_classes, prepare_inputs, resolve_model_input
from edgefault.runtime.actprobe import activation_memory
from edgefault.runtime.feed import model_classes
from edgefault.runtime.inputs import format_shape


@dataclasses.dataclass(frozen=True, eq=False)
class PreparedCampaign:
    """The checked models and the test split, ready to hand to workers.

    ``tensors[m]`` lists model ``m``'s weight tensors in memory order and ``bit_widths[m]`` its
    widest stored weight code (the per-bit targets); ``act_tensors[m]`` its activation buffers
    (empty unless the campaign faults activations); ``info`` is what ``campaign.json`` records
    about models and data; ``accelerator`` is ``--cost``'s (None without it).
    """

    models: tuple[WorkerModel, ...]
    inputs: dict[str, Any]
    tensors: list[tuple[str, ...]]
    images: int
    info: dict[str, Any]
    bit_widths: list[int] = dataclasses.field(default_factory=list)
    act_tensors: list[tuple[str, ...]] = dataclasses.field(default_factory=list)
    accelerator: Accelerator | None = None

    def payload(self, threads: int) -> WorkerPayload:
        """What every worker receives, with its ONNX Runtime thread count.
        """
        return WorkerPayload(self.models, self.inputs, threads, accelerator=self.accelerator)


def model_names(paths: tuple[str, ...]) -> list[str]:
    """Short display names: file stems, with parent folders added only where stems collide.

    Example:
        >>> model_names(("runs/a/model.onnx", "runs/b/model.onnx", "lenet.onnx"))
        ['a/model', 'b/model', 'lenet']
    """
    parts = [Path(p).with_suffix("").parts for p in paths]
    depth = [1] * len(paths)
    while True:
        names = ["/".join(p[-d:]) for p, d in zip(parts, depth)]
        clashes = {n for n in names if names.count(n) > 1}
        grow = [i for i, n in enumerate(names) if n in clashes and depth[i] < len(parts[i])]
        if not grow:
            return [n if n not in clashes else f"{n}#{i}" for i, n in enumerate(names)]
        for i in grow:
            depth[i] += 1


def prepare_campaign(config: CampaignConfig) -> PreparedCampaign:
    """Load and check every model and the dataset; raise one clear :class:`EdgefaultError` on the first problem.
    """
    samples = load_samples(config.data)
    options = config.input_options()
    count = len(samples.labels) if config.limit is None else min(config.limit, len(samples.labels))
    models, inputs, tensors, bit_widths, described, act_tensors = [], {}, [], [], [], []
    for path, digest, name in zip(config.models, config.model_hashes, model_names(config.models)):
        proto = load_model(path)
        with about_model(path):  # the checks and messages of eval, in the same order
            metadata, io, spec = resolve_model_input(proto, options)
            check_classes(samples, io.num_classes or (metadata.num_classes if metadata else None))
            data = proto.SerializeToString()
            key = _spec_key(spec, options.scale_factor)
            if key not in inputs:
                inputs[key] = prepare_inputs(samples, spec, config.limit, options.scale_factor)
            model_classes(data, io, inputs[key], samples)
            about = {"name": name, "path": str(path), "sha256": digest, "input": dataclasses.asdict(spec),
                     "feed": inputs[key].description}
            if "weights" in config.sites:  # an activations-only campaign needs no weight memory
                injector = Injector(data, config.stored_bits)
                memory = injector.memory(config.include_bias)
                about.update({"weight_tensors": list(memory.names), "weight_bits": memory.nbits,
                              "coverage": injector.discovery.coverage(memory)})
            activations = activation_memories(proto, config)
            if config.accelerator is not None:  # --cost: a model without integer kernels has nothing to cost
                about["cost_kernels"] = [layer.node for layer in Kernels.of(proto, str(path)).layers]
        if "weights" in config.sites:
            tensors.append(memory.names)
            bit_widths.append(max(t.bits for t in memory.tensors if not t.is_bias))
        else:
            tensors.append(())
            bit_widths.append(0)
        if activations:
            about["activations"] = {"tensors": list(activations[0].names),
                                    "bits": {m.format: m.nbits for m in activations},
                                    "coverage": activations[0].coverage_line()}
        act_tensors.append(activations[0].names if activations else ())
        models.append(WorkerModel(name, digest, data, io.input_name, io.output_name, key, config.stored_bits))
        described.append(about)
    fingerprint = hashlib.sha256(np.ascontiguousarray(samples.x[:count]).tobytes()
                                 + np.ascontiguousarray(samples.labels[:count]).tobytes()).hexdigest()
    info = {"models": described, "data": {"spec": samples.spec, "images": count, "fingerprint": fingerprint}}
    return PreparedCampaign(tuple(models), inputs, tensors, count, info, bit_widths, act_tensors,
                            config.cost_accelerator())


def activation_memories(proto, config: CampaignConfig) -> list[ActivationMemory]:
    """The model's activation memory in each format the campaign uses (none when it faults only weights).

    Example:
        >>> config = CampaignConfig.create(["model.onnx"], sites=("weights", "activations"),
        ...                                act_formats=("dense", "bitmap"))
        >>> [m.format for m in activation_memories(load_model("model.onnx"), config)]
        ['dense', 'bitmap']
    """
    if "activations" not in config.sites:
        return []
    dense = activation_memory(proto)
    return [dense.with_format(name) for name in config.act_formats]


def _spec_key(spec: InputSpec, scale: float | None) -> str:
    values = [spec.name, format_shape(spec.shape or ()), spec.layout, spec.dtype, ",".join(map(repr, spec.mean)),
              ",".join(map(repr, spec.std)), repr(scale)]
    return "/".join(values)
