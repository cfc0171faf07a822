"""Pretraining on the CPU under bf16 computes attention explicitly (faster backward); the function is the same.

``set_fused_attention`` switches timm's attention blocks between torch's fused kernel and the explicit
matmul-softmax-matmul; ``PretrainTask`` picks the explicit form only on the CPU under bf16 autocast
(``fused_attention_for_training``), so fp32 runs are unchanged bit for bit.
"""

import pytest
import torch

from gensis.config import load_config
from gensis.models.backbone import (build_backbone, forward_tokens, fused_attention_for_training,
                                    set_fused_attention)


def _fused_flags(module: torch.nn.Module) -> list[bool]:
    return [m.fused_attn for m in module.modules() if hasattr(m, "fused_attn")]


@pytest.mark.parametrize("bf16,tol", [(False, 1e-5), (True, 5e-2)])
def test_explicit_and_fused_attention_are_the_same_function(bf16, tol):
    """Same outputs and same gradients (up to rounding) from both forms, on a seeded tiny ViT and batch."""
    cfg = load_config("pretrain", "smoke")
    torch.manual_seed(0)
    bb = build_backbone(cfg["model"], 28)
    x = torch.randn(8, 3, 28, 28, generator=torch.Generator().manual_seed(1))
    out, grads = {}, {}
    for fused in (True, False):
        assert _fused_flags(set_fused_attention(bb, fused)) == [fused] * cfg["model"]["depth"]
        bb.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            tok = forward_tokens(bb, x)  # cls (B, D), patch (B, N, D)
        out[fused] = torch.cat([tok.cls[:, None], tok.patch], 1).float()  # (B, 1 + N, D)
        out[fused].square().mean().backward()
        grads[fused] = torch.cat([p.grad.flatten() for p in bb.parameters()])
    torch.testing.assert_close(out[False], out[True], atol=tol, rtol=tol)
    torch.testing.assert_close(grads[False], grads[True], atol=tol, rtol=tol * 10)


def test_the_choice_per_device_and_precision():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert fused_attention_for_training(cpu, bf16=True) is False
    assert fused_attention_for_training(cpu, bf16=False) is True  # fp32 runs as before
    assert fused_attention_for_training(cuda, bf16=True) is True
    assert fused_attention_for_training(cuda, bf16=False) is True


@pytest.mark.parametrize("amp,fused", [("bf16", False), ("off", True)])
def test_pretrain_task_sets_the_attention_of_student_and_teacher(amp, fused):
    from gensis.ssl.train import PretrainTask
    from gensis.train.loop import Runtime

    cfg = load_config("pretrain", "smoke", ["data.limit=64", "optim.batch_size=32", "train.device=cpu",
                                            f"train.amp={amp}", "train.threads=1"])
    task = PretrainTask(cfg, "builtin:animal-mnist", Runtime.setup(cfg["train"]))
    depth = cfg["model"]["depth"]
    assert _fused_flags(task.method.student) == [fused] * depth
    assert _fused_flags(task.method.teacher) == [fused] * depth
