"""Fidelity scores (cosine of the generated image's embedding to its conditioning embedding) and the filters
``gensis pretrain --bank`` builds from them (gen.bank_min_score / bank_keep_quantile / bank_weighting)."""

import json
import shutil

import numpy as np
import pytest
import torch

from gensis.bank import BankReader, generate_bank, verify_bank
from gensis.bank.scores import SCORE_DIR, keep_mask, score_name
from gensis.cli.main import main
from gensis.data.sources import open_data
from gensis.eldm.generator import slerp
from gensis.errors import UserError
from gensis.ssl.gen import GenViews

K, ALPHAS = 2, [0.3, 0.7]  # the reference bank's settings (conftest)


def _train(npz):
    return open_data(str(npz), "train", 0.2, 0, None)


def _cos(a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    return torch.nn.functional.cosine_similarity(a.float(), b.float(), dim=1).numpy()


def test_scores_are_stored_and_match_a_recomputation(reference_bank, tiny_npz, fake):
    r = BankReader(reference_bank)
    assert r.has_scores and r.header["scores"]["kind"] == "cosine"
    s = r.scores()
    assert s.shape == (80, K + len(ALPHAS)) and s.dtype == np.float32
    assert np.all(np.abs(s) <= 1.0 + 1e-6) and s.std() > 0
    ds = _train(tiny_npz)
    idx = np.array([0, 5, 17, 40, 79])
    e1 = fake.encode(torch.from_numpy(ds.stack(idx)).permute(0, 3, 1, 2))  # (5, D)
    for k in range(K):  # generative: cos(e(stored image), e(source image))
        got = fake.encode(r.generative_batch(idx, np.full(len(idx), k)))
        np.testing.assert_allclose(s[idx, k], _cos(got, e1), atol=1e-5)
    for j, a in enumerate(ALPHAS):  # interpolated: cos to slerp(e(I_1), e(I_2), alpha), as the condition was built
        imgs, sec = r.interpolated_batch(idx, np.full(len(idx), a))
        e2 = fake.encode(torch.from_numpy(ds.stack(sec)).permute(0, 3, 1, 2))
        cond = slerp(e1, e2, torch.full((len(idx),), a))
        np.testing.assert_allclose(s[idx, K + j], _cos(fake.encode(imgs), cond), atol=1e-5)


def test_verify_reports_quantiles_and_missing_scores(bank_copy, capsys):
    assert main(["bank", "verify", str(bank_copy)]) == 0
    out = capsys.readouterr().out
    assert "fidelity score quantiles" in out and "gen " in out and "interp" in out
    (bank_copy / SCORE_DIR / score_name(3)).unlink()
    rep = verify_bank(bank_copy)
    assert not rep.ok and any("shard-000003.gsb: its fidelity scores scores/score-000003.npy are missing" in p
                              for p in rep.problems)


def test_a_shard_without_its_scores_is_regenerated_identically(bank_copy, reference_bank, tiny_npz, fake, bank_cfg,
                                                                 shard_bytes):
    (bank_copy / SCORE_DIR / score_name(1)).unlink()  # as if killed between the two writes (scores go first)
    res = generate_bank(bank_cfg(), str(tiny_npz), bank_copy, generator=fake, quiet=True)
    assert res.shards_written == 1 and res.complete
    assert shard_bytes(bank_copy) == shard_bytes(reference_bank) and verify_bank(bank_copy).ok


def _old_bank(bank):
    """What a bank made before scores existed looks like."""
    h = json.loads((bank / "bank.json").read_text())
    del h["scores"]
    (bank / "bank.json").write_text(json.dumps(h))
    shutil.rmtree(bank / SCORE_DIR)
    return bank


def test_bank_without_scores_still_works_and_filtering_it_is_one_line(bank_copy, tiny_npz, tmp_path, capsys):
    old = _old_bank(bank_copy)
    r = BankReader(old)
    assert not r.has_scores and r.generative_batch(np.array([3]), np.array([1])).shape == (1, 3, 16, 16)
    rep = verify_bank(old)
    assert rep.ok and "no fidelity scores" in rep.summary()
    with pytest.raises(UserError, match="has no fidelity scores"):
        r.scores()
    rc = main(["pretrain", "--data", str(tiny_npz), "--bank", str(old), "--out", str(tmp_path / "run"),
               "--preset", "smoke", "optim.batch_size=16", "gen.alphas=[0.3,0.7]", "gen.bank_keep_quantile=0.5"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "has no fidelity scores" in err[0]


def test_keep_mask_threshold_and_per_kind_quantile():
    s = np.array([[0.9, 0.1, 0.5], [0.8, 0.3, 0.2], [0.7, 0.6, 0.4], [0.2, 0.4, 0.1]], np.float32)  # K=2
    assert keep_mask(s, 2, 0.5, None).tolist() == (s >= 0.5).tolist()
    q = keep_mask(s, 2, None, 0.5)
    assert q[:, :2].sum() == 4 and q[:, 2].sum() == 2  # top half of each kind
    assert q[:, 2].tolist() == [True, False, True, False]
    assert keep_mask(s, 2, None, 1.0).all()


class _Spy:
    """A BankReader that records which generative k each batch asked for."""

    def __init__(self, bank):
        self.bank, self.ks = bank, []

    def __getattr__(self, name):
        return getattr(self.bank, name)

    def generative_batch(self, idx, k):
        self.ks.append(np.asarray(k).copy())
        return self.bank.generative_batch(idx, k)


def _cfg(**gen):
    g = {"generative_prob": 1.0, "generative_views": [1], "local_from_bank": False, "interp": "bank",
         "alphas": ALPHAS, "disent_weight": 1.0, "bank_min_score": None, "bank_keep_quantile": None,
         "bank_weighting": "none"}
    g.update(gen)
    return {"gen": g}


def _draws(reference_bank, tiny_npz, seed=0, **gen):
    ds = _train(tiny_npz)
    spy = _Spy(BankReader(reference_bank))
    gv = GenViews(_cfg(**gen), ds, None, spy, seed=seed)
    like = torch.zeros(1, 3, 16, 16, dtype=torch.uint8)
    idx = np.arange(80)
    uses, alphas = [], []
    for _ in range(3):
        _, use = gv.generative(idx, like)
        _, _, a = gv.interpolation(idx, like)
        uses.append(use)
        alphas.append(a.numpy())
    return np.stack(spy.ks), np.stack(uses), np.stack(alphas)


def test_filters_change_which_entries_are_drawn_deterministically(reference_bank, tiny_npz):
    s = BankReader(reference_bank).scores()
    idx = np.arange(80)
    k0, use0, a0 = _draws(reference_bank, tiny_npz)
    assert use0.all() and not np.isnan(a0).any()
    kq, useq, aq = _draws(reference_bank, tiny_npz, bank_keep_quantile=0.5)
    keep = keep_mask(s, K, None, 0.5)
    assert not np.array_equal(kq, k0)
    assert keep[idx[None, :], kq][useq].all()                      # only kept generative entries are drawn
    assert np.array_equal(useq, np.broadcast_to(keep[:, :K].any(1), useq.shape))  # none kept: real views
    kept_int = keep[:, K:]  # (80, 2)
    slot = np.where(np.isclose(aq, ALPHAS[0]), 0, 1)
    fin = ~np.isnan(aq)
    assert kept_int[idx[None, :], slot][fin].all()                 # only kept interpolations are drawn
    assert np.array_equal(fin, np.broadcast_to(kept_int.any(1), fin.shape))
    assert (~fin).any() and fin.any()
    again = _draws(reference_bank, tiny_npz, bank_keep_quantile=0.5)
    assert all(np.array_equal(x, y, equal_nan=True) for x, y in zip(again, (kq, useq, aq)))  # seeded
    thr = float(np.median(s[:, :K]))
    kt, uset, _ = _draws(reference_bank, tiny_npz, bank_min_score=thr)
    assert (s[idx[None, :], kt][uset] >= thr).all() and (~uset).any()
    # weighting only: every entry may be drawn, more often the higher its score
    kw, usew, aw = _draws(reference_bank, tiny_npz, bank_weighting="score")
    assert usew.all() and not np.isnan(aw).any()


class _Distill:
    target = "distillation"

    def disentangle_distill(self, s_int, t_mixed, step):
        return ((s_int - t_mixed) ** 2).sum(1).mean()  # a per-sample loss, averaged


def test_filtered_interpolations_get_weight_zero(reference_bank, tiny_npz):
    gv = GenViews(_cfg(bank_min_score=-1.0), _train(tiny_npz), None, BankReader(reference_bank))
    g = torch.Generator().manual_seed(0)
    s_int, t1, t2 = (torch.randn(4, 5, generator=g) for _ in range(3))
    s_out, t_out = {"extra": {"interp": s_int}}, {"global": [t1], "extra": {"secondary": t2}}
    alpha = torch.tensor([0.3, float("nan"), 0.7, float("nan")])
    per = ((s_int - (alpha[:, None] * t1 + (1 - alpha[:, None]) * t2)) ** 2).sum(1)  # (4,)
    got = gv.loss(_Distill(), s_out, t_out, alpha, None)
    torch.testing.assert_close(got, (per[0] + per[2]) / 4)
    none = gv.loss(_Distill(), s_out, t_out, torch.full((4,), float("nan")), None)
    assert none.item() == 0.0


def test_quiet_pretrain_with_a_filtered_bank_prints_only_its_final_line(reference_bank, tiny_npz, tmp_path, capsys):
    """`gensis pretrain --quiet --bank BANK gen.bank_keep_quantile=0.5` printed "[gensis] bank fidelity filter: ..."
    on stderr: the line is the run's start message now, shown without --quiet only (as the other start messages)."""
    args = ["pretrain", "--data", str(tiny_npz), "--bank", str(reference_bank), "--preset", "smoke",
            "optim.batch_size=16", "optim.epochs=1", "train.threads=1", "gen.alphas=[0.3,0.7]",
            "gen.bank_keep_quantile=0.5"]
    capsys.readouterr()
    assert main([*args, "--out", str(tmp_path / "quiet"), "--quiet"]) == 0
    out, err = capsys.readouterr()
    assert err == "" and out == f"pretraining done: {tmp_path / 'quiet'}\n", (out, err)
    assert main([*args, "--out", str(tmp_path / "loud")]) == 0
    err = capsys.readouterr().err
    assert "[gensis] bank fidelity filter: 80/160 generative entries kept, 80/160 interpolations kept" in err, err


@pytest.mark.parametrize("bad", [float("nan"), 2.0, -1.5, "0.5", True])
def test_bank_dataset_refuses_a_min_score_no_cosine_can_pass(reference_bank, bad):
    """`BankDataset(bank, min_score=nan)` or `=2` kept no entry at all, silently (every sample then fell back to
    its real views: Gen-X without generated images); `'0.5'` was a ValueError. `gensis pretrain` refused them
    already (its config rule): the same rule, one line."""
    from gensis import BankDataset

    with pytest.raises(UserError, match=r"bank_min_score .*must be a number in \[-1, 1\]"):
        BankDataset(reference_bank, min_score=bad)[0]
    assert BankDataset(reference_bank, min_score=0.5)[0]["image"] is not None
