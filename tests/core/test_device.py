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
