"""The training loop: quantization-aware, activation-sparse, optionally sharpness-aware."""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from edgefault.data import Dataset, load_dataset
from edgefault.data.augment import random_crop_flip
from edgefault.errors import EdgefaultError
from edgefault.models import ActivationMonitor, create_model
from edgefault.progress import Progress, say
from edgefault.train.config import TrainConfig
from edgefault.train.mitigations import RunMitigations
from edgefault.train.run_dir import write_run
from edgefault.train.steps import plain_step, saq_step, sam_step


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when present, else the CPU.

    Example:
        >>> resolve_device("cpu")
        device(type='cpu')
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda":  # refused here, in one line, rather than deep inside torch
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise EdgefaultError(f"`device` {name}: no CUDA device on this machine (use cpu or auto)")
        if device.index is not None and device.index >= count:
            raise EdgefaultError(f"`device` {name}: this machine has {count} CUDA device(s), "
                                 f"cuda:0 to cuda:{count - 1}")
    return device


def build_model(config: TrainConfig, data: Dataset) -> nn.Module:
    """Create the recipe's model sized for the dataset's channels, image size and classes.
    """
    channels, height, width = data.input_shape
    if height != width:
        raise EdgefaultError(f"{data.spec}: the built-in models take square images, got {height}x{width}")
    return create_model(config.model, in_channels=channels, input_size=height, num_classes=data.num_classes,
                        **config.model_settings())


@torch.no_grad()
def evaluate(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 500) -> dict:
    """Test accuracy and per-layer activation sparsity of the eval-mode (deployed) model.
    """
    model.eval()
    correct = 0
    with ActivationMonitor(model) as monitor:
        for start in range(0, len(images), batch_size):
            logits = model(images[start : start + batch_size])
            correct += int((logits.argmax(1) == labels[start : start + batch_size]).sum())
    return {"accuracy": correct / len(images), "sparsity": monitor.sparsity()}


def _optimizer(config: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    if config.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.SGD(model.parameters(), lr=config.lr, momentum=0.9, weight_decay=config.weight_decay,
                           nesterov=True)


def train(config: TrainConfig, out: str | Path | None = None, data: Dataset | None = None,
          progress: bool = True) -> tuple[nn.Module, dict]:
    """Train the recipe's model; write a run directory to ``out`` when given.

    Returns the eval-mode model (on CPU) and the metrics dict also saved as metrics.json.
    """
    device = resolve_device(config.device)
    data = data or load_dataset(config.data)
    started = time.perf_counter()
    # A private RNG state: model initialization, shuffling and augmentation depend on the seed only.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = build_model(config, data).to(device)
    generator = torch.Generator().manual_seed(config.seed)
    train_x = torch.from_numpy(data.normalized(data.train_images)).to(device)
    train_y = torch.from_numpy(data.train_labels).to(device)
    test_x = torch.from_numpy(data.normalized(data.test_images)).to(device)
    test_y = torch.from_numpy(data.test_labels).to(device)
    square32 = data.input_shape[1] >= 32
    # 32x32 colour data: crop with 4 px padding and mirror; small digits: shift by 2 px, never mirror.
    padding, flip = (4, True) if square32 else (2, False)

    mitigations = RunMitigations(config, model)
    optimizer = _optimizer(config, model)
    steps_per_epoch = int(np.ceil(len(train_x) / config.batch_size))
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=config.lr, total_steps=config.epochs * steps_per_epoch, pct_start=0.15
    )
    history = []
    for epoch in range(1, config.epochs + 1):
        model.train()
        order = torch.randperm(len(train_x), generator=generator).to(device)
        loss_sum = correct = seen = 0
        label = f"epoch {epoch}/{config.epochs}" if progress else None  # in a log: only the epoch line below
        with Progress(steps_per_epoch, label, "batch", log=False) as bar, \
                ActivationMonitor(model, track_l1=config.act_l1 > 0) as monitor:
            for step in range(steps_per_epoch):
                index = order[step * config.batch_size : (step + 1) * config.batch_size]
                images, labels = train_x[index], train_y[index]
                if config.augment:
                    images = random_crop_flip(images, padding, flip, generator)

                def closure(images=images, labels=labels):
                    logits = model(images)
                    loss = F.cross_entropy(logits, labels)
                    if config.act_l1 > 0:
                        loss = loss + config.act_l1 * monitor.take_l1()
                    return loss + mitigations.extra_loss(), logits

                step_optimizer = mitigations.optimizer(optimizer, closure)
                if config.sharpness == "none":
                    loss, logits = plain_step(closure, step_optimizer)
                elif config.sharpness == "saq":
                    loss, logits = saq_step(model, closure, step_optimizer, config.rho)
                else:
                    loss, logits = sam_step(model, closure, step_optimizer, config.rho,
                                            adaptive=config.sharpness == "asam", eta=config.asam_eta)
                if not math.isfinite(float(loss)):  # diverged: stop here, and write nothing
                    raise EdgefaultError(f"training diverged: the loss is {float(loss)} at epoch {epoch}, step "
                                         f"{step + 1}; nothing written (try a smaller `lr`)")
                mitigations.after_step(loss)
                schedule.step()
                loss_sum += float(loss) * len(labels)
                correct += int((logits.argmax(1) == labels).sum())
                seen += len(labels)
                bar.update()
                if bar.live:
                    bar.set_postfix_str(f"loss={loss_sum / seen:.3f}, acc={correct / seen:.3f}, "
                                        f"sparsity={monitor.sparsity()['overall']:.2f}")
        test = evaluate(model, test_x, test_y)
        history.append({"epoch": epoch, "train_loss": loss_sum / seen, "train_accuracy": correct / seen,
                        "test_accuracy": test["accuracy"], "activation_sparsity": test["sparsity"]["overall"]})
        if progress:
            say(f"epoch {epoch}/{config.epochs}  loss {loss_sum / seen:.4f}  train {correct / seen:.4f}  "
                f"test {test['accuracy']:.4f}  sparsity {test['sparsity']['overall']:.3f}")
    mitigation_info = mitigations.finish()
    model = model.cpu().eval()
    metrics = {
        "epochs": history,
        "test_accuracy": history[-1]["test_accuracy"],
        "activation_sparsity": test["sparsity"],
        "train_seconds": round(time.perf_counter() - started, 2),
        "device": str(device),
        **mitigation_info,
    }
    if out is not None:
        write_run(Path(out), model, config, metrics)
    return model, metrics
