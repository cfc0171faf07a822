"""The public API on CUDA (skipped without a GPU; `pytest -m cuda` runs it)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import gensis


@pytest.mark.cuda
def test_encoder_generator_and_pipeline_on_cuda(encoder_run, vq_eldm_run):
    from gensis.export.to_diffusers import build_pipeline

    imgs = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (4, 3, 16, 16), dtype=np.uint8))
    cpu = gensis.load_encoder(encoder_run)(imgs)
    gpu = gensis.load_encoder(encoder_run, device="cuda")(imgs).cpu()
    assert torch.allclose(cpu, gpu, atol=1e-2, rtol=1e-2)

    emb = torch.randn(3, 32)
    pipe_cpu = build_pipeline(vq_eldm_run)
    pipe_gpu = build_pipeline(vq_eldm_run).to("cuda")
    for p in (pipe_cpu, pipe_gpu):
        p.set_progress_bar_config(disable=True)
    a = pipe_cpu(emb, seeds=[1, 2, 3], output_type="uint8").images
    b = pipe_gpu(emb, seeds=[1, 2, 3], output_type="uint8").images
    assert b.device.type == "cpu" and (a.int() - b.int()).abs().max() <= 3  # same seeds: the same noise on any device
    gen = gensis.load_generator(vq_eldm_run, device="cuda", with_encoder=False, amp="off")
    c = gen.generate(emb, [1, 2, 3])
    assert (c.int() - b.int()).abs().float().mean() < 1.0
