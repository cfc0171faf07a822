"""`gensis export ELDM --to diffusers`: diffusers' own loaders reproduce the E-LDM's sampler output."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from gensis.cli.main import main

# The plain-torch/diffusers sampling loop a user without gensis writes from docs/api.md.
NO_GENSIS_SAMPLER = """
import json, numpy as np, torch
from pathlib import Path
from diffusers import DDIMScheduler, UNet2DConditionModel, VQModel
from safetensors.torch import load_file

out = Path("{out}")
unet = UNet2DConditionModel.from_pretrained(out / "unet").eval()
sched = DDIMScheduler.from_pretrained(out / "scheduler")
vq = VQModel.from_pretrained(out / "vqvae").eval() if (out / "vqvae").is_dir() else None
cfg = json.loads((out / "conditioner" / "config.json").read_text())
w = load_file(str(out / "conditioner" / "diffusion_pytorch_model.safetensors"))

def condition(e):  # LayerNorm (no affine) -> Linear -> SiLU -> Linear; T > 1: T tokens + position embedding
    h = torch.nn.functional.layer_norm(e, e.shape[-1:])
    h = torch.nn.functional.silu(h @ w["proj.1.weight"].T + w["proj.1.bias"])
    c = h @ w["proj.3.weight"].T + w["proj.3.bias"]                      # (B, T*C)
    T = cfg.get("tokens", 1)
    return c if T == 1 else c.view(len(c), T, -1) + w["pos"]              # (B, C) or (B, T, C)

def predict(x, t, c):
    ctx, pooled = (c[:, None, :], c) if c.ndim == 2 else (c, c.mean(1))   # (B, T, C); the time path's (B, C)
    ctx = ctx if cfg["mode"] != "time" else torch.zeros_like(ctx)
    labels = pooled @ w["to_time.weight"].T + w["to_time.bias"] if "to_time.weight" in w else None
    return unet(x, t, encoder_hidden_states=ctx, class_labels=labels).sample

emb = torch.from_numpy(np.load("emb.npy"))
seeds, guidance, steps = {seeds}, {guidance}, {steps}
shape = (cfg["latent_channels"], cfg["latent_size"], cfg["latent_size"])
x = torch.stack([torch.randn(shape, generator=torch.Generator().manual_seed(s)) for s in seeds])
c = condition(emb)
null = w["null"].expand_as(c)
sched.set_timesteps(steps)
with torch.no_grad():
    for t in sched.timesteps:
        tt = t.expand(len(x))
        both = predict(torch.cat([x, x]), torch.cat([tt, tt]), torch.cat([c, null]))
        eps = both[len(x):] + guidance * (both[:len(x)] - both[len(x):])
        x = sched.step(eps, t, x, use_clipped_model_output=True).prev_sample
    img = vq.decode(x / cfg["latent_scale"]).sample if vq is not None else x
np.save("diffusers.npy", img.clamp(-1, 1).numpy())
"""


@pytest.mark.parametrize("space", ["vq", pytest.param("pixel", marks=pytest.mark.slow), "vq-4-tokens"])
def test_diffusers_models_without_gensis_reproduce_the_eldm_sampler(space, vq_eldm_run, pixel_eldm_run, encoder_run,
                                                                     tmp_path, without_gensis):
    import tiny_runs  # on sys.path through conftest.py

    from gensis.eldm import load_generator

    run = {"vq": vq_eldm_run, "pixel": pixel_eldm_run}.get(space)
    if run is None:  # four context tokens, cross-attention and the time path (their mean)
        run = tiny_runs.make_eldm_run(tmp_path / "eldm-4", encoder_run, "vq", mode="both", tokens=4)
    out = tmp_path / "export"
    assert main(["export", str(run), "--to", "diffusers", str(out)]) == 0
    index = json.loads((out / "model_index.json").read_text())
    assert index["_class_name"] == "EmbeddingConditionedPipeline"
    assert index["unet"] == ["diffusers", "UNet2DConditionModel"]
    assert (out / "vqvae" / "config.json").is_file() == space.startswith("vq")
    assert (out / "encoder" / "config.json").is_file()  # the conditioning encoder, as a timm folder

    gen = load_generator(run, with_encoder=False)
    emb = torch.randn(3, 32)
    np.save(tmp_path / "emb.npy", emb.numpy())
    seeds = [5, 6, 7]
    ours = gen.generate_float(emb, seeds, guidance=2.0, steps=3)
    without_gensis(NO_GENSIS_SAMPLER.format(out=out, seeds=seeds, guidance=2.0, steps=3), tmp_path)
    theirs = torch.from_numpy(np.load(tmp_path / "diffusers.npy"))
    assert theirs.shape == ours.shape == (3, 3, 16, 16)
    assert torch.allclose(theirs, ours, atol=2e-4), (theirs - ours).abs().max()
    other = gen.generate_float(emb, [8, 9, 10], guidance=2.0, steps=3)  # the check can fail: seeds matter
    assert not torch.allclose(theirs, other, atol=1e-2)


def test_pipeline_class_reproduces_generate(vq_eldm_run, tmp_path):
    from gensis.eldm import load_generator
    from gensis.eldm.pipeline import EmbeddingConditionedPipeline

    out = tmp_path / "export"
    main(["export", str(vq_eldm_run), "--to", "diffusers", str(out)])
    pipe = EmbeddingConditionedPipeline.from_pretrained(out)
    pipe.set_progress_bar_config(disable=True)
    gen = load_generator(vq_eldm_run, with_encoder=False)
    emb = torch.randn(2, 32)
    ours = gen.generate(emb, [1, 2])  # the run's defaults: 3 steps, guidance 2
    theirs = pipe(emb, seeds=[1, 2], output_type="uint8").images
    assert theirs.dtype == torch.uint8 and theirs.shape == ours.shape
    assert (theirs.int() - ours.int()).abs().max() <= 1
    pil = pipe(emb[:1], seeds=3, num_inference_steps=2, guidance_scale=1.0).images
    assert pil[0].size == (16, 16)
    ours_eta = gen.generate(emb, [1, 2], eta=1.0)
    theirs_eta = pipe(emb, seeds=[1, 2], eta=1.0, output_type="uint8").images
    assert (theirs_eta.int() - ours_eta.int()).abs().max() <= 1


@pytest.mark.parametrize("mode", ["cross_attn", "time"])
def test_every_conditioning_mode_exports(mode, encoder_run, tmp_path):
    """cross_attn (the paper's family: no class embedding in the UNet) and time (constant context token)."""
    import tiny_runs  # on sys.path through conftest.py

    from gensis.eldm import load_generator
    from gensis.export.to_diffusers import build_pipeline

    run = tiny_runs.make_eldm_run(tmp_path / f"eldm-{mode}", encoder_run, "pixel", mode=mode)
    pipe = build_pipeline(run)
    pipe.set_progress_bar_config(disable=True)
    assert (pipe.conditioner.to_time is None) == (mode == "cross_attn")
    assert (pipe.unet.config.class_embed_type is None) == (mode == "cross_attn")
    emb = torch.randn(2, 32)
    ours = load_generator(run, with_encoder=False).generate(emb, [4, 5])
    theirs = pipe(emb, seeds=[4, 5], output_type="uint8").images
    assert (theirs.int() - ours.int()).abs().max() <= 1
