"""The helper thread of ``gensis.train.overlap``: prefetch order, errors, when it is on, and pretraining runs
that end bit for bit where the same runs on one thread end."""

import json
import threading

import pytest
import torch
from safetensors.torch import load_file

from gensis.errors import UserError
from gensis.train.overlap import Overlap, free_a_core, overlap_enabled


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


def test_train_threads_null_leaves_a_core_to_the_helper_on_a_cpu_only(monkeypatch):
    """``train.threads: null`` ran torch on every core and no helper thread: on 2 cores a demo DINO epoch ran at
    230 images/s against 362 with one thread + the helper (``free_a_core``'s docstring)."""
    cpu = torch.device("cpu")
    calls = []
    monkeypatch.setattr(torch, "get_num_threads", lambda: 4)
    monkeypatch.setattr(torch, "set_num_threads", calls.append)
    monkeypatch.setattr("gensis.train.overlap.usable_cores", lambda: 4)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    free_a_core(cpu, distributed=False)
    assert calls == [3]
    for device, distributed in ((torch.device("cuda"), False), (cpu, True)):  # a GPU; DDP's processes
        free_a_core(device, distributed)
    monkeypatch.setenv("OMP_NUM_THREADS", "4")  # the user's (or the demo's side lane's) own choice
    free_a_core(cpu, distributed=False)
    monkeypatch.delenv("OMP_NUM_THREADS")
    monkeypatch.setattr("gensis.device._thread_share", lambda: 2)  # the demo's main lane
    free_a_core(cpu, distributed=False)
    monkeypatch.setattr("gensis.device._thread_share", None)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)  # already fewer threads than cores
    free_a_core(cpu, distributed=False)
    monkeypatch.setattr("gensis.train.overlap.usable_cores", lambda: 1)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)
    free_a_core(cpu, distributed=False)
    assert calls == [3]


def test_setup_training_frees_a_core_and_an_explicit_count_is_kept(monkeypatch):
    from gensis.distributed import setup_training
    from gensis.train.overlap import usable_cores

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    cores, n = usable_cores(), torch.get_num_threads()
    try:
        torch.set_num_threads(cores)
        device, _, _, _ = setup_training({"device": "cpu", "threads": None, "amp": "off", "seed": 0})
        assert torch.get_num_threads() == max(cores - 1, 1)
        assert overlap_enabled(device, distributed=False) == (cores >= 2)
        setup_training({"device": "cpu", "threads": cores, "amp": "off", "seed": 0})
        assert torch.get_num_threads() == cores
    finally:
        torch.set_num_threads(n)


TINY = ["train.threads=1", "train.amp=off", "train.device=cpu", "data.limit=96", "optim.batch_size=32",
        "optim.epochs=2", "model.embed_dim=32", "model.num_heads=2", "model.depth=1", "model.drop_path_rate=0.1"]


def _run(tmp_path, name, method, extra, monkeypatch, mode):
    import gensis

    monkeypatch.setenv("GENSIS_OVERLAP", mode)
    run = gensis.pretrain("builtin:animal-mnist", tmp_path / name, preset="smoke", method=method,
                          overrides=TINY + extra + ["train.log_every=1"], quiet=True)
    timing = ("images_per_s", "elapsed_s")
    rows = [{k: v for k, v in json.loads(r).items() if k not in timing}
            for r in (run / "metrics.jsonl").read_text().splitlines()]
    return {**{f"student.{k}": v for k, v in load_file(run / "student_backbone.safetensors").items()},
            **{f"teacher.{k}": v for k, v in load_file(run / "teacher_backbone.safetensors").items()}}, rows


@pytest.mark.parametrize("method", ["dino", "ibot", "simclr"])
def test_pretraining_with_the_helper_thread_equals_one_thread(method, tmp_path, monkeypatch):
    """Crops and masks one batch ahead, the teacher next to the student (drop path in the student draws from
    the global generator meanwhile), the backbone's backward split by crop size (two groups here): final
    weights and every logged loss bit for bit the same."""
    (w_on, rows_on), (w_off, rows_off) = (_run(tmp_path, m, method, [], monkeypatch, m) for m in ("on", "off"))
    assert w_on.keys() == w_off.keys()
    assert all(torch.equal(w_on[k], w_off[k]) for k in w_on)
    assert rows_on == rows_off and len(rows_on) >= 6


def test_gen_pixel_with_the_helper_thread_is_reproducible_and_equal_up_to_rounding(tmp_path, monkeypatch):
    """Gen- adds a third crop group (the interpolated view): its gradients join the local crops' on the helper
    thread before they reach the parameters, a sum in another order. Two runs agree bit for bit; against one
    thread, up to rounding."""
    extra = ["gen.interp=pixel"]
    a, b = (_run(tmp_path, f"on{i}", "dino", extra, monkeypatch, "on") for i in range(2))
    off = _run(tmp_path, "off", "dino", extra, monkeypatch, "off")
    assert all(torch.equal(a[0][k], b[0][k]) for k in a[0]) and a[1] == b[1]
    for k in a[0]:
        torch.testing.assert_close(a[0][k], off[0][k], rtol=1e-4, atol=1e-5, msg=k)
    assert [r.get("loss") for r in a[1]] == pytest.approx([r.get("loss") for r in off[1]], rel=1e-4)


@pytest.mark.parametrize("amp, on_helper", [("bf16", False), ("off", True)])
def test_the_teachers_bf16_forward_runs_on_the_training_thread(amp, on_helper, tmp_path, monkeypatch):
    """Under bf16 autocast on a CPU the teacher's forward beside the student's made the student's gradients
    differ from run to run (iBOT with --interp pixel, 3 runs at once on 2 cores: grad norms 99.829 / 99.866 /
    99.866 at step 0); so under bf16 it runs first on the training thread, in fp32 still on the helper."""
    import threading

    from gensis.ssl.train import PretrainTask

    threads = []
    forward = PretrainTask._teacher_forward

    def spy(self, views, extra):
        threads.append(threading.current_thread().name.startswith("gensis-overlap"))
        return forward(self, views, extra)

    monkeypatch.setattr(PretrainTask, "_teacher_forward", spy)
    _run(tmp_path, amp, "dino", [f"train.amp={amp}", "optim.epochs=1", "data.limit=64"], monkeypatch, "on")
    assert threads and all(t == on_helper for t in threads)
