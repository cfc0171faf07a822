"""``optim.min_updates``: a floor on the number of optimiser updates, so that a small dataset still gets trained.

A budget in epochs scales with the dataset: the ``demo`` preset's 3 epochs are 750 updates on the embedded
8,000 images at batch 32, but 150 on a user's 1,600 images, where neither DINO nor SimCLR leaves raw pixels
behind (docs/pretrain.md, "A floor on the number of updates"). With ``optim.min_updates = U`` a run trains

    epochs = max(optim.epochs, ceil(U / updates_per_epoch))

epochs: a set large enough for ``optim.epochs`` to reach U is trained exactly as without the key; a smaller one
gets more passes over its images, in the same schedule shape per epoch (``optim.warmup_epochs``,
``optim.freeze_last_layer`` and the teacher-temperature warm-up keep their values in epochs). ``null`` (the
default of ``base.yaml``): ``optim.epochs`` exactly, as before the key. DINOv2 fixes the length of an epoch in
iterations for the same reason (``train.OFFICIAL_EPOCH_LENGTH``, 1,250 whatever the dataset); a floor keeps
DINO's "one epoch = one pass" wherever the set is large enough.
"""

from __future__ import annotations

import math


def epochs_for(epochs: int, min_updates: int | None, updates_per_epoch: int) -> int:
    """``optim.epochs`` raised to reach ``min_updates`` updates of ``updates_per_epoch`` each (module docstring)."""
    epochs = int(epochs)
    if min_updates is None or updates_per_epoch < 1:
        return epochs
    return max(epochs, math.ceil(int(min_updates) / int(updates_per_epoch)))


def raised_note(epochs: int, trained: int, updates_per_epoch: int, min_updates: int | None,
                key: str = "optim") -> str | None:
    """One line saying why ``trained`` epochs run instead of ``epochs`` (None when they are the same)."""
    if trained == int(epochs):
        return None
    return (f"[gensis] {trained} epochs instead of {key}.epochs={epochs}: {updates_per_epoch} updates per epoch on "
            f"this data, and {key}.min_updates={min_updates} asks for at least {min_updates} "
            f"({trained * updates_per_epoch} in all; {key}.min_updates=null trains {key}.epochs exactly)")
