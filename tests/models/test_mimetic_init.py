"""``model.init``: timm's initialisation (default), mimetic initialisation of the attention weights, and 2D
sine-cosine position embeddings at the start."""

from __future__ import annotations

import pytest
import torch

from gensis.config import load_config
from gensis.errors import UserError
from gensis.models.backbone import build_backbone, forward_tokens, mimetic_init_, sincos_pos_init_

TINY = {"arch": "vit_tiny_patch16_224", "patch_size": 4, "embed_dim": 48, "depth": 2, "num_heads": 3}


def _products(m: torch.nn.Module) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Per head W_qᵀ·W_k (d, d) and W_o·W_v (d, d) of the first block."""
    attn = m.blocks[0].attn
    d, h = attn.qkv.in_features, attn.num_heads
    k = d // h
    w = attn.qkv.weight
    qk = [w[i * k:(i + 1) * k].T @ w[d + i * k:d + (i + 1) * k] for i in range(h)]
    return qk, attn.proj.weight @ w[2 * d:]


def test_timm_init_is_the_default_bit_for_bit():
    torch.manual_seed(0)
    plain = build_backbone(TINY, 16).state_dict()
    torch.manual_seed(0)
    named = build_backbone({**TINY, "init": "timm"}, 16).state_dict()
    assert all(torch.equal(plain[k], named[k]) for k in plain)
    assert load_config("pretrain", "smoke")["model"]["init"] == "timm"


def test_mimetic_products_are_noise_plus_identity():
    torch.manual_seed(0)
    timm_qk, timm_vo = _products(build_backbone(TINY, 16))
    torch.manual_seed(0)
    m = build_backbone({**TINY, "init": "mimetic"}, 16)
    qk, vo = _products(m)
    d = vo.shape[0]
    # W_o W_v = 0.4 Z - 0.4 I exactly (full rank); per head W_q^T W_k is the best rank-d/h part of 0.7 Z + 0.7 I,
    # whose diagonal stays clearly positive while timm's random weights give a diagonal near 0
    assert vo.diagonal().mean().item() == pytest.approx(-0.4, abs=0.03)
    assert (vo - vo.diagonal().diag()).std().item() == pytest.approx(0.4 / d ** 0.5, rel=0.2)
    for head, base in zip(qk, timm_qk):
        assert head.diagonal().mean().item() > 0.2
        assert abs(base.diagonal().mean().item()) < 0.05
    assert abs(timm_vo.diagonal().mean().item()) < 0.05
    # biases, MLPs and embeddings keep timm's init: only qkv.weight and proj.weight differ from the plain build
    torch.manual_seed(0)
    plain = build_backbone(TINY, 16).state_dict()
    changed = {k for k, v in m.state_dict().items() if not torch.equal(v, plain[k])}
    assert changed == {f"blocks.{i}.attn.{n}.weight" for i in range(2) for n in ("qkv", "proj")}


def test_mimetic_attention_attends_to_similar_tokens():
    """With W_qᵀW_k ≈ identity a token's largest attention weight goes to itself far more often than chance."""
    torch.manual_seed(0)
    m = build_backbone({**TINY, "init": "mimetic", "depth": 1}, 16)
    attn = m.blocks[0].attn
    x = m.blocks[0].norm1(torch.randn(4, 17, 48))  # (B, N, d)
    q, k, _ = attn.qkv(x).reshape(4, 17, 3, 3, 16).permute(2, 0, 3, 1, 4)  # 3 x (B, heads, N, d_head)
    top = (q @ k.transpose(-2, -1)).argmax(-1)  # (B, heads, N)
    assert (top == torch.arange(17)).float().mean() > 0.5  # chance: 1/17


def test_mimetic_is_seeded_and_trains():
    gen = torch.Generator().manual_seed(3)
    a = mimetic_init_(build_backbone(TINY, 16), gen=gen).state_dict()
    gen = torch.Generator().manual_seed(3)
    b = mimetic_init_(build_backbone(TINY, 16), gen=gen).state_dict()
    assert torch.equal(a["blocks.1.attn.qkv.weight"], b["blocks.1.attn.qkv.weight"])
    m = build_backbone({**TINY, "init": "mimetic"}, 16)
    forward_tokens(m, torch.randn(2, 3, 16, 16)).cls[:, 0].sum().backward()  # (a LayerNormed sum is constant)
    assert m.blocks[0].attn.qkv.weight.grad.abs().sum() > 0


def test_a_mimetic_run_reloads_from_its_config(tmp_path):
    from gensis.models.encoder import load_encoder
    from tests.api.tiny_runs import make_encoder_run

    run = make_encoder_run(tmp_path / "run", overrides=("model.init=mimetic",))
    enc = load_encoder(str(run))
    assert enc(torch.rand(3, 3, 16, 16)).shape == (3, 32)


def test_sincos_starts_the_positions_at_the_2d_table():
    from timm.layers import build_sincos2d_pos_embed

    torch.manual_seed(0)
    plain = build_backbone(TINY, 16).state_dict()
    torch.manual_seed(0)
    m = build_backbone({**TINY, "init": "sincos"}, 16)
    pos = m.pos_embed.detach()[0]  # (1 + 16, 48): the class token's row, then the 4x4 grid
    assert torch.equal(pos[0], torch.zeros(48))
    assert torch.equal(pos[1:], build_sincos2d_pos_embed([4, 4], 48))
    # neighbouring patches have more similar positions than distant ones (the geometry a trunc-normal draw lacks)
    assert pos[1] @ pos[2] > pos[1] @ pos[16]
    assert m.pos_embed.requires_grad  # still learned
    changed = {k for k, v in m.state_dict().items() if not torch.equal(v, plain[k])}
    assert changed == {"pos_embed"}
    both = build_backbone({**TINY, "init": "mimetic+sincos"}, 16)
    assert torch.equal(both.pos_embed.detach()[0], pos)
    assert _products(both)[1].diagonal().mean().item() == pytest.approx(-0.4, abs=0.03)
    assert sincos_pos_init_(torch.nn.Linear(2, 2)).weight.shape == (2, 2)  # no position embedding: unchanged


def test_unknown_init_is_one_line():
    with pytest.raises(UserError, match="model.init"):
        load_config("pretrain", "smoke", ["model.init=xavier"])


def test_init_strengths_come_from_the_config():
    """model.mimetic_qk / mimetic_vo set the products' [noise, identity] weights, model.sincos_temperature /
    sincos_scale the table; the defaults are the values used before the keys existed."""
    from timm.layers import build_sincos2d_pos_embed

    torch.manual_seed(0)
    default = build_backbone({**TINY, "init": "mimetic+sincos"}, 16).state_dict()
    torch.manual_seed(0)
    named = build_backbone({**TINY, "init": "mimetic+sincos", "mimetic_qk": [0.7, 0.7], "mimetic_vo": [0.4, 0.4],
                            "sincos_temperature": 10000.0, "sincos_scale": 1.0}, 16).state_dict()
    assert all(torch.equal(default[k], named[k]) for k in default)
    m = build_backbone({**TINY, "init": "mimetic+sincos", "mimetic_qk": [0.0, 1.0], "mimetic_vo": [0.0, 0.2],
                        "sincos_temperature": 10.0, "sincos_scale": 2.0}, 16)
    qk, vo = _products(m)
    assert torch.allclose(vo, -0.2 * torch.eye(48), atol=1e-5)  # no noise: exactly -0.2 I
    for head in qk:  # the best rank-16 part of I: a projection, eigenvalues 1 (16 times) and 0
        assert torch.allclose(head @ head, head, atol=1e-4) and head.trace().item() == pytest.approx(16, abs=1e-3)
    assert torch.allclose(m.pos_embed.detach()[0, 1:], 2.0 * build_sincos2d_pos_embed([4, 4], 48, temperature=10.0))
    cfg = load_config("pretrain", "smoke", ["model.sincos_temperature=100", "model.mimetic_qk=[0.5,1.0]"])["model"]
    assert cfg["sincos_temperature"] == 100 and cfg["mimetic_qk"] == [0.5, 1.0]
    with pytest.raises(UserError, match="model.mimetic_qk"):
        load_config("pretrain", "smoke", ["model.mimetic_qk=[0.5]"])
