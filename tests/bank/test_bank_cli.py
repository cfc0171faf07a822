"""``gensis bank generate|verify|show`` from the command line (in process)."""

import numpy as np
from PIL import Image

from gensis.cli.main import main

FAKE = ["--generator", "gensis.bank.fake:FakeGenerator"]


def test_generate_verify_show(tmp_path, tiny_npz, base_overrides, reference_bank, shard_bytes, capsys):
    out = tmp_path / "bank"
    args = ["bank", "generate", *FAKE, "--data", str(tiny_npz), "--out", str(out), "--preset", "smoke", "--quiet"]
    assert main([*args, *base_overrides]) == 0
    text = capsys.readouterr().out
    assert "images/s" in text and "projected paper ImageNet-1K bank: 1,281,167 images" in text
    assert "bank complete: 80 images x 4 entries" in text
    assert shard_bytes(out) == shard_bytes(reference_bank)  # CLI == API (FakeGenerator's defaults)
    # same command again: nothing to do
    assert main([*args, *base_overrides]) == 0
    assert "nothing to generate (5 shards already complete)" in capsys.readouterr().out
    # another config against the existing bank: one clear line, exit 2
    assert main([*args, *base_overrides, "gen.num_generative=3"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("gensis: error:") and "other settings" in err and "num_generative" in err
    assert len(err.strip().splitlines()) == 1
    # verify
    assert main(["bank", "verify", str(out)]) == 0
    assert capsys.readouterr().out.startswith("OK: bank")
    # show: real | 2 generative | (interp, secondary) x 2 alphas = 7 columns, 3 rows
    png = tmp_path / "grid.png"
    assert main(["bank", "show", str(out), "--out", str(png), "--n", "3"]) == 0
    assert "fidelity score quantiles" in capsys.readouterr().out
    w, h = Image.open(png).size
    assert w > 7 * 96 and 3 * 96 < h < 4 * 96 + 60
    assert main(["bank", "show", str(out), "--out", str(png), "--indices", "0,5"]) == 0
    # a corrupt shard: exit 1, the problem named
    p = out / "shards" / "shard-000000.gsb"
    data = bytearray(p.read_bytes())
    data[3] ^= 1
    p.write_bytes(bytes(data))
    assert main(["bank", "verify", str(out)]) == 1
    err = capsys.readouterr().err
    assert "FAILED" in err and "shard-000000.gsb: entry 0 (image 0 gen k=0): checksum mismatch" in err


def test_config_and_generator_errors(tmp_path, tiny_npz, capsys):
    out = str(tmp_path / "b")
    base = ["bank", "generate", "--data", str(tiny_npz), "--out", out, "--preset", "smoke"]
    assert main([*base, *FAKE, "gen.num_generativ=2"]) == 2
    assert "did you mean 'gen.num_generative'" in capsys.readouterr().err
    assert main([*base, "--generator", "nosuch.module:thing"]) == 2
    assert "cannot import module 'nosuch.module'" in capsys.readouterr().err
    assert main([*base, *FAKE, "storage.codec=gif"]) == 2
    assert "storage.codec=gif: must be one of png, webp, jpeg, raw" in capsys.readouterr().err
    assert main([*base]) == 2
    err = capsys.readouterr().err
    assert "--eldm" in err or "E-LDM" in err
    assert main([*base, *FAKE, "--print-config"]) == 0
    assert "num_generative: 1" in capsys.readouterr().out
    assert main(["bank", "verify", str(tmp_path / "nothing")]) == 2
    assert "bank not found" in capsys.readouterr().err


def test_pretrain_refuses_a_bank_of_another_dataset(tmp_path, reference_bank, make_npz, capsys):
    other = make_npz(tmp_path / "other.npz", seed=1)
    rc = main(["pretrain", "--data", str(other), "--bank", str(reference_bank), "--out", str(tmp_path / "run"),
               "--preset", "smoke", "optim.batch_size=16"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "was generated from dataset 'tiny@train'" in err and "same data.limit" in err
    # the obvious fix first: the bank's own data (pretrain --bank without --data trained on builtin:animal-mnist)
    assert "train on the bank's images (--data " in err and "data.val_fraction=0.2 data.split_seed=0)" in err


def test_group_mode_needs_groups(tmp_path, capsys):
    npz = tmp_path / "nogroups.npz"
    np.savez(npz, images=np.zeros((20, 8, 8, 3), np.uint8))
    rc = main(["bank", "generate", *FAKE, "--data", str(npz), "--out", str(tmp_path / "b"), "--preset", "smoke",
               "gen.secondary=group"])
    assert rc == 2 and "needs a dataset with 'groups'" in capsys.readouterr().err


def test_show_writes_only_a_png_and_checks_its_numbers(bank_copy, tmp_path, capsys):
    """`bank show BANK --out BANK/bank.json` replaced the bank's header with a PNG (the bank unreadable after);
    --out config.yaml, a weights file ... likewise: --out must name a .png file (as `eval umap --out`). --n -2 and
    --seed -1 were numpy tracebacks, --n 0 wrote an empty grid: one line, exit 2, nothing written."""
    from gensis.bank.reader import BankReader

    header = (bank_copy / "bank.json").read_bytes()
    notes = tmp_path / "notes.txt"
    notes.write_text("keep me")
    capsys.readouterr()
    for out, extra, words in [(bank_copy / "bank.json", [], ("--out", ".png")),
                              (bank_copy / "config.yaml", [], ("--out", ".png")),
                              (notes, [], (".png",)),
                              (tmp_path, [], (".png",)),
                              (tmp_path / "g.png", ["--n", "0"], ("--n", ">= 1")),
                              (tmp_path / "g.png", ["--n", "-2"], ("--n",)),
                              (tmp_path / "g.png", ["--seed", "-1"], ("--seed", ">= 0"))]:
        assert main(["bank", "show", str(bank_copy), "--out", str(out), *extra]) == 2, (out, extra)
        err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
        assert len(err) == 1 and err[0].startswith("gensis: error:") and all(w in err[0] for w in words), err
    assert (bank_copy / "bank.json").read_bytes() == header and notes.read_text() == "keep me"
    assert not (tmp_path / "g.png").exists()
    BankReader(bank_copy).check_complete()
    assert main(["bank", "show", str(bank_copy), "--out", str(tmp_path / "G.PNG"), "--n", "2"]) == 0
    assert Image.open(tmp_path / "G.PNG").format == "PNG"


def test_show_refuses_a_png_of_the_user_and_replaces_its_own_grid(bank_copy, tmp_path, capsys):
    """`bank show --out photo.png` over a PNG of the user's overwrote it without a word (`eval umap --out` refused
    it): one line naming it, exit 2, the file unchanged; a grid `bank show` wrote is replaced on a rerun."""
    photo = tmp_path / "photo.png"
    Image.new("RGB", (5, 5), (1, 2, 3)).save(photo)
    before = photo.read_bytes()
    capsys.readouterr()
    assert main(["bank", "show", str(bank_copy), "--out", str(photo), "--n", "2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "photo.png exists and is not a grid `gensis bank show` wrote" in err[0], err
    assert photo.read_bytes() == before
    grid = tmp_path / "grid.png"
    for seed in ("0", "1"):  # the second run replaces the first one's grid
        assert main(["bank", "show", str(bank_copy), "--out", str(grid), "--n", "2", "--seed", seed]) == 0
    assert Image.open(grid).info.get("Software") == "gensis bank show"


def test_projection_on_tiles_is_the_users_data_not_imagenet(tmp_path, base_overrides, capsys):
    """On histology tiles the summary projected the paper's ImageNet-1K bank, which means nothing for tiles; it
    now projects the user's own data when data.limit kept a subset (natural images keep the ImageNet line)."""
    rows = ["file,slide"]
    for s in range(2):
        for k in range(10):
            name = f"S{s}_{k}_0.png"
            Image.fromarray(np.full((8, 8, 3), 10 * s + k, np.uint8)).save(tmp_path / name)
            rows.append(f"{name},S{s}")
    (tmp_path / "tiles.csv").write_text("\n".join(rows) + "\n")
    args = ["bank", "generate", *FAKE, "--data", f"{tmp_path}@all", "--preset", "smoke", "--quiet"]
    assert main([*args, "--out", str(tmp_path / "b1"), *base_overrides, "data.limit=8"]) == 0
    text = capsys.readouterr().out
    assert "ImageNet" not in text
    assert "projected for all 20 images of the data (without data.limit): 20 x 4 entries = 80 images ->" in text
    assert main([*args, "--out", str(tmp_path / "b2"), *base_overrides]) == 0  # the whole data: nothing to project
    assert "projected" not in capsys.readouterr().out


def test_out_that_is_a_file_is_one_line_before_the_generator_is_loaded(tmp_path, tiny_npz, monkeypatch, capsys):
    """`bank generate --out FILE` (or FILE/sub) said 'preparing FILE failed: NotADirectoryError: [Errno 20] ...'
    after the generator was loaded; now the line of the other commands, before any loading; the file is kept."""
    import gensis.bank.generate as gen_mod

    def no_loading(*a, **k):
        raise AssertionError("the generator was loaded")

    monkeypatch.setattr(gen_mod, "load_generator", no_loading)
    f = tmp_path / "notes.txt"
    f.write_text("mine")
    for out, words in [(f, ("is a file, not a folder",)), (f / "sub", ("cannot be made", "notes.txt is a file"))]:
        argv = ["bank", "generate", *FAKE, "--data", str(tiny_npz), "--out", str(out), "--preset", "smoke", "--quiet"]
        assert main(argv) == 2
        err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
        assert len(err) == 1 and all(w in err[0] for w in words) and "Errno" not in err[0], err
    assert f.read_text() == "mine"


def test_a_bank_whose_data_changed_says_so(tmp_path, make_npz, base_overrides, capsys):
    """Continuing a bank whose images changed since it was begun said only 'made with other settings
    (sources.data_identity: bank has '6db0...', this command 'eb06...')': two hashes, and no setting had changed.
    The line now says what the hash means; the bank is untouched."""
    data = make_npz(tmp_path / "d.npz")
    out = tmp_path / "bank"
    argv = ["bank", "generate", *FAKE, "--data", str(data), "--out", str(out), "--preset", "smoke", "--quiet",
            *base_overrides]
    assert main(argv) == 0
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    with np.load(data) as z:
        arrays = dict(z)
    arrays["images"][3] = 255 - arrays["images"][3]  # one image edited since
    np.savez(data, **arrays)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "sources.data_identity" in err and "the data changed since the bank was begun" in err
    assert len(err.strip().splitlines()) == 1
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


def test_a_finished_bank_rerun_draws_no_empty_progress_bar(bank_copy, tiny_npz, base_overrides, monkeypatch, capsys):
    """Rerunning the command of a finished bank printed 'bank generate: 0img [00:00, ?img/s]' (twice, after the
    summary) as well as 'nothing to generate'."""
    monkeypatch.delenv("GENSIS_NO_PROGRESS", raising=False)
    argv = ["bank", "generate", *FAKE, "--data", str(tiny_npz), "--out", str(bank_copy), "--preset", "smoke",
            *base_overrides]
    assert main(argv) == 0
    out, err = capsys.readouterr()
    assert "nothing to generate" in out and "bank generate" not in err, err


def test_guidance_zero_is_said_to_ignore_the_images(tmp_path, tiny_npz, base_overrides, capsys):
    """`gen.guidance=0` (diffusers' way to turn guidance off) samples the unconditional model: a bank whose entries
    ignore their images, made without a word. A note line says so; --help says what 0 and 1 mean."""
    def argv(out, guidance):
        return ["bank", "generate", *FAKE, "--data", str(tiny_npz), "--out", str(tmp_path / out), "--preset",
                "smoke", *base_overrides, f"gen.guidance={guidance}"]

    assert main(argv("b", 0)) == 0
    assert "gen.guidance=0 samples the unconditional model" in capsys.readouterr().err
    assert main(argv("c", 1)) == 0
    assert "unconditional" not in capsys.readouterr().err


def test_a_shard_too_large_to_hold_in_memory_is_said(tmp_path, tiny_npz, base_overrides, monkeypatch, capsys):
    """A huge gen.num_generative made shards of hundreds of thousands of entries, all held in memory until the
    shard is written (and all redone after a kill) without a word; a note now names storage.shard_size."""
    import gensis.bank.generate as gen_mod

    argv = ["bank", "generate", *FAKE, "--data", str(tiny_npz), "--preset", "smoke", *base_overrides]
    assert main([*argv, "--out", str(tmp_path / "a")]) == 0
    assert "lower storage.shard_size" not in capsys.readouterr().err
    monkeypatch.setattr(gen_mod, "SHARD_MEMORY_NOTE", 1000)  # as if the shards were gigabytes
    assert main([*argv, "--out", str(tmp_path / "b")]) == 0
    assert "kept in memory until it is written" in capsys.readouterr().err


def test_a_split_without_images_is_refused_not_made_an_empty_bank(tmp_path, capsys):
    """`bank generate --data X@val` whose val split holds no image made 'bank complete: 0 images x 1 entries'
    (a bank folder with nothing in it, which pretraining then could not use); now one line before any folder."""
    data = tmp_path / "two.npz"  # one image per class: the per-class val split holds none
    np.savez(data, images=np.zeros((2, 8, 8, 3), np.uint8), labels=np.array([0, 1]))
    out = tmp_path / "bank"
    assert main(["bank", "generate", *FAKE, "--data", f"{data}@val", "--out", str(out), "--preset", "smoke",
                 "gen.alphas=[]"]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and "no image to augment: the val split" in err[0], err
    assert not out.exists()


def test_a_full_disk_or_a_refused_folder_while_preparing_the_bank_is_one_plain_line(tmp_path, tiny_npz,
                                                                                    base_overrides, monkeypatch,
                                                                                    capsys):
    """A full disk (or a read-only parent) while the bank folder was made read 'preparing OUT failed: OSError:
    [Errno 28] No space left on device: ...' (Python's repr); now the line every other command prints for it."""
    import errno
    import os

    import gensis.bank.generate as generate

    def disk_full(out, header):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(out / "bank.json"))

    monkeypatch.setattr(generate, "write_header", disk_full)
    out = tmp_path / "bank"
    assert main(["bank", "generate", *FAKE, "--data", str(tiny_npz), "--out", str(out), "--preset", "smoke",
                 "--quiet", *base_overrides]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert err == [f"gensis: error: cannot write {out / 'bank.json'}: No space left on device (fix the cause and run "
                   f"the same command again)"], err
