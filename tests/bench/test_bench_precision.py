"""The benchmarks' precision check (benchmarks/_timing.py): it reports what a side ran in, observed, and stops a
benchmark whose sides did not run in the precision its table names. Written after bench_pretrain_throughput
compared gensis in bf16 (``train.amp=off`` read as YAML's false, taken for ``auto`` before d54810f) against
lightly in fp32 while printing fp32 for both."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import gensis
from gensis import device as d

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


def _module(name: str):
    sys.path.insert(0, str(BENCH))
    try:
        spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod
    finally:
        sys.path.remove(str(BENCH))


timing = _module("_timing")


def _global_hooks() -> int:
    return len(torch.nn.modules.module._global_forward_hooks)


def test_probe_sees_fp32_and_bf16_and_removes_its_hook():
    net, x = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2)), torch.randn(3, 4)
    hooks = _global_hooks()
    with timing.PrecisionProbe() as p:
        net(x)
    assert p.name == "fp32" and p.dtypes == {torch.float32}
    with timing.PrecisionProbe() as p:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            net(x)
    assert p.name == "bf16"
    with timing.PrecisionProbe() as p:
        pass
    assert p.name == "none"
    with timing.PrecisionProbe(limit=3) as p:  # removes itself once `limit` Linear calls with grad were seen
        net(x)
        assert _global_hooks() == hooks + 1
        net(x)
        assert _global_hooks() == hooks
    assert p.calls == 3 and _global_hooks() == hooks


def test_require_precision_stops_on_a_mismatch():
    timing.require_precision("gensis", "fp32", "fp32")
    with pytest.raises(SystemExit, match="gensis ran in bf16, the benchmark asked for fp32"):
        timing.require_precision("gensis", "bf16", "fp32")


@pytest.mark.parametrize("amp,want", [("off", "fp32"), ("bf16", "bf16")])
def test_pretrain_runs_in_the_asked_precision_on_an_avx512_bf16_cpu(tmp_path, monkeypatch, amp, want):
    """What bench_pretrain_throughput checks, on a CPU whose ``auto`` is bf16: ``train.amp=off`` trains in fp32
    (observed and by the run's recorded config), ``bf16`` in bf16."""
    monkeypatch.setattr(d, "_cpu_flags", lambda: frozenset({"avx512_bf16"}))
    monkeypatch.delenv("GENSIS_CPU_BF16", raising=False)
    bench = _module("bench_pretrain_throughput")
    run = tmp_path / "run"
    with timing.PrecisionProbe() as p:
        gensis.pretrain("builtin:animal-mnist", run, preset="smoke",
                        overrides=bench.overrides_for("dino", 2, 8, 1, amp) + ["optim.batch_size=8"])
    assert p.name == want
    assert bench.gensis_setting(str(run)) == want
