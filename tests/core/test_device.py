"""amp=auto: bf16 on CUDA, on CPUs with AMX or AVX512-BF16 (narrowed by GENSIS_CPU_BF16); 'off'/'bf16' force."""

import pytest
import torch

import gensis.device as d


@pytest.mark.parametrize("flags,env,expected", [
    ({"avx512_bf16"}, None, True), ({"amx_bf16", "avx512_bf16"}, None, True), ({"avx2"}, None, False),
    ({"avx512_bf16"}, "amx", False), ({"amx_bf16"}, "amx", True), ({"amx_bf16"}, "off", False),
])
def test_auto_on_cpu_follows_the_bf16_instructions(monkeypatch, flags, env, expected):
    monkeypatch.setattr(d, "_cpu_flags", lambda: frozenset(flags))
    if env is None:
        monkeypatch.delenv("GENSIS_CPU_BF16", raising=False)
    else:
        monkeypatch.setenv("GENSIS_CPU_BF16", env)
    cpu = torch.device("cpu")
    assert d.use_bf16(cpu, "auto") is expected
    assert d.use_bf16(cpu, "off") is False and d.use_bf16(cpu, "bf16") is True


def test_real_cpu_flags_are_read():
    flags = d._cpu_flags()
    assert isinstance(flags, frozenset)
    assert d.cpu_has_avx512_bf16() == ("avx512_bf16" in flags)


def test_a_device_the_machine_lacks_is_one_user_error(monkeypatch):
    from gensis.errors import UserError

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for name in ("cuda", "cuda:0"):
        with pytest.raises(UserError, match="CUDA is not available"):
            d.pick_device(name)
    with pytest.raises(UserError, match="unknown device 'gpu'"):
        d.pick_device("gpu")
    with pytest.raises(UserError, match="not supported"):
        d.pick_device("meta")
    assert d.pick_device("cpu") == torch.device("cpu") and d.pick_device("auto") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(UserError, match="1 CUDA device"):
        d.pick_device("cuda:3")
    assert d.pick_device("cuda:0") == torch.device("cuda:0")


def test_pretrain_on_cuda_without_one_is_one_line_exit_2(tmp_path):
    import os
    import subprocess
    import sys

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    r = subprocess.run([sys.executable, "-m", "gensis.cli.main", "pretrain", "--data", "builtin:digits", "--preset",
                        "smoke", "--out", str(tmp_path / "run"), "train.device=cuda"],
                       capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 2, r.stderr
    assert "CUDA is not available" in r.stderr and "Traceback" not in r.stderr


def test_amp_off_from_a_config_is_off(monkeypatch):
    """``train.amp=off`` resolves to YAML's boolean false: bf16 stays off even where ``auto`` turns it on."""
    from gensis.config import load_config

    monkeypatch.setattr(d, "_cpu_flags", lambda: frozenset({"amx_bf16", "avx512_bf16"}))
    monkeypatch.delenv("GENSIS_CPU_BF16", raising=False)
    amp = load_config("pretrain", "smoke", ["train.amp=off"])["train"]["amp"]
    assert d.use_bf16(torch.device("cpu"), amp) is False
    assert d.use_bf16(torch.device("cpu"), load_config("pretrain", "smoke")["train"]["amp"]) is True


def test_an_unknown_amp_is_one_user_error(monkeypatch):
    """`gensis.load_generator(run, amp="fp32")` (or `evaluate_eldm`, `eldm_figures`) took any other word as
    'auto': bf16 on a CPU with AVX512-BF16, the opposite of what was asked."""
    from gensis.errors import UserError

    monkeypatch.setattr(d, "_cpu_flags", lambda: frozenset({"avx512_bf16"}))
    monkeypatch.delenv("GENSIS_CPU_BF16", raising=False)
    for amp in ("fp32", "fp16", "", None):
        with pytest.raises(UserError, match=r"amp must be one of auto, bf16, off, got"):
            d.use_bf16(torch.device("cpu"), amp)  # type: ignore[arg-type]
    assert d.use_bf16(torch.device("cpu"), "auto") is True
