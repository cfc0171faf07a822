"""The E-LDM generator and samplers on a GPU: rows stay independent of their batch (the bank's contract),
the initial noise comes from per-row CPU generators (so a seed gives nearly the same image on any device),
and the output is uint8 on the CPU."""

import pytest
import torch

from devices import CUDA, DEVICES


def _on(g, device):
    g.denoiser.to(device)
    g.device = torch.device(device)
    return g


@pytest.mark.parametrize("sampler", ["ddim", "dpmpp"])
@pytest.mark.parametrize("device", DEVICES)
def test_rows_independent_of_the_batch_on_device(make_generator, device, sampler):
    g = _on(make_generator(), device)
    e = torch.randn(5, 12)
    full = g.generate(e, [10, 11, 12, 13, 14], sampler=sampler)
    assert full.device.type == "cpu" and full.dtype == torch.uint8 and full.shape == (5, 3, 8, 8)
    part = g.generate(e[[3, 1]], [13, 11], sampler=sampler)
    assert (part.int() - full[[3, 1]].int()).abs().max() <= 1  # same micro-batch shape: same kernels


@pytest.mark.parametrize("device", CUDA)
def test_gpu_images_match_cpu_images(make_generator, device):
    e = torch.randn(4, 12)
    cpu = make_generator().generate(e, [1, 2, 3, 4])
    gpu = _on(make_generator(), device).generate(e, [1, 2, 3, 4])
    diff = (cpu.float() - gpu.float()).abs()
    assert diff.mean() < 2.0 and diff.max() <= 16  # TF32 convolutions, a few DDIM steps


@pytest.mark.parametrize("device", CUDA)
def test_stochastic_ddim_on_gpu(make_generator, device):
    g = _on(make_generator(), device)
    e = torch.randn(3, 12)
    a = g.generate(e, [5, 6, 7], eta=1.0)
    b = g.generate(e[[2]], [7], eta=1.0)
    assert (a[2:].int() - b.int()).abs().max() <= 1  # η-noise from the row's own generator
