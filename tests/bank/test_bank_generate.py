"""Generate → read back → verify, in process with the fake generator."""

import pickle
import shutil

import numpy as np
import pytest
import torch

from gensis.bank import BankReader, generate_bank, verify_bank
from gensis.bank.format import SHARD_DIR, read_shard_header
from gensis.bank.plan import secondaries
from gensis.data.sources import open_data
from gensis.eldm.generator import slerp
from gensis.errors import UserError


def _train(npz, limit=None):
    return open_data(str(npz), "train", 0.2, 0, limit)


def test_reader_matches_generator(reference_bank, tiny_npz, fake):
    r = BankReader(reference_bank)
    ds = _train(tiny_npz)
    assert (r.num_images, r.num_generative, r.alphas, r.image_size) == (len(ds), 2, [0.3, 0.7], 16)
    r.check_dataset(ds)
    idx = np.array([0, 17, 79, 33])
    emb = fake.encode(torch.from_numpy(ds.stack(idx)).permute(0, 3, 1, 2))
    rows = r.entries(idx, np.ones(4, int))
    got = r.generative_batch(idx, np.ones(4, int))
    assert got.dtype == torch.uint8 and got.shape == (4, 3, 16, 16)
    assert torch.equal(got, fake.generate(emb, [int(s) for s in rows["seed"]]))
    # interpolations: nearest stored alpha, secondary from another group (the npz has groups)
    with pytest.warns(UserWarning, match=r"holds alphas \[0.3, 0.7\]"):
        imgs, sec = r.interpolated_batch(idx, np.array([0.31, 0.9, 0.0, 0.5]))
    assert np.array_equal(sec, r.secondary(idx))
    assert np.all(ds.groups[sec] != ds.groups[idx])
    assert np.array_equal(sec, secondaries(0, idx, len(ds), ds.groups))
    e2 = fake.encode(torch.from_numpy(ds.stack(sec)).permute(0, 3, 1, 2))
    alpha = torch.tensor([0.3, 0.7, 0.3, 0.7])
    seeds = [int(s) for s in r.entries(idx, r.layout.alpha_slot(alpha.numpy()))["seed"]]
    assert torch.equal(imgs, fake.generate(slerp(emb, e2, alpha).float(), seeds))


def test_reader_pickles_into_dataloader_workers(reference_bank):
    r = BankReader(reference_bank)
    first = r.generative_batch(np.arange(8), np.zeros(8, int))  # opens shards and a thread pool
    r2 = pickle.loads(pickle.dumps(r))
    assert not r2._shards and r2._pool is None

    class DS(torch.utils.data.Dataset):
        def __len__(self):
            return 8

        def __getitem__(self, i):
            return r.generative_batch(np.array([i]), np.array([0]))[0]

    dl = torch.utils.data.DataLoader(DS(), batch_size=4, num_workers=2, multiprocessing_context="fork")
    assert torch.equal(torch.cat(list(dl)), first)


def test_check_dataset_rejects_other_dataset_and_incomplete_bank(reference_bank, tiny_npz, bank_copy):
    r = BankReader(reference_bank)
    with pytest.raises(UserError, match="generated from dataset .*same --data"):
        r.check_dataset(_train(tiny_npz, limit=50))
    (bank_copy / SHARD_DIR / "shard-000002.gsb").unlink()
    with pytest.raises(UserError, match="incomplete: 1 of 5 shards missing .*shard-000002"):
        BankReader(bank_copy).check_dataset(_train(tiny_npz))


def test_batch_size_sharding_and_resume_do_not_change_bytes(reference_bank, tiny_npz, fake, bank_cfg, tmp_path,
                                                           shard_bytes):
    ref = shard_bytes(reference_bank)
    out = tmp_path / "b"
    res = generate_bank(bank_cfg("run.batch_size=5", "run.writer_threads=1"), str(tiny_npz), out, generator=fake,
                        quiet=True)
    assert res.complete and res.generated == 80 * 4 and shard_bytes(out) == ref
    # delete two shards and an embedding file, rerun: only they are redone, same bytes
    (out / SHARD_DIR / "shard-000001.gsb").unlink()
    (out / SHARD_DIR / "shard-000004.gsb").unlink()
    (out / "embeddings" / "emb-000003.npy").unlink()
    res = generate_bank(bank_cfg(), str(tiny_npz), out, generator=fake, quiet=True)
    assert res.shards_written == 2 and res.shards_skipped == 3 and res.generated == 16 * 4 * 2
    assert shard_bytes(out) == ref and verify_bank(out).ok
    res = generate_bank(bank_cfg(), str(tiny_npz), out, generator=fake, quiet=True)
    assert res.generated == 0 and res.complete


def test_other_settings_on_existing_bank_is_an_error(bank_copy, tiny_npz, fake, bank_cfg):
    with pytest.raises(UserError, match="other settings .*settings.guidance"):
        generate_bank(bank_cfg("gen.guidance=3"), str(tiny_npz), bank_copy, generator=fake, quiet=True)
    with pytest.raises(UserError, match="other settings .*data_identity"):
        generate_bank(bank_cfg("data.limit=40"), str(tiny_npz), bank_copy, generator=fake, quiet=True)


@pytest.mark.parametrize("name", ["notes.tmp", ".notes.backup.tmp"])
def test_a_folder_holding_a_users_tmp_file_is_not_made_a_bank(tiny_npz, fake, bank_cfg, tmp_path, name):
    out = tmp_path / "mine"
    out.mkdir()
    (out / name).write_text("notes")
    with pytest.raises(UserError, match="exists and is not an augmentation bank"):
        generate_bank(bank_cfg(), str(tiny_npz), out, generator=fake, quiet=True)
    assert [p.name for p in out.iterdir()] == [name] and (out / name).read_text() == "notes"


def test_a_run_of_another_stage_is_named_not_made_a_bank(tiny_npz, fake, bank_cfg, tmp_path):
    run = tmp_path / "dino"  # what `gensis pretrain` leaves
    run.mkdir()
    (run / "manifest.json").write_text('{"stage": "pretrain", "status": "done"}')
    (run / "teacher_backbone.safetensors").write_text("")
    with pytest.raises(UserError, match="--out .*dino is a pretraining run, not an augmentation bank: use another"):
        generate_bank(bank_cfg(), str(tiny_npz), run, generator=fake, quiet=True)
    assert sorted(p.name for p in run.iterdir()) == ["manifest.json", "teacher_backbone.safetensors"]


def test_random_secondary_raw_codec_and_resize(tiny_npz, fake, bank_cfg, tmp_path):
    out = tmp_path / "raw"
    res = generate_bank(bank_cfg("gen.secondary=random", "storage.codec=raw", "gen.image_size=12",
                                 "gen.alphas=[0.5]", "gen.num_generative=1"),
                        str(tiny_npz), out, generator=fake, quiet=True)
    assert res.complete
    r = BankReader(out)
    assert r.image_size == 12
    idx = np.arange(80)
    sec = r.secondary(idx)
    assert np.array_equal(sec, secondaries(0, idx, 80)) and np.all(sec != idx)
    imgs, _ = r.interpolated_batch(idx, np.full(80, 0.5))
    assert imgs.shape == (80, 3, 12, 12)
    assert (out / SHARD_DIR / "shard-000000.gsb").stat().st_size > 16 * 2 * 12 * 12 * 3
    assert verify_bank(out, decode=True).ok


def test_verify_names_each_fault(bank_copy, reference_bank, tiny_npz, fake, bank_cfg, tmp_path):
    assert verify_bank(bank_copy, decode=True).ok
    sdir = bank_copy / SHARD_DIR
    # 1. a flipped byte inside an image
    p = sdir / "shard-000001.gsb"
    rows, _, _ = read_shard_header(p)
    data = bytearray(p.read_bytes())
    data[int(rows["offset"][6]) + 10] ^= 0xFF
    p.write_bytes(bytes(data))
    # 2. a missing shard, 3. a partial temporary file, 4. a shard of another bank
    (sdir / "shard-000003.gsb").unlink()
    (sdir / ".gensis-tmp-shard-000003.gsb.999999999-0123abcd.tmp").write_bytes(b"partial")
    other = tmp_path / "other"
    generate_bank(bank_cfg("gen.seed=1"), str(tiny_npz), other, generator=fake, quiet=True)
    shutil.copy(other / SHARD_DIR / "shard-000004.gsb", sdir / "shard-000004.gsb")
    rep = verify_bank(bank_copy)
    text = rep.summary()
    assert not rep.ok and text.startswith("FAILED")
    assert "shard-000001.gsb: entry 6 (image 17 interp alpha=0.3): checksum mismatch" in text
    assert "1 of 5 shards missing: shard-000003.gsb" in text
    assert ".gensis-tmp-shard-000003.gsb.999999999-0123abcd.tmp: partial temporary file" in text
    assert "shard-000004.gsb: meta bank is" in text and "another bank" in text
    assert rep.shards_ok == 2
    # rerunning generate replaces missing/foreign shards; a corrupt payload needs verify --delete-bad first
    res = generate_bank(bank_cfg(), str(tiny_npz), bank_copy, generator=fake, quiet=True)
    assert res.shards_written == 2
    rep = verify_bank(bank_copy, delete_bad=True)
    assert rep.deleted == ["shard-000001.gsb"] and "deleted 1 bad file(s)" in rep.summary()
    res = generate_bank(bank_cfg(), str(tiny_npz), bank_copy, generator=fake, quiet=True)
    assert res.shards_written == 1 and verify_bank(bank_copy).ok


def test_verify_detects_edited_manifest_entry(bank_copy):
    import io
    import json
    import struct
    import zlib

    from gensis.bank.format import FOOTER, MAGIC

    p = bank_copy / SHARD_DIR / "shard-000000.gsb"
    rows, meta, index_offset = read_shard_header(p)
    rows["secondary"][2] += 1  # consistent checksums, wrong content
    payload = p.read_bytes()[:index_offset]
    buf = io.BytesIO()
    np.lib.format.write_array(buf, rows)
    idx_b, meta_b = buf.getvalue(), json.dumps(meta, sort_keys=True).encode()
    footer = FOOTER.pack(MAGIC, index_offset, index_offset + len(idx_b), zlib.crc32(idx_b + meta_b), 1)
    p.write_bytes(payload + idx_b + meta_b + footer)
    text = verify_bank(bank_copy).summary()
    assert "entry 2 (image 0 interp alpha=0.3): secondary" in text


def test_generator_failure_keeps_complete_shards_and_its_own_error(tiny_npz, fake, bank_cfg, tmp_path,
                                                                  reference_bank, shard_bytes):
    class Flaky:
        image_size, identity, encoder_identity = fake.image_size, fake.identity, fake.encoder_identity
        calls = 0

        def encode(self, images):
            return fake.encode(images)

        def generate(self, emb, seeds, **kw):
            Flaky.calls += 1
            if Flaky.calls == 25:  # in shard 2 (10 batches of 7 per shard)
                raise RuntimeError("CUDA out of memory (simulated)")
            return fake.generate(emb, seeds, **kw)

    out = tmp_path / "b"
    with pytest.raises(RuntimeError, match="simulated"):
        generate_bank(bank_cfg(), str(tiny_npz), out, generator=Flaky(), quiet=True)
    kept = sorted(p.name for p in (out / SHARD_DIR).glob("shard-*.gsb"))
    assert kept == ["shard-000000.gsb", "shard-000001.gsb"]
    assert not list(out.rglob("*.tmp"))
    res = generate_bank(bank_cfg(), str(tiny_npz), out, generator=fake, quiet=True)
    assert res.shards_written == 3 and shard_bytes(out) == shard_bytes(reference_bank)


def test_folder_dataset_of_mixed_sizes(tmp_path, fake, bank_cfg):
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in ("a", "b"):
        (tmp_path / "imgs" / c).mkdir(parents=True)
        for j in range(10):
            h, w = (12, 20) if j % 2 else (16, 16)
            Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(tmp_path / "imgs" / c / f"{j}.png")
    out = tmp_path / "bank"
    res = generate_bank(bank_cfg("gen.secondary=random"), str(tmp_path / "imgs"), out, generator=fake, quiet=True)
    assert res.complete and res.num_images == 16 and verify_bank(out, decode=True).ok
    ds = open_data(str(tmp_path / "imgs"), "train")
    BankReader(out).check_dataset(ds)


def test_verify_delete_bad_keeps_a_tmp_file_gensis_did_not_name(bank_copy):
    """``--delete-bad`` removes our own temporary files only; a user's ``*.tmp`` is reported, never deleted."""
    sdir = bank_copy / SHARD_DIR
    mine = [sdir / "notes.tmp", sdir / ".notes.backup.tmp", sdir / ".notes.123-0123abcd.tmp"]
    for p in mine:
        p.write_bytes(b"user data")
    ours = [sdir / ".gensis-tmp-shard-000000.gsb.123-0123abcd.tmp",
            sdir / ".shard-000000.gsb.123-0123abcd.tmp"]  # (an older version's name, of a shard: ours too)
    for p in ours:
        p.write_bytes(b"partial")
    rep = verify_bank(bank_copy, delete_bad=True)
    for p in mine:
        assert f"shards/{p.name}: unexpected file" in rep.summary().replace(SHARD_DIR + "/", "shards/")
        assert p.read_bytes() == b"user data"
    assert all(not p.exists() and p.name in rep.deleted for p in ours)


def test_a_generator_object_lacking_the_contract_is_one_line(tiny_npz, bank_cfg, tmp_path):
    """`gensis.generate_bank(None, data, out, generator=obj)`: an object without `image_size` / `identity` was used
    unchecked (an AttributeError from inside the bank); a factory's adapter was already checked."""

    class Half:
        def encode(self, images):
            return images.float().mean((2, 3))

    with pytest.raises(UserError, match=r"generator Half lacks generate, identity, image_size \(see gensis.eldm"):
        generate_bank(bank_cfg(), str(tiny_npz), tmp_path / "bank", generator=Half(), quiet=True)
    assert not (tmp_path / "bank").exists()


@pytest.mark.parametrize("damage", ["truncated", "other rows"])
def test_a_damaged_embedding_file_is_computed_again(reference_bank, tiny_npz, fake, bank_cfg, tmp_path,
                                                    shard_bytes, damage, capsys):
    """A damaged embeddings/emb-*.npy (a bank copied in part, a disk fault) stopped every rerun with 'cannot read
    embeddings ...', and `bank verify --delete-bad` did not remove it: the bank could not be finished without
    deleting the file by hand. The rerun computes it again, and the bank is the uninterrupted one's bytes."""
    out = tmp_path / "b"
    shutil.copytree(reference_bank, out)
    emb = out / "embeddings" / "emb-000003.npy"
    good = emb.read_bytes()
    if damage == "truncated":
        emb.write_bytes(good[:100])
    else:
        np.save(emb, np.zeros((3, 4), np.float32))
    (out / SHARD_DIR / "shard-000003.gsb").unlink()
    (out / SHARD_DIR / "shard-000001.gsb").unlink()  # its interpolations may read image 3's shard's embeddings
    res = generate_bank(bank_cfg(), str(tiny_npz), out, generator=fake, quiet=False)
    assert res.complete and res.shards_written == 2
    assert "emb-000003.npy is damaged" in capsys.readouterr().err
    assert emb.read_bytes() == good and shard_bytes(out) == shard_bytes(reference_bank) and verify_bank(out).ok


def test_verify_of_an_unfinished_bank_says_to_finish_it_not_to_delete(bank_copy, reference_bank):
    """A bank with shards missing (a killed run) was told 'to repair: gensis bank verify --delete-bad BANK, then
    rerun ...': there was nothing to delete. That advice is kept for a faulty shard."""
    (bank_copy / SHARD_DIR / "shard-000002.gsb").unlink()
    rep = verify_bank(bank_copy)
    assert not rep.ok and "to finish it: rerun the same `gensis bank generate` command" in rep.summary()
    assert "--delete-bad" not in rep.summary()
    p = bank_copy / SHARD_DIR / "shard-000001.gsb"
    data = bytearray(p.read_bytes())
    data[3] ^= 1
    p.write_bytes(bytes(data))
    rep = verify_bank(bank_copy)
    # the command to copy names this bank (it said BANK)
    assert rep.faulty == ["shard-000001.gsb"] and f"to repair: `gensis bank verify --delete-bad {bank_copy}`" in rep.summary()
