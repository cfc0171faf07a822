"""E-LDM: the embedding-conditioned latent diffusion model of Gen-SIS (paper Sec. 3, 9.5.1-2).

Public API
    load_generator(eldm_run_dir, device="cpu", guidance=None, steps=None, sampler=None)
        -> EmbeddingConditionedGenerator (``model.ELDMGenerator``)
    EmbeddingConditionedGenerator, slerp, lerp   (``generator``: the interface the bank asks for images)
"""

from __future__ import annotations

from gensis.eldm.generator import INTERPOLATIONS, EmbeddingConditionedGenerator, lerp, slerp


def load_generator(eldm_run_dir, device="cpu", guidance=None, steps=None, sampler=None, **kw):
    """The E-LDM of a finished ``gensis eldm train`` run (see ``gensis.eldm.model.load_generator``)."""
    from gensis.eldm.model import load_generator as _load

    return _load(eldm_run_dir, device=device, guidance=guidance, steps=steps, sampler=sampler, **kw)


__all__ = ["load_generator", "EmbeddingConditionedGenerator", "slerp", "lerp", "INTERPOLATIONS"]
