"""``cond.tokens``: the encoder embedding as T context tokens for cross-attention.

T = 1 is the single-token denoiser of before the key existed, bit for bit (same parameters, same initial weights
for the same seed, same outputs); T = 4 trains, samples with guidance (DDIM and DPM-Solver++), interpolates,
evaluates, exports to diffusers, reloads with the same images and resumes as an uninterrupted run.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from gensis.errors import UserError

U = {"block_out_channels": [8, 16], "layers_per_block": 1, "attention": [False, True], "mid_attention": False,
     "attention_head_dim": 4, "norm_num_groups": 4}


def _inputs():
    g = torch.Generator().manual_seed(3)
    e = torch.randn(3, 12, generator=g)
    x = torch.randn(3, 3, 8, 8, generator=g)
    return e, x, torch.tensor([10, 500, 900]), torch.tensor([False, True, False])


@pytest.mark.parametrize("mode", ["cross_attn", "both"])
def test_one_token_is_the_single_token_denoiser_bit_for_bit(mode):
    """The layout, the initial weights (same RNG draws, in the same order) and the forward of the denoiser as
    it was before ``cond.tokens``, rebuilt here by hand: proj, ∅ (C,), the UNet, to_time; c[:, None, :] as the
    one context token, c itself on the time path."""
    from diffusers import UNet2DConditionModel

    from gensis.eldm.denoiser import Denoiser, unet_kwargs

    torch.manual_seed(0)
    den = Denoiser(12, 3, 8, U, 16, mode)  # default: one token
    torch.manual_seed(0)
    den1 = Denoiser(12, 3, 8, U, 16, mode, tokens=1)
    torch.manual_seed(0)
    proj = nn.Sequential(nn.LayerNorm(12, elementwise_affine=False), nn.Linear(12, 16), nn.SiLU(), nn.Linear(16, 16))
    null = torch.randn(16) * 0.02
    unet = UNet2DConditionModel(**unet_kwargs(U, 3, 8, 16, mode))
    to_time = nn.Linear(16, unet.time_embedding.linear_2.out_features) if mode == "both" else None
    want = {**{f"conditioner.proj.{k}": v for k, v in proj.state_dict().items()}, "conditioner.null": null,
            **{f"unet.{k}": v for k, v in unet.state_dict().items()},
            **({f"to_time.{k}": v for k, v in to_time.state_dict().items()} if to_time is not None else {})}
    for d in (den, den1):
        got = d.state_dict()
        assert sorted(got) == sorted(want)
        assert all(torch.equal(got[k], want[k]) for k in want)
    e, x, t, drop = _inputs()
    with torch.no_grad():
        c = proj(e)
        c = torch.where(drop.view(-1, 1), null.expand_as(c), c)
        ref = unet(x, t, encoder_hidden_states=c[:, None, :],
                   class_labels=to_time(c) if to_time is not None else None).sample
        assert den.condition(e, drop).shape == (3, 16) and den.null_context.shape == (16,)
        assert torch.equal(den(x, t, emb=e, drop=drop), ref)
        assert torch.equal(den(x, t, den.condition(e, drop)), ref)


def test_four_tokens_shapes_null_and_every_token_used():
    from gensis.eldm.denoiser import Denoiser, context_tokens

    torch.manual_seed(0)
    den = Denoiser(12, 3, 8, U, 16, "both", tokens=4).eval()
    sd = den.state_dict()
    assert sd["conditioner.proj.3.weight"].shape == (64, 16) and sd["conditioner.pos"].shape == (4, 16)
    assert den.null_context.shape == (4, 16)
    e, x, t, drop = _inputs()
    with torch.no_grad():
        c = den.condition(e, drop)
        assert c.shape == (3, 4, 16)
        assert torch.equal(c[1], den.null_context) and not torch.equal(c[0], den.null_context)
        assert not torch.allclose(c[0, 0], c[0, 1])  # four different tokens, not one repeated
        ctx, pooled = context_tokens(c)
        assert ctx.shape == (3, 4, 16) and torch.equal(pooled, c.mean(dim=1))
        out = den(x, t, c)
        assert torch.equal(out, den(x, t, emb=e, drop=drop))
        for k in range(4):  # cross-attention reads each token
            c2 = c.clone()
            c2[:, k] += 1.0
            assert not torch.allclose(den(x, t, c2), out, atol=1e-6), k


def test_four_tokens_with_time_mode_is_refused():
    from gensis.eldm.denoiser import Denoiser

    with pytest.raises(UserError, match="cond.tokens=4") as err:
        Denoiser(12, 3, 8, U, 16, "time", tokens=4)
    assert "\n" not in str(err.value)
    with pytest.raises(UserError, match="cond.tokens=0"):
        Denoiser(12, 3, 8, U, 16, "cross_attn", tokens=0)


@pytest.mark.parametrize("mode", ["cross_attn", "both"])
def test_four_token_generator_guidance_samplers_and_interpolation(make_generator, mode):
    from gensis.eldm.ddim_sampler import DDIMSampler, initial_noise
    from gensis.eldm.generator import slerp

    g = make_generator(mode=mode, tokens=4)
    e1, e2 = torch.randn(3, 12), torch.randn(3, 12)
    a = g.generate_float(e1, [1, 2, 3], guidance=3.0)
    assert a.shape == (3, 3, 8, 8) and torch.isfinite(a).all()
    assert not torch.equal(a, g.generate_float(e1, [1, 2, 3], guidance=1.0))  # guidance matters
    assert torch.equal(g.generate_float(e1[1:2], [2], guidance=3.0), a[1:2])  # rows stay independent
    assert g.generate(e1, [1, 2, 3], sampler="dpmpp", steps=3).shape == (3, 3, 8, 8)
    # w = 1 is the conditional prediction alone (CFG batching with (B, T, C) contexts)
    x_T, _ = initial_noise([1, 2, 3], (3, 8, 8))
    c = g.denoiser.condition(e1)
    cond = DDIMSampler(g.schedule, 4, clip=1.0).sample(lambda x, t, _c: g.denoiser(x, t, c.repeat(len(x) // 3, 1, 1)),
                                                       x_T, c, torch.zeros(4, 16), guidance=7.0)
    assert torch.allclose(g.generate_float(e1, [1, 2, 3], guidance=1.0), cond.clamp(-1, 1), atol=1e-5)
    # slerp happens on the embeddings, before the conditioner
    assert torch.equal(g.interpolate(e1, e2, 1.0, seeds=[4, 5, 6]), g.generate(e1, [4, 5, 6]))
    assert torch.equal(g.interpolate(e1, e2, 0.4, seeds=[4, 5, 6]), g.generate(slerp(e1, e2, 0.4), [4, 5, 6]))


TOKENS = ["cond.mode=cross_attn", "cond.tokens=4", "data.limit=32", "optim.epochs=2"]


@pytest.fixture(scope="module")
def tokens_run(tmp_path_factory, encoder_run, tiny_npz, tiny_overrides, cli) -> Path:
    out = tmp_path_factory.mktemp("eldm-tokens") / "run"
    assert cli("eldm", "train", "--encoder", encoder_run, "--data", tiny_npz, "--out", out, "--preset", "smoke",
                   "--quiet", *tiny_overrides, *TOKENS) == 0
    return out


def test_four_tokens_train_sample_eval_and_reload(tokens_run, tiny_npz, tmp_path, cli):
    from gensis.eldm import load_generator
    from gensis.rundir import load_tensors

    info = json.loads((tokens_run / "eldm.json").read_text())
    assert info["cond"]["tokens"] == 4 and info["cond"]["mode"] == "cross_attn"
    assert load_tensors(tokens_run / "denoiser_ema.safetensors")["conditioner.pos"].shape == (4, 16)
    g = load_generator(tokens_run, amp="off")
    assert g.denoiser.tokens == 4
    e = torch.randn(3, 32)
    x = g.generate(e, [1, 2, 3], guidance=2.0)
    assert x.shape == (3, 3, 16, 16) and x.dtype == torch.uint8
    assert torch.equal(load_generator(tokens_run, amp="off").generate(e, [1, 2, 3], guidance=2.0), x)  # reloaded
    assert g.generate(e, [1, 2, 3], guidance=2.0, sampler="dpmpp").shape == (3, 3, 16, 16)
    out = tmp_path / "fid.json"
    assert cli("eldm", "eval", "--eldm", tokens_run, "--data", tiny_npz, "--json", out, "--quiet") == 0
    r = json.loads(out.read_text())
    assert r["n"] == 12 and r["frechet_distance"] >= 0


def test_four_tokens_export_to_diffusers_same_images(tokens_run, tmp_path):
    from gensis.cli.main import main
    from gensis.eldm import load_generator
    from gensis.eldm.pipeline import EmbeddingConditionedPipeline
    from gensis.rundir import load_tensors

    out = tmp_path / "export"
    assert main(["export", str(tokens_run), "--to", "diffusers", str(out)]) == 0
    assert json.loads((out / "conditioner" / "config.json").read_text())["tokens"] == 4
    pipe = EmbeddingConditionedPipeline.from_pretrained(out)
    pipe.set_progress_bar_config(disable=True)
    assert torch.equal(pipe.conditioner.pos.detach(), load_tensors(tokens_run / "denoiser_ema.safetensors")["conditioner.pos"])
    e = torch.randn(3, 32)
    ours = load_generator(tokens_run, with_encoder=False, amp="off").generate(e, [1, 2, 3], guidance=2.0)
    theirs = pipe(e, seeds=[1, 2, 3], guidance_scale=2.0, output_type="uint8").images
    assert theirs.shape == ours.shape and (theirs.int() - ours.int()).abs().max() <= 1


class _Stop(Exception):
    pass


def _train_until_epoch_1(monkeypatch, cfg: dict, encoder_run, tiny_npz, run: Path) -> None:
    """Train, stopping at the first step of epoch 1 (the epoch-0 checkpoint written), as a killed run."""
    import gensis.eldm.train as eldm_train

    original = eldm_train.ELDMTask.schedule

    def schedule(self, it, epoch):
        if epoch == 1:
            raise _Stop
        return original(self, it, epoch)

    with monkeypatch.context() as m:
        m.setattr(eldm_train.ELDMTask, "schedule", schedule)
        with pytest.raises(_Stop):
            eldm_train.train(cfg, str(encoder_run), str(tiny_npz), run, quiet=True)
    assert (run / "checkpoint.safetensors").is_file() and not (run / "denoiser_ema.safetensors").exists()


def test_four_tokens_resume_matches_uninterrupted(tokens_run, encoder_run, tiny_npz, tiny_overrides, tmp_path,
                                                  monkeypatch):
    """Stopped in epoch 1 (after the epoch-0 checkpoint), --resume: the same EMA weights as ``tokens_run``."""
    import gensis.eldm.train as eldm_train
    from gensis.config import load_config
    from gensis.rundir import load_tensors

    cfg = load_config("eldm", "smoke", [*tiny_overrides, *TOKENS])
    run = tmp_path / "stopped"
    _train_until_epoch_1(monkeypatch, cfg, encoder_run, tiny_npz, run)
    eldm_train.train(cfg, str(encoder_run), str(tiny_npz), run, resume=True, quiet=True)
    a, b = load_tensors(tokens_run / "denoiser_ema.safetensors"), load_tensors(run / "denoiser_ema.safetensors")
    assert a.keys() == b.keys() and "conditioner.pos" in a
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_four_tokens_with_time_mode_is_one_line_before_any_work(tmp_path, encoder_run, tiny_npz, cli, capsys):
    out = tmp_path / "x"
    assert cli("eldm", "train", "--encoder", encoder_run, "--data", tiny_npz, "--out", out, "--preset", "smoke",
               "cond.mode=time", "cond.tokens=4") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cond.tokens=4" in err[0] and "cond.mode" in err[0], err
    assert not out.exists()
    assert cli("eldm", "train", "--encoder", encoder_run, "--data", tiny_npz, "--out", out, "--preset", "smoke",
               "cond.tokens=0") == 2
    assert "cond.tokens" in capsys.readouterr().err


def test_a_run_started_before_cond_tokens_resumes_as_one_token(encoder_run, tiny_npz, tiny_overrides, tmp_path,
                                                               monkeypatch):
    """A run whose config.yaml has no cond.tokens (made before the key existed) resumes with cond.tokens=1, and
    is refused with cond.tokens=4."""
    import yaml

    import gensis.eldm.train as eldm_train
    from gensis.config import load_config

    over = [*tiny_overrides, "data.limit=32", "optim.epochs=2", "cond.mode=both"]
    run = tmp_path / "old"
    _train_until_epoch_1(monkeypatch, load_config("eldm", "smoke", over), encoder_run, tiny_npz, run)
    old = yaml.safe_load((run / "config.yaml").read_text())
    del old["cond"]["tokens"]
    (run / "config.yaml").write_text(yaml.safe_dump(old, sort_keys=False))
    with pytest.raises(UserError, match=r"cond\.tokens \('<absent>' -> 4\)"):
        eldm_train.train(load_config("eldm", "smoke", [*over, "cond.tokens=4"]), str(encoder_run), str(tiny_npz),
                         run, resume=True, quiet=True)
    eldm_train.train(load_config("eldm", "smoke", over), str(encoder_run), str(tiny_npz), run, resume=True, quiet=True)
    assert (run / "denoiser_ema.safetensors").is_file()
