"""An E-LDM run as a diffusers pipeline folder (layout: ``gensis.eldm.pipeline``).

``export_diffusers(eldm_run, out)`` rebuilds the run's denoiser and autoencoder exactly as
``gensis.eldm.load_generator`` does, splits the denoiser into diffusers' ``UNet2DConditionModel`` and the
small ``EmbeddingConditioner``, sets up a ``DDIMScheduler`` on the run's noise schedule, and writes everything
with ``save_pretrained``; the conditioning encoder goes to ``OUT/encoder`` as a timm folder.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from gensis.errors import UserError
from gensis.export.atomic import staged_folder
from gensis.rundir import described_by, load_tensors, read_json


def ddim_scheduler(diffusion: dict[str, Any], sample: dict[str, Any], clip: float | None) -> Any:
    """diffusers' ``DDIMScheduler`` with the arithmetic of ``gensis.eldm.ddim_sampler.DDIMSampler``."""
    from diffusers import DDIMScheduler

    return DDIMScheduler(
        num_train_timesteps=int(diffusion["timesteps"]), beta_schedule=diffusion["beta_schedule"],
        beta_start=float(diffusion["beta_start"]), beta_end=float(diffusion["beta_end"]),
        prediction_type=diffusion["prediction"], clip_sample=clip is not None,
        clip_sample_range=float(clip or 1.0), set_alpha_to_one=True, steps_offset=0,
        timestep_spacing=sample["spacing"])


def build_pipeline(eldm_run: str | os.PathLike[str]) -> Any:
    """The E-LDM of a finished ``gensis eldm train`` run as an ``EmbeddingConditionedPipeline`` (CPU, eval)."""
    from gensis.eldm.autoencoder import load_autoencoder
    from gensis.eldm.model import resolve_clip
    from gensis.eldm.pipeline import EmbeddingConditionedPipeline, EmbeddingConditioner
    from gensis.eldm.train import EMA_WEIGHTS, MODEL_JSON, build_denoiser

    from gensis.folder_kind import require_kind

    run = Path(eldm_run)
    require_kind(run, "eldm")  # a pretraining run (export --to timm), a bank, ...: named as such
    if not (run / MODEL_JSON).is_file():
        raise UserError(f"{run} has no {MODEL_JSON}: is it a finished `gensis eldm train` run?")
    info = read_json(run / MODEL_JSON, "E-LDM description")
    with described_by(run / MODEL_JSON, "E-LDM description"):  # a file of another shape: one line
        context = int(info["unet"]["context_dim"])
        den = build_denoiser(info, int(info["emb_dim"]), int(info["latent_channels"]), int(info["latent_size"]))
        den.load_state_dict(load_tensors(run / EMA_WEIGHTS))
        den.eval()
        vq, scale = None, 1.0
        if info["space"] != "pixel":
            ae = load_autoencoder(run / info["autoencoder"]["dir"])
            vq, scale = ae.vq, ae.scale
        smp = info["sample"]
        cond = EmbeddingConditioner(
            emb_dim=int(info["emb_dim"]), context_dim=context, tokens=den.tokens,
            time_embed_dim=None if den.to_time is None else int(den.to_time.out_features), mode=den.mode,
            image_size=int(info["image_size"]), latent_channels=int(info["latent_channels"]),
            latent_size=int(info["latent_size"]), latent_scale=float(scale), pixel_patch=int(info.get("pixel_patch", 1)),
            space=str(info["space"]), guidance=float(smp["guidance"]), num_inference_steps=int(smp["steps"]),
            encoder_identity=str(info["encoder"]["identity"]), weights_identity=str(info["weights_identity"]))
        sd = {f"proj.{k}": v for k, v in den.conditioner.proj.state_dict().items()}
        sd["null"] = den.conditioner.null.detach()
        if den.conditioner.pos is not None:
            sd["pos"] = den.conditioner.pos.detach()
        if den.to_time is not None:
            sd.update({f"to_time.{k}": v for k, v in den.to_time.state_dict().items()})
        cond.load_state_dict(sd)
        cond.eval()
        sched = ddim_scheduler(info["diffusion"], smp, resolve_clip(smp["clip"], info["space"]))
    return EmbeddingConditionedPipeline(unet=den.unet, scheduler=sched, conditioner=cond, vqvae=vq)


def export_diffusers(eldm_run: str | os.PathLike[str], out: str | os.PathLike[str], with_encoder: bool = True) -> Path:
    """Write the pipeline folder (``gensis.eldm.pipeline`` docstring) atomically; returns ``out``."""
    from gensis.export.to_timm import find_encoder, write_timm_folder

    pipe = build_pipeline(eldm_run)
    with staged_folder(out) as tmp:
        pipe.save_pretrained(tmp, safe_serialization=True)
        if with_encoder:
            try:
                src = find_encoder(eldm_run)
            except UserError:
                src = None  # a baseline encoder ('random', 'pixels'): nothing to export
            if src is not None:
                write_timm_folder(src, tmp / "encoder")
    return Path(out)
