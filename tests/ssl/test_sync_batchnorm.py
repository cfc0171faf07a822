"""BatchNorm in a head (SimCLR's projection MLP, DINO's ``dino.use_bn_in_head``) becomes SyncBatchNorm under a
NCCL process group only. It was converted whenever a process group existed on a machine with a GPU, so
``torchrun ... pretrain --method simclr train.device=cpu`` on a GPU node (a gloo group, on the CPU) stopped at
its first step with torch's "SyncBatchNorm expected input tensor to be on GPU"."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
from torch import nn

from gensis.config import load_config
from gensis.ssl.methods import build_method

TINY = ["data.image_size=16", "model.patch_size=4", "model.embed_dim=32", "model.depth=1", "model.num_heads=2",
        "aug.local_size=8", "simclr.mlp_dim=16", "simclr.emb_dim=8", "dino.out_dim=16", "dino.hidden_dim=16",
        "dino.bottleneck_dim=8", "dino.use_bn_in_head=true"]


@pytest.fixture
def gloo_on_a_gpu_machine(tmp_path, monkeypatch):
    """A (one-process) gloo group, as torchrun makes with train.device=cpu, where torch sees a GPU."""
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'init'}", rank=0, world_size=1)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    try:
        yield
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("name", ["simclr", "dino"])
def test_no_sync_batchnorm_under_gloo(name, gloo_on_a_gpu_machine):
    m = build_method(load_config("pretrain", "smoke", [f"method={name}", *TINY]))
    layers = list(m.student.modules())
    assert not any(isinstance(l, nn.SyncBatchNorm) for l in layers)
    assert any(isinstance(l, nn.BatchNorm1d) for l in layers)
    with torch.no_grad():
        m.student.train()
        bn_user = m.student.mlp if name == "simclr" else m.student.head
        bn_user(torch.randn(4, 32))  # on the CPU: torch's SyncBatchNorm would refuse


@pytest.mark.parametrize("name", ["simclr", "dino"])
def test_sync_batchnorm_under_nccl(name, gloo_on_a_gpu_machine, monkeypatch):
    monkeypatch.setattr(dist, "get_backend", lambda *a: "nccl")  # what torchrun on GPUs makes
    m = build_method(load_config("pretrain", "smoke", [f"method={name}", *TINY]))
    assert any(isinstance(l, nn.SyncBatchNorm) for l in m.student.modules())
