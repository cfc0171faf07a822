"""Evaluation on the GPU: the linear heads, trained on CUDA, match the same heads trained on the CPU, and
frozen-encoder features agree across devices (TF32 convolutions/matmuls allow small differences)."""

import numpy as np
import pytest
import torch

from devices import CUDA, DEVICES
from gensis.data.sources import ArrayImageSet
from gensis.eval.linear import LinearConfig, fit_linear_heads, score_linear_heads
from gensis.eval.features import extract_features
from gensis.models.encoder import load_encoder


@pytest.mark.parametrize("device", DEVICES)
def test_linear_heads_on_device_match_cpu(device):
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(2, 120, 16, generator=g)  # (K, N, D)
    y = torch.randint(0, 3, (120,), generator=g)
    feats[:, :, :3] += 2.0 * torch.nn.functional.one_hot(y, 3).float()  # separable along 3 axes
    cfg = LinearConfig(lrs=(0.01, 0.1), epochs=4, batch_size=32)
    w_cpu, b_cpu, _ = fit_linear_heads(feats, y, 3, cfg, show_progress=False, device="cpu")
    w, b, loss = fit_linear_heads(feats, y, 3, cfg, show_progress=False, device=device)
    assert w.device.type == device and torch.isfinite(loss).all()
    torch.testing.assert_close(w.cpu(), w_cpu, rtol=1e-3, atol=1e-4)
    top1, _ = score_linear_heads(w, b, feats[0], y)
    top1_cpu, _ = score_linear_heads(w_cpu, b_cpu, feats[0], y)
    assert torch.allclose(top1, top1_cpu, atol=1.0)  # at most one image in 120 flips


@pytest.mark.parametrize("device", CUDA)
def test_features_agree_across_devices(device):
    rng = np.random.default_rng(0)
    ds = ArrayImageSet(rng.integers(0, 256, (20, 32, 32, 3), dtype=np.uint8), np.arange(20) % 2, name="toy")
    enc = load_encoder("random", image_size=28)
    f_cpu = extract_features(enc, ds, batch_size=8, device="cpu")
    f_gpu = extract_features(enc, ds, batch_size=8, device=device)  # resized on the GPU
    cos = (f_cpu * f_gpu).sum(1) / (np.linalg.norm(f_cpu, axis=1) * np.linalg.norm(f_gpu, axis=1))
    assert cos.min() > 0.99
