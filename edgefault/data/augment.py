"""Training augmentation in plain torch (no torchvision): random crop with padding, horizontal flip."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def random_crop_flip(images: torch.Tensor, padding: int, flip: bool, generator: torch.Generator) -> torch.Tensor:
    """Randomly shift each image by up to ``padding`` pixels (zero fill) and, if ``flip``, mirror half of them.

    Works on a batch at once: pad, then gather one random window per image.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> random_crop_flip(torch.zeros(4, 3, 32, 32), 4, True, g).shape
        torch.Size([4, 3, 32, 32])
    """
    n, _, h, w = images.shape
    if padding > 0:
        padded = F.pad(images, (padding, padding, padding, padding))
        dy = torch.randint(0, 2 * padding + 1, (n,), generator=generator)
        dx = torch.randint(0, 2 * padding + 1, (n,), generator=generator)
        rows = (dy[:, None] + torch.arange(h)[None, :]).to(images.device)  # n x h
        cols = (dx[:, None] + torch.arange(w)[None, :]).to(images.device)  # n x w
        batch = torch.arange(n, device=images.device)[:, None, None]
        images = padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)
    if flip:
        mirror = (torch.rand(n, generator=generator) < 0.5).to(images.device)
        images = torch.where(mirror[:, None, None, None], images.flip(3), images)
    return images.contiguous()
