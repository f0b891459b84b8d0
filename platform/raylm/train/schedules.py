"""Learning-rate schedules as pure multipliers of the peak rate ``train.lr``.

- ``cosine``: linear warmup, then cosine decay to ``min_lr_ratio`` at the last step
  (Loshchilov & Hutter 2017, eq. 5; Chinchilla decays 10x, ``min_lr_ratio = 0.1``, over a
  schedule matched to the run's token budget, Hoffmann et al. 2022, section 3 and Figure A1).
- ``wsd``: warmup-stable-decay (Hu et al. 2024, "MiniCPM", section 4.1): warmup, a constant
  plateau, then a linear decay to ``min_lr_ratio`` over the final ``decay_fraction`` of steps.
- ``constant``: warmup, then the peak rate.
"""

from __future__ import annotations

import math


def lr_multiplier(step: int, max_steps: int, warmup_steps: int, schedule: str, min_lr_ratio: float,
                  decay_fraction: float = 0.2) -> float:
    """Multiplier for optimizer step ``step`` (0-based: the rate used by the ``step+1``-th update)."""
    if warmup_steps and step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    if schedule == "cosine":
        span = max(1, max_steps - warmup_steps)
        progress = min(1.0, (step - warmup_steps) / span)
        return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    if schedule == "wsd":
        decay_steps = max(1, round(decay_fraction * max_steps))
        decay_start = max(warmup_steps, max_steps - decay_steps)
        if step < decay_start:
            return 1.0
        progress = min(1.0, (step - decay_start + 1) / max(1, max_steps - decay_start))
        return 1.0 - (1.0 - min_lr_ratio) * progress
    raise ValueError(f"unknown schedule {schedule!r}; choose cosine, wsd or constant")
