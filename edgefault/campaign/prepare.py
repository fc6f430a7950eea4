"""Everything checked and loaded before a campaign writes anything: models, dataset, fit, weight memories.

Each model is loaded safely, its input spec resolved (edgefault metadata or the flags), the
dataset checked against it, one image run through ONNX Runtime to confirm the class count,
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
from edgefault.data import load_dataset
from edgefault.errors import EdgefaultError
from edgefault.faults import Injector
from edgefault.runtime import (Evaluator, InputSpec, ModelMetadata, SessionSettings, check_dataset_fits,
                               load_model, model_io, prepare_inputs, resolve_input_spec)


@dataclasses.dataclass(frozen=True, eq=False)
class PreparedCampaign:
    """The checked models and the test split, ready to hand to workers.

    ``tensors[m]`` lists model ``m``'s weight tensors in memory order; ``info`` is what
    ``campaign.json`` records about models and data.

    Example:
        >>> prepared = prepare_campaign(config)  # doctest: +SKIP
        >>> prepared.models[0].name, prepared.images  # doctest: +SKIP
        ('lenet', 1000)
    """

    models: tuple[WorkerModel, ...]
    inputs: dict[str, Any]
    tensors: list[tuple[str, ...]]
    images: int
    info: dict[str, Any]

    def payload(self, threads: int) -> WorkerPayload:
        """What every worker receives, with its ONNX Runtime thread count.

        Example:
            >>> prepared.payload(threads=1).threads  # doctest: +SKIP
            1
        """
        return WorkerPayload(self.models, self.inputs, threads)


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

    Example:
        >>> prepare_campaign(CampaignConfig.create(["float.onnx"]))  # doctest: +SKIP
        Traceback (most recent call last):
        edgefault.errors.EdgefaultError: float.onnx: model has no integer weight initializers ...
    """
    dataset = load_dataset(config.data)
    count = len(dataset.test_labels) if config.limit is None else min(config.limit, len(dataset.test_labels))
    models, inputs, tensors, described = [], {}, [], []
    for path, digest, name in zip(config.models, config.model_hashes, model_names(config.models)):
        proto = load_model(path)
        try:
            metadata = ModelMetadata.from_model(proto)
            io = model_io(proto, metadata.input_name if metadata else None)
            spec = resolve_input_spec(io, metadata, config.input_size, config.mean, config.std)
            check_dataset_fits(spec, dataset, io.num_classes or (metadata.num_classes if metadata else None))
            data = proto.SerializeToString()
            key = _spec_key(spec)
            if key not in inputs:
                inputs[key] = prepare_inputs(dataset, spec, config.limit)
            _check_classes(data, io, inputs[key], dataset)
            memory = Injector(data).memory()
        except EdgefaultError as exc:
            message = str(exc)
            raise EdgefaultError(message if message.startswith(str(path)) else f"{path}: {message}") from None
        models.append(WorkerModel(name, digest, data, io.input_name, io.output_name, key))
        tensors.append(memory.names)
        described.append({"name": name, "path": str(path), "sha256": digest, "input": dataclasses.asdict(spec),
                          "weight_tensors": list(memory.names), "weight_bits": memory.nbits})
    fingerprint = hashlib.sha256(np.ascontiguousarray(dataset.test_images[:count]).tobytes()
                                 + np.ascontiguousarray(dataset.test_labels[:count]).tobytes()).hexdigest()
    info = {"models": described, "data": {"spec": dataset.spec, "images": count, "fingerprint": fingerprint}}
    return PreparedCampaign(tuple(models), inputs, tensors, count, info)


def _spec_key(spec: InputSpec) -> str:
    return f"{spec.name}/{'x'.join(map(str, spec.shape))}/{','.join(map(repr, spec.mean))}/{','.join(map(repr, spec.std))}"


def _check_classes(data: bytes, io, prepared, dataset) -> None:
    """Run one image: the graph may not declare its class count, and a broken model should fail here, not per cell."""
    evaluator = Evaluator(data, SessionSettings(intra_op_threads=1), input_name=io.input_name,
                          output_name=io.output_name)
    classes = int(evaluator.logits(prepared.images[:1]).shape[1])
    if dataset.num_classes > classes:
        raise EdgefaultError(f"dataset {dataset.spec} has {dataset.num_classes} classes "
                             f"but the model scores only {classes}")
