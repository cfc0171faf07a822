"""The bank runs gensis' E-LDM in micro-batches of up to ``BANK_MICRO_BATCH`` rows (fewer padded rows, less CPU
per image), a pure function of the bank's settings; a bank begun at the older 32 rows is finished at 32, and one
begun in another precision (bf16 autocast on or off) is finished in that precision."""

import json

import pytest

from gensis.bank import generate as bank_generate
from gensis.bank.generate import generate_bank
from gensis.config import load_config
from gensis.eldm.model import load_generator


def _cfg(*extra):
    return load_config("bank", "smoke", ["storage.shard_size=32", "run.batch_size=8", "run.writer_threads=1",
                                         "gen.steps=2", "gen.sampler=ddim", *extra])


def _identity(run, **kw):
    """The identity of the E-LDM as the bank loads it (the bank's sampler settings)."""
    g = _cfg()["gen"]
    return load_generator(run, guidance=g["guidance"], steps=g["steps"], sampler=g["sampler"], **kw).identity


def _eldm_identity(bank):
    return json.loads((bank / "bank.json").read_text())["sources"]["eldm_identity"]


@pytest.mark.slow
def test_micro_batch_is_set_by_the_layout_and_an_older_bank_resumes_at_32(trained_pixel_run, tiny_npz, tmp_path,
                                                                          monkeypatch):
    new = tmp_path / "new"
    res = generate_bank(_cfg(), str(tiny_npz), new, eldm=str(trained_pixel_run), quiet=True)
    assert res.complete
    entries = 32 * 2  # a shard: 32 images x (1 generative + 1 interpolation) <= BANK_MICRO_BATCH
    assert _eldm_identity(new) == _identity(trained_pixel_run, micro_batch=entries)
    assert _eldm_identity(new) != _identity(trained_pixel_run)  # (the loader's default, 32)

    old = tmp_path / "old"  # as gensis made banks before: 32 rows per denoiser call
    monkeypatch.setattr(bank_generate, "BANK_MICRO_BATCH", 32)
    generate_bank(_cfg(), str(tiny_npz), old, eldm=str(trained_pixel_run), quiet=True)
    monkeypatch.undo()
    assert _eldm_identity(old) == _identity(trained_pixel_run)
    shard = sorted((old / "shards").iterdir())[-1]
    before = shard.read_bytes()
    shard.unlink()  # killed before its last shard
    res = generate_bank(_cfg(), str(tiny_npz), old, eldm=str(trained_pixel_run), quiet=True)
    assert res.complete and res.shards_written == 1 and shard.read_bytes() == before  # one bank, the same bytes
    assert _eldm_identity(old) == _identity(trained_pixel_run)


@pytest.mark.slow
def test_a_bank_begun_in_another_precision_is_continued_in_it(trained_pixel_run, tiny_npz, tmp_path, monkeypatch,
                                                             capsys):
    """bf16 autocast is on by default on some machines (CUDA, CPUs with AMX or AVX512-BF16) and off on others: a
    bank begun on one and continued on another was refused, 'made with other settings (sources.eldm_identity:
    ...)', though no setting had changed. It is continued in the precision it was begun in: the same bytes."""
    import gensis.eldm.model as eldm_model

    bank = tmp_path / "bank"
    monkeypatch.setattr(eldm_model, "use_bf16", lambda device, amp="auto": True)  # the machine it was begun on
    assert generate_bank(_cfg(), str(tiny_npz), bank, eldm=str(trained_pixel_run), quiet=True).complete
    begun = _eldm_identity(bank)
    shard = sorted((bank / "shards").iterdir())[-1]
    before = shard.read_bytes()
    shard.unlink()  # killed before its last shard
    monkeypatch.setattr(eldm_model, "use_bf16", lambda device, amp="auto": False)  # another machine: fp32
    res = generate_bank(_cfg(), str(tiny_npz), bank, eldm=str(trained_pixel_run), quiet=True)
    assert res.complete and res.shards_written == 1 and shard.read_bytes() == before
    assert _eldm_identity(bank) == begun
    assert "was begun in bf16" in capsys.readouterr().err
