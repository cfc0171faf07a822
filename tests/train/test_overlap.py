"""The helper thread of ``gensis.train.overlap``: prefetch order, errors, when it is on, and pretraining runs
that end bit for bit where the same runs on one thread end."""

import json
import threading

import pytest
import torch
from safetensors.torch import load_file

from gensis.errors import UserError
from gensis.train.overlap import Overlap, overlap_enabled


def test_prefetch_makes_the_next_item_while_the_current_one_is_used():
    ov = Overlap(True)
    started = {i: threading.Event() for i in range(4)}
    threads = set()

    def make(i):
        threads.add(threading.current_thread().name)
        started[i].set()
        return i * 10

    out = []
    for i, x in enumerate(ov.prefetch(make, range(4))):
        if i < 3:  # item i + 1 is being made while the consumer holds item i
            assert started[i + 1].wait(5), f"item {i + 1} not started while item {i} was used"
        else:
            assert all(e.is_set() for e in started.values())
        out.append(x)
    ov.close()
    assert out == [0, 10, 20, 30]
    assert threads and all(name.startswith("gensis-overlap") for name in threads)


def test_inline_when_disabled_and_errors_reach_the_caller():
    ov = Overlap(False)
    ran_on = []
    assert list(ov.prefetch(lambda i: ran_on.append(threading.current_thread()) or i, [1, 2])) == [1, 2]
    assert ran_on == [threading.current_thread()] * 2

    def boom(_):
        raise UserError("bad image")

    for enabled in (False, True):
        o = Overlap(enabled)
        with pytest.raises(UserError, match="bad image"):
            o.submit(boom, 0).result()
        with pytest.raises(UserError, match="bad image"):
            list(o.prefetch(boom, [0, 1]))
        o.close()


def test_when_the_helper_thread_is_used(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)
    monkeypatch.setattr("gensis.train.overlap.usable_cores", lambda: 2)
    monkeypatch.delenv("GENSIS_OVERLAP", raising=False)
    assert overlap_enabled(cpu, distributed=False)
    assert not overlap_enabled(cpu, distributed=True)  # DDP ranks are processes that take the cores
    assert not overlap_enabled(torch.device("cuda"), distributed=False)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)  # intra-op threads on every core
    assert not overlap_enabled(cpu, distributed=False)
    monkeypatch.setenv("GENSIS_OVERLAP", "on")
    assert overlap_enabled(cpu, distributed=False)
    monkeypatch.setenv("GENSIS_OVERLAP", "off")
    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)
    assert not overlap_enabled(cpu, distributed=False)
    monkeypatch.setenv("GENSIS_OVERLAP", "sometimes")
    with pytest.raises(UserError, match="GENSIS_OVERLAP=sometimes"):
        overlap_enabled(cpu, distributed=False)


TINY = ["train.threads=1", "train.amp=off", "train.device=cpu", "data.limit=96", "optim.batch_size=32",
        "optim.epochs=2", "model.embed_dim=32", "model.num_heads=2", "model.depth=1", "model.drop_path_rate=0.1"]


@pytest.mark.parametrize("method,extra", [("dino", ["gen.interp=pixel"]), ("ibot", []), ("simclr", [])])
def test_pretraining_with_the_helper_thread_equals_one_thread(method, extra, tmp_path, monkeypatch):
    """Crops, Gen- views and masks one batch ahead, the teacher next to the student (drop path in the student
    draws from the global generator meanwhile): final weights, centers' effect and losses bit for bit the same."""
    import gensis

    runs = {}
    for mode in ("on", "off"):
        monkeypatch.setenv("GENSIS_OVERLAP", mode)
        run = gensis.pretrain("builtin:animal-mnist", tmp_path / mode, preset="smoke", method=method,
                              overrides=TINY + extra + ["train.log_every=1"], quiet=True)
        runs[mode] = (load_file(run / "student_backbone.safetensors"), load_file(run / "teacher_backbone.safetensors"),
                      (run / "metrics.jsonl").read_text().splitlines())
    (s_on, t_on, m_on), (s_off, t_off, m_off) = runs["on"], runs["off"]
    for a, b in ((s_on, s_off), (t_on, t_off)):
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a)
    timing = ("images_per_s", "elapsed_s")
    rows = {mode: [{k: v for k, v in json.loads(r).items() if k not in timing} for r in runs[mode][2]] for mode in runs}
    assert rows["on"] == rows["off"] and len(rows["on"]) >= 6
