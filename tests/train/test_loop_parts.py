"""Pieces of the shared training loop: foreach clipping/EMA, per-rank random state, the --resume check."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from devices import DEVICES

from gensis.train.foreach import clip_gradients, ema_lerp, ema_update
from gensis.train.resume import resume_differences
from gensis.train.rng import capture_rng, restore_rng


def _params(seed=0, scale=10.0):
    torch.manual_seed(seed)
    ps = [torch.nn.Parameter(torch.randn(s)) for s in [(3, 4), (5,), (2, 2, 2)]]
    for p in ps:
        p.grad = torch.randn_like(p) * scale
    return ps


def test_per_param_clipping_matches_dino_loop():
    ps, ref = _params(), _params()
    total = clip_gradients(ps, "per_param", 3.0)
    expected_total = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in _params()]))
    for p in ref:  # DINO's utils.clip_gradients
        norm = p.grad.data.norm(2)
        factor = 3.0 / (norm + 1e-6)
        if factor < 1:
            p.grad.data.mul_(factor)
    for a, b in zip(ps, ref):
        torch.testing.assert_close(a.grad, b.grad)
    assert total.item() == pytest.approx(expected_total.item(), rel=1e-6)


def test_global_clipping_matches_torch():
    ps, ref = _params(), _params()
    total = clip_gradients(ps, "global", 1.0)
    want = torch.nn.utils.clip_grad_norm_(ref, 1.0)
    assert total.item() == pytest.approx(want.item(), rel=1e-6)
    for a, b in zip(ps, ref):
        torch.testing.assert_close(a.grad, b.grad)
    small = _params(scale=1e-3)
    before = [p.grad.clone() for p in small]
    clip_gradients(small, "global", 1.0)
    assert all(torch.equal(a, p.grad) for a, p in zip(before, small))  # under the limit: untouched


def test_ema_updates():
    t, s = [torch.ones(3), torch.zeros(2)], [torch.zeros(3), torch.ones(2)]
    ema_update(t, s, 0.9)
    torch.testing.assert_close(t[0], torch.full((3,), 0.9))
    torch.testing.assert_close(t[1], torch.full((2,), 0.1))
    ema_lerp(t, s, 0.5)
    torch.testing.assert_close(t[0], torch.full((3,), 0.45))


def test_rng_roundtrip_restores_every_stream():
    g_t = torch.Generator().manual_seed(3)
    g_n = np.random.default_rng(5)
    g_r = random.Random(7)
    gens = {"aug": g_t, "gen": g_n, "masks": g_r}
    tensors, js = capture_rng(gens, torch.device("cpu"))
    import json

    js = json.loads(json.dumps(js))  # as stored in the checkpoint's JSON metadata

    def draw():
        return (random.random(), np.random.rand(), torch.rand(1).item(), torch.rand(1, generator=g_t).item(),
                g_n.random(), g_r.random())

    first = draw()
    draw()
    restore_rng(tensors, js, gens, torch.device("cpu"))
    assert draw() == first


def test_resume_differences_lists_keys_and_inputs_but_not_speed_only():
    old = {"optim": {"lr": 0.1, "epochs": 3}, "data": {"num_workers": 2}, "train": {"threads": 1, "log_every": 10},
           "ae": {"x": 1}}
    new = {"optim": {"lr": 0.2, "epochs": 3}, "data": {"num_workers": 8}, "train": {"threads": 4, "log_every": 1},
           "ae": {"x": 2}}
    d = resume_differences(old, new, {"data": "a", "data_identity": "h1"}, {"data": "b", "data_identity": "h2"},
                           ignore=("ae",))
    assert d == ["optim.lr (0.1 -> 0.2)", "input data (content differs)"]
    same_content = resume_differences(old, old, {"data": "a", "data_identity": "h"}, {"data": "b", "data_identity": "h"})
    assert same_content == []  # a moved dataset with the same content resumes
    no_bank = resume_differences(old, old, {"data_identity": "h", "bank_identity": "b"}, {"data_identity": "h"})
    assert no_bank == ["input bank (given before, not now)"]
    # with a layout (file names + labels + split) in both manifests, changed bytes resume, another layout not
    fixed = resume_differences(old, old, {"data_identity": "h1", "data_layout": "L"},
                               {"data_identity": "h2", "data_layout": "L"})
    assert fixed == []
    other = resume_differences(old, old, {"data_identity": "h1", "data_layout": "L"},
                               {"data_identity": "h1", "data_layout": "M"})
    assert other == ["input data (other files, labels or split)"]
    older = resume_differences(old, old, {"data_identity": "h1"}, {"data_identity": "h2", "data_layout": "L"})
    assert older == ["input data (content differs)"]  # a manifest without a layout: compared by content


def test_ema_updates_skip_on_a_device_flag():
    """With ``skip`` 0. the gated EMA is the EMA; with 1. the target is left bit for bit as it was."""
    for fn, w in ((ema_update, 0.9), (ema_lerp, 0.3)):
        t, s = _params(1), _params(2)
        want = [p.detach().clone() for p in t]
        fn(want, [p.detach() for p in s], w)
        got = [p.detach().clone() for p in t]
        fn(got, [p.detach() for p in s], w, skip=torch.zeros(()))
        for a, b in zip(got, want):
            torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)
        before = [g.clone() for g in got]
        fn(got, [p.detach() for p in s], w, skip=torch.ones(()))
        assert all(torch.equal(a, b) for a, b in zip(got, before))


@pytest.mark.parametrize("device", DEVICES)
def test_deferred_guard_puts_back_buffers_and_state_tensors(device, tmp_path):
    """Deferred: what the forward and the loss change outside the optimizer (batch-norm statistics, a center
    re-assigned as iBOT's is) is kept after a good step and put back after a bad one and every later one;
    the fused AdamW step and a gated EMA are skipped on the same flag; the host learns of it at ``sync``.
    On CUDA the steps run under ``torch.cuda.set_sync_debug_mode("error")``: no host sync in any of it."""
    from gensis.distributed import DistInfo
    from gensis.rundir import RunDir
    from gensis.train.loop import FiniteGuard, Runtime, Task, TrainingDiverged

    dev = torch.device(device)

    class Toy(Task):
        stage, niter = "toy", 4

        def __init__(self):
            torch.manual_seed(0)
            self.model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4)).to(dev)
            self.ema = [p.detach().clone() for p in self.model.parameters()]
            self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=0.1, fused=True)
            self.center = torch.zeros(4, device=dev)

        def state_tensors(self):
            return {"center": self.center}

        def load_state_tensors(self, tensors):
            self.center.copy_(tensors["center"])

    task = Toy()
    rt = Runtime(dev, DistInfo(), False, 0, deferred_check=True)
    guard = FiniteGuard(task, rt, RunDir(tmp_path))
    snap = []
    x = torch.randn(3, 8, 3, device=dev)
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
    try:
        for it, factor in enumerate([1.0, float("nan"), 1.0]):
            snap.append({k: v.clone() for k, v in {**task.model.state_dict(), "center": task.center}.items()})
            snap[-1].update({f"ema{i}": e.clone() for i, e in enumerate(task.ema)})
            guard.save_state()
            out = task.model(x[it])
            loss = out.square().mean() * factor
            task.center = task.center * 0.9 + out.detach().mean(0) * 0.1  # re-assigned, not in place
            task.optimizer.zero_grad()
            loss.backward()
            guard.check(it, loss, clip_gradients(list(task.model.parameters()), "global", 1.0))
            guard.step(task.optimizer)
            ema_update(task.ema, [p.detach() for p in task.model.parameters()], 0.5, skip=guard.skip)
            guard.restore_state()
    finally:
        if device == "cuda":
            torch.cuda.set_sync_debug_mode("default")
    now = {**task.model.state_dict(), "center": task.center, **{f"ema{i}": e for i, e in enumerate(task.ema)}}
    for k in ("1.running_mean", "center", "0.weight", "ema0"):  # the good step 0 was kept
        assert not torch.equal(snap[1][k], snap[0][k]), k
    assert all(torch.equal(now[k], snap[1][k]) for k in now)  # steps 1 (NaN) and 2 (after it): nothing kept
    assert float(task.optimizer.state[task.model[0].weight]["step"]) == 1
    with pytest.raises(TrainingDiverged, match="step 1; stopped; the updates of that step"):
        guard.sync()
