"""Random state of one process (rank), as checkpoint tensors + JSON, so that ``--resume`` is exact per rank.

Captured: Python's ``random``, NumPy's global generator, torch's CPU generator, the CUDA generator of the
training device, and the task's own generators (augmentation, Gen- choices, diffusion noise ...): a
``torch.Generator`` or an object with ``state() -> uint8 tensor`` / ``set_state`` (stored as a tensor), or an
``np.random.Generator`` or ``random.Random`` (stored as JSON).
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator

import numpy as np
import torch

Generators = dict[str, object]  # torch.Generator | np.random.Generator | obj with state()/set_state()


def capture_rng(generators: Generators, device: torch.device) -> tuple[dict[str, torch.Tensor], dict]:
    """This process's random state: (tensors by name, JSON-able dict)."""
    tensors = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        tensors["cuda"] = torch.cuda.get_rng_state(device)
    version, mt, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    js: dict = {"python": [version, list(mt), gauss], "numpy": [kind, keys.tolist(), pos, has_gauss, cached]}
    for name, g in generators.items():
        if isinstance(g, torch.Generator):
            tensors[f"gen.{name}"] = g.get_state()
        elif hasattr(g, "set_state"):
            tensors[f"gen.{name}"] = g.state()
        elif isinstance(g, random.Random):
            v, mt_g, gauss_g = g.getstate()
            js[f"gen.{name}"] = [v, list(mt_g), gauss_g]
        else:
            js[f"gen.{name}"] = g.bit_generator.state
    return tensors, js


def restore_rng(tensors: dict[str, torch.Tensor], js: dict, generators: Generators, device: torch.device) -> None:
    """Inverse of ``capture_rng`` (same generators, same device type)."""
    torch.set_rng_state(tensors["torch"])
    if device.type == "cuda" and "cuda" in tensors:
        torch.cuda.set_rng_state(tensors["cuda"], device)
    version, mt, gauss = js["python"]
    random.setstate((version, tuple(mt), gauss))
    kind, keys, pos, has_gauss, cached = js["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    for name, g in generators.items():
        if isinstance(g, torch.Generator) or hasattr(g, "set_state"):
            g.set_state(tensors[f"gen.{name}"])
        elif isinstance(g, random.Random):
            v, mt_g, gauss_g = js[f"gen.{name}"]
            g.setstate((v, tuple(mt_g), gauss_g))
        else:
            g.bit_generator.state = js[f"gen.{name}"]


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy's global generator and torch (CPU and every CUDA device)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@contextlib.contextmanager
def keeping_global_rng() -> Iterator[None]:
    """Python's ``random``, NumPy's global generator and torch's CPU and CUDA generators are, on leaving, as
    they were on entering (a stage seeds them: a notebook's own ``torch.manual_seed`` would be replaced)."""
    py, nps, cpu = random.getstate(), np.random.get_state(), torch.get_rng_state()
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None
    try:
        yield
    finally:
        random.setstate(py)
        np.random.set_state(nps)
        torch.set_rng_state(cpu)
        if cuda is not None:
            torch.cuda.set_rng_state_all(cuda)
