"""``model.conv_stem``: early convolutions before the ViT's patch embedding (ConvStemPatchEmbed)."""

from __future__ import annotations

import pytest
import torch

from gensis.config import load_config
from gensis.errors import UserError
from gensis.models.backbone import ConvStemPatchEmbed, build_backbone, forward_tokens
from gensis.models.encoder import load_encoder

TINY = {"arch": "vit_tiny_patch16_224", "patch_size": 4, "embed_dim": 32, "depth": 1, "num_heads": 2}


def test_empty_stem_builds_the_plain_vit_bit_for_bit():
    torch.manual_seed(0)
    plain = build_backbone(TINY, 16).state_dict()
    torch.manual_seed(0)
    empty = build_backbone({**TINY, "conv_stem": []}, 16).state_dict()
    assert plain.keys() == empty.keys()
    assert all(torch.equal(plain[k], empty[k]) for k in plain)
    assert load_config("pretrain", "smoke")["model"]["conv_stem"] == []


def test_conv_stem_keeps_the_token_grid_of_every_crop_size_and_learns():
    torch.manual_seed(0)
    m = build_backbone({**TINY, "conv_stem": [8, 12]}, 16)
    assert isinstance(m.patch_embed, ConvStemPatchEmbed)
    assert [c.out_channels for c in m.patch_embed.stem if isinstance(c, torch.nn.Conv2d)] == [8, 12]
    assert m.patch_embed.proj.in_channels == 12
    for size, n in ((16, 16), (8, 4), (12, 9)):  # (16/4)^2, (8/4)^2, (12/4)^2 tokens, as the plain ViT
        t = forward_tokens(m, torch.randn(2, 3, size, size))
        assert t.cls.shape == (2, 32) and t.patch.shape == (2, n, 32)
    masks = torch.zeros(2, 16, dtype=torch.bool)
    masks[:, :5] = True  # iBOT's masked image modeling goes through the same embedding
    out = forward_tokens(m, torch.randn(2, 3, 16, 16), masks, torch.zeros(32))
    out.cls.sum().backward()
    assert m.patch_embed.stem[0].weight.grad.abs().sum() > 0


def test_a_run_with_a_conv_stem_reloads_from_its_config(tmp_path):
    from tests.api.tiny_runs import make_encoder_run

    run = make_encoder_run(tmp_path / "run", overrides=("model.conv_stem=[8]",))
    enc = load_encoder(str(run))
    assert isinstance(enc.model.patch_embed, ConvStemPatchEmbed)
    assert enc(torch.rand(3, 3, 16, 16)).shape == (3, 32)


@pytest.mark.parametrize("bad", ["model.conv_stem=[0]", "model.conv_stem=8"])
def test_bad_conv_stem_is_one_line(bad):
    with pytest.raises(UserError, match="conv_stem"):
        load_config("pretrain", "smoke", [bad])
