"""What a researcher plausibly passes from a notebook, right or wrong: the right forms work, the wrong ones are
one ``UserError`` naming the problem (not a TypeError/RuntimeError from deep inside numpy or torch)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

import gensis
from gensis.errors import UserError


def _u8(n: int = 4, size: int = 16) -> torch.Tensor:
    return torch.randint(0, 256, (n, 3, size, size), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)


class _Items(torch.utils.data.Dataset):
    """A torch Dataset whose items are whatever ``make(i)`` returns."""

    def __init__(self, make, n: int = 6):
        self.make, self.n = make, n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        return self.make(i)


def test_batches_as_tensors_in_either_layout_and_dtype():
    x = _u8()
    ref = gensis.as_image_set(x)
    assert ref.get(2).shape == (16, 16, 3) and np.array_equal(ref.get(2), x[2].permute(1, 2, 0).numpy())
    nhwc = gensis.as_image_set(x.permute(0, 2, 3, 1))  # channels last: same images, not a garbled reshape
    assert np.array_equal(nhwc.get(2), ref.get(2))
    floats = gensis.as_image_set(x.float() / 255)  # what torchvision's ToDtype(scale=True) gives: accepted
    assert np.array_equal(floats.get(2), ref.get(2))
    grey = gensis.as_image_set(x[:, :1])
    assert grey.get(0).shape == (16, 16, 3) and np.array_equal(grey.get(0)[..., 2], x[0, 0].numpy())


@pytest.mark.parametrize("bad,match", [
    (_u8()[0], r"batch \(N, 3, H, W\).*x\[None\]"),  # one (3, H, W) image: not 3 grey images
    (_u8().float(), "unscaled 0..255"),
    (_u8().float() / 255 * 4 - 2, "already normalized"),
    (_u8().long(), "uint8"),
    (torch.zeros(2, 5, 16, 16, dtype=torch.uint8), "must be"),
])
def test_wrong_tensor_batches_are_one_user_error(bad, match):
    with pytest.raises(UserError, match=match):
        gensis.as_image_set(bad)


def test_lists_of_pil_images_and_of_paths(tmp_path):
    rng = np.random.default_rng(0)
    arrays = [rng.integers(0, 256, (12, 10 + i, 3), dtype=np.uint8) for i in range(3)]  # mixed sizes
    paths = []
    for i, a in enumerate(arrays):
        Image.fromarray(a).save(tmp_path / f"{i}.png")
        paths.append(tmp_path / f"{i}.png")
    from_paths = gensis.as_image_set(paths)  # Path objects
    from_strs = gensis.as_image_set([str(p) for p in paths])
    from_pil = gensis.as_image_set([Image.fromarray(a) for a in arrays])
    for i, a in enumerate(arrays):
        assert np.array_equal(from_paths.get(i), a) and np.array_equal(from_strs.get(i), a)
        assert np.array_equal(from_pil.get(i), a)
    grey = gensis.as_image_set([Image.fromarray(a[..., 0]) for a in arrays])  # mode "L"
    assert grey.get(1).shape == (12, 11, 3)
    with pytest.raises(UserError, match=r"one image\? give a list"):
        gensis.as_image_set(Image.fromarray(arrays[0]))
    with pytest.raises(UserError, match="missing.png"):
        gensis.as_image_set([tmp_path / "missing.png"])


def test_dataset_items_in_numpy_or_torch_layout():
    img = np.random.default_rng(0).integers(0, 256, (10, 12, 3), dtype=np.uint8)
    hwc = gensis.as_image_set(_Items(lambda i: (img, 0)))
    chw_np = gensis.as_image_set(_Items(lambda i: (np.ascontiguousarray(img.transpose(2, 0, 1)), 0)))
    chw_t = gensis.as_image_set(_Items(lambda i: (torch.from_numpy(img).permute(2, 0, 1), 0)))
    for ds in (hwc, chw_np, chw_t):
        assert np.array_equal(ds.get(0), img)


@pytest.mark.parametrize("item,match", [
    ({"image": np.zeros((8, 8, 3), np.uint8), "label": 0}, r"item 0 of _Items: is a dict \(keys image, label\)"),
    (3, "item 0 of _Items: is a int, not an image"),
    ("not/a/file.png", "not/a/file.png"),
    (np.zeros((8, 8, 7), np.uint8), r"shape \(8, 8, 7\)"),
    (np.full((8, 8, 3), 300, np.int32), "values in"),
    (np.zeros((2, 8, 8, 3), np.uint8), "not an image"),
])
def test_datasets_of_things_that_are_not_images_fail_at_once(item, match):
    with pytest.raises(UserError, match=match):
        gensis.as_image_set(_Items(lambda i: item))


def test_a_bad_item_further_in_is_named_and_stops_pretraining(tmp_path):
    ds = _Items(lambda i: {"x": 1} if i == 13 else (torch.rand(3, 28, 28), i % 3), n=24)
    cfg = gensis.PretrainConfig.from_preset("smoke", {"optim.batch_size": 8})
    with pytest.raises(UserError, match="item 13 of _Items: is a dict"):
        gensis.pretrain(ds, tmp_path / "run", config=cfg)
    assert not (tmp_path / "run" / "teacher_backbone.safetensors").exists()


def test_labels_are_checked():
    x = _u8(3)
    assert gensis.as_image_set(_Items(lambda i: x[i], 3), labels=torch.tensor([0, 1, 1])).labels.tolist() == [0, 1, 1]
    with pytest.raises(UserError, match="one integer per image"):
        gensis.as_image_set(_Items(lambda i: x[i], 3), labels=[0, 1])
    with pytest.raises(UserError, match="map class names to indices"):
        gensis.as_image_set(_Items(lambda i: x[i], 3), labels=["cat", "dog", "cat"])


def test_a_typo_when_editing_a_typed_config_is_refused():
    cfg = gensis.PretrainConfig.from_preset("smoke")
    cfg.optim.epochs = 3
    assert cfg.to_dict()["optim"]["epochs"] == 3
    with pytest.raises(UserError, match="unknown config key 'epoks' in PretrainOptim; did you mean 'epochs'"):
        cfg.optim.epoks = 4
    with pytest.raises(UserError, match="'optimm'.*did you mean 'optim'"):
        cfg.optimm = {}
    assert gensis.PretrainConfig.from_dict(cfg.to_dict()) == cfg


def test_evaluate_refuses_objects_where_the_command_line_takes_text(encoder_run, images_npz):
    enc = gensis.load_encoder(encoder_run)
    with pytest.raises(UserError, match="option 'encoder'.*Encoder object: use gensis.knn"):
        gensis.evaluate("knn", encoder=enc, train=str(images_npz))


def test_crop_sizes_must_be_multiples_of_the_patch_size(tmp_path):
    from gensis.models.backbone import check_patch_multiple, patch_size_of

    assert patch_size_of({"arch": "vit_small_patch16_224", "patch_size": None}) == 16
    assert patch_size_of({"arch": "vit_tiny_patch16_224", "patch_size": 7}) == 7
    check_patch_multiple({"data.image_size": 28}, 7)
    with pytest.raises(UserError, match=r"data.image_size=30 is not a multiple of the ViT's patch size 7.*28 or 35"):
        check_patch_multiple({"data.image_size": 30}, 7)
    for key, value in (("data.image_size", 30), ("aug.local_size", 15)):  # smoke: patch 7
        with pytest.raises(UserError, match=f"{key}={value} is not a multiple"):
            gensis.pretrain("builtin:digits", tmp_path / key, preset="smoke", overrides={key: value})
        assert not (tmp_path / key).exists()


def test_help_shows_no_empty_defaults():
    out = subprocess.run([sys.executable, "-m", "gensis.cli.main", "pretrain", "--help"], capture_output=True,
                         text=True, check=True).stdout
    assert "(default: None)" not in out and "(default: False)" not in out
    assert "dino) (default" not in out and "(default: demo)" in out


def test_open_data_takes_paths_and_refuses_unknown_splits(images_npz):
    assert len(gensis.open_data(images_npz, "train")) == len(gensis.open_data(str(images_npz), "train"))
    with pytest.raises(UserError, match="unknown split 'trian'"):
        gensis.open_data(images_npz, "trian")


def test_knn_defaults_to_the_command_lines_ks(encoder_run, images_npz):
    res = gensis.knn(encoder_run, f"{images_npz}@train", f"{images_npz}@val")  # 40 training images: k=100 would fail
    assert [r["k"] for r in res["results"]] == [10, 20]


def test_interpolation_weights_outside_0_1_are_refused(pixel_eldm_run):
    gen = gensis.load_generator(pixel_eldm_run)
    e = gen.encode(_u8(2))
    for alpha in (2.0, -0.1, float("nan"), torch.tensor([0.5, 1.5])):
        with pytest.raises(UserError, match="alpha must be in"):
            gen.interpolate(e[:1].expand(2, -1), e[1:].expand(2, -1), alpha=alpha, seeds=[0, 1])
    with pytest.raises(UserError, match="same shape"):
        gen.interpolate(e[:1], e, alpha=0.5, seeds=[0])


def test_train_eldm_refuses_a_wrong_encoder_before_reading_data(tmp_path):
    few = np.zeros((4, 16, 16, 3), np.uint8)  # fewer images than the batch: that error would come first
    with pytest.raises(UserError, match="is not a run directory"):
        gensis.train_eldm(tmp_path / "no-run", few, tmp_path / "eldm", preset="smoke")


def test_report_refuses_folders_the_demo_did_not_make(tmp_path, encoder_run):
    from gensis.report import write_report

    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "a.png").write_bytes(b"")
    with pytest.raises(UserError, match="not a folder made by `gensis demo`"):
        write_report(tmp_path / "photos")
    assert sorted(p.name for p in (tmp_path / "photos").iterdir()) == ["a.png"]  # nothing added
    with pytest.raises(UserError, match="is a pretrain run folder"):
        write_report(encoder_run)
    assert not (encoder_run / "report.md").exists()


def test_edited_config_values_are_reported_as_given():
    cfg = gensis.PretrainConfig.from_preset("smoke")
    cfg.optim.epochs = "2"  # a string from Python: the message must not read "optim.epochs=2: must be an integer"
    with pytest.raises(UserError, match=r"optim.epochs='2' \(a string\): must be an integer >= 1"):
        cfg.validate()
    cfg.optim = {"epochs": 2}  # a section assigned as a mapping stays a section (its defaults + the mapping)
    assert isinstance(cfg.optim, gensis.configs.typed.PretrainOptim) and cfg.optim.epochs == 2
    cfg.validate()
    with pytest.raises(UserError, match="did you mean 'epochs'"):
        cfg.optim = {"epoks": 2}


def test_demo_refuses_fewer_images_than_a_batch_before_writing(tmp_path, capsys):
    from gensis.cli.main import main

    data = tmp_path / "few.npz"
    np.savez(data, images=np.zeros((30, 8, 8, 3), np.uint8), labels=np.arange(30) % 3)
    assert main(["demo", "--preset", "smoke", "--data", str(data), "--out", str(tmp_path / "demo"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "24 training images, fewer than the batch of 64 the 'smoke' preset uses" in err[0]
    assert not (tmp_path / "demo").exists()


def test_too_few_images_for_a_batch_names_the_fix(tmp_path):
    with pytest.raises(UserError, match=r"fewer than optim.batch_size=64: .*optim.batch_size=N, N <= 4\) or give a "
                                        r"larger data.limit \(now 4\)"):
        gensis.pretrain("builtin:digits", tmp_path / "run", preset="smoke", overrides={"data.limit": 4})
    with pytest.raises(UserError, match=r"N <= 3\) or give more images"):
        gensis.pretrain(_u8(3), tmp_path / "run2", preset="smoke")


def test_hidden_files_in_an_image_folder_are_not_images(tmp_path):
    for c in ("cat", "dog"):
        (tmp_path / c).mkdir()
        for i in range(3):
            Image.fromarray(np.full((8, 8, 3), 40 * i, np.uint8)).save(tmp_path / c / f"{i}.png")
        (tmp_path / c / "._0.png").write_bytes(b"\x00\x05\x16\x07 AppleDouble")  # what macOS copies leave
    (tmp_path / ".ipynb_checkpoints").mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / ".ipynb_checkpoints" / "x.png")
    ds = gensis.open_data(tmp_path, "all")
    assert len(ds) == 6 and ds.classes == ["cat", "dog"]


def test_knn_on_its_own_training_images_warns_from_python_too(encoder_run, images_npz, capsys):
    ds = gensis.open_data(images_npz, "all")
    gensis.knn(encoder_run, ds, ds, ks=[1])
    err = capsys.readouterr().err
    assert err.count("warning: the test set is the training set") == 1 and "not a held-out accuracy" in err
    gensis.knn(encoder_run, f"{images_npz}@train", f"{images_npz}@val", ks=[1])
    assert "warning" not in capsys.readouterr().err


def test_knn_and_linear_split_one_source_named_twice_as_the_command_line_does(encoder_run, images_npz, capsys):
    """gensis.knn(enc, DATA, DATA) scored the whole source on itself (a warning, and a top-1 that was no held-out
    accuracy) where `gensis eval knn --train DATA` scores its val split against its train split: now the same."""
    res = gensis.knn(encoder_run, str(images_npz), images_npz, ks=[1])
    assert "warning" not in capsys.readouterr().err
    assert res["train"]["split"] == "train" and res["test"]["split"] == "val"
    explicit = gensis.knn(encoder_run, f"{images_npz}@train", f"{images_npz}@val", ks=[1])
    assert res["top1"] == explicit["top1"] and res["test"]["identity"] == explicit["test"]["identity"]
    lin = gensis.linear(encoder_run, str(images_npz), str(images_npz), epochs=1, lrs=[0.1], aug_copies=1)
    assert lin["test"]["identity"] == explicit["test"]["identity"] and "warning" not in capsys.readouterr().err


def test_ks_as_a_string_is_refused(encoder_run, images_npz):
    """ks="10" was read as k = 0 and 1 (list("10")): 'k must be positive integers, got [0, 1]'."""
    with pytest.raises(UserError, match="ks must be a number or a list of numbers, got '10'"):
        gensis.knn(encoder_run, f"{images_npz}@train", f"{images_npz}@val", ks="10")


def test_linear_takes_the_crop_scale_as_the_command_line_does(encoder_run, images_npz):
    """gensis.linear had no crop_scale (docs/eval.md compares encoders with --crop-scale 1 1): a TypeError."""
    res = gensis.linear(encoder_run, f"{images_npz}@train", f"{images_npz}@val", epochs=1, lrs=[0.1], aug_copies=1,
                        crop_scale=(1, 1))
    assert res["config"]["crop_scale"] == [1.0, 1.0] and res["config"]["batch_size"] == 1024
    with pytest.raises(UserError, match="crop scale must satisfy"):
        gensis.linear(encoder_run, f"{images_npz}@train", f"{images_npz}@val", epochs=1, crop_scale=(0, 1))


def test_paths_with_a_tilde_are_the_home_folder(tmp_path, monkeypatch, encoder_run, fake_bank):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    import shutil

    shutil.copytree(encoder_run, tmp_path / "runs" / "dino")
    shutil.copytree(fake_bank, tmp_path / "bank")
    assert gensis.load_encoder("~/runs/dino").dim == gensis.load_encoder(encoder_run).dim
    out = gensis.export_model("~/runs/dino", "timm", "~/export/dino")
    assert (tmp_path / "export" / "dino" / "config.json").is_file() and not (tmp_path / "~").exists()
    assert out == tmp_path / "export" / "dino"
    assert gensis.open_bank("~/bank").num_images == len(gensis.BankDataset("~/bank"))
    cfg = gensis.PretrainConfig.from_preset("smoke", {"optim.epochs": 1, "optim.batch_size": 8})
    run = gensis.pretrain(_u8(8), "~/runs/new", config=cfg)
    assert run == tmp_path / "runs" / "new" and (run / "teacher_backbone.safetensors").is_file()
    assert not (tmp_path / "~").exists()


def test_a_width_that_the_heads_do_not_divide_is_one_user_error():
    from gensis.models.backbone import build_backbone

    cfg = {"arch": "vit_tiny_patch16_224", "patch_size": 7, "embed_dim": 100, "num_heads": 3, "depth": 1}
    with pytest.raises(UserError, match=r"model.embed_dim=100, model.num_heads=3.*multiple of model.num_heads"):
        build_backbone(cfg, 28)


def test_eldm_figures_with_a_bad_setting_leave_no_folder(pixel_eldm_run, images_npz, tmp_path):
    with pytest.raises(UserError, match="steps must be in"):
        gensis.eldm_figures(pixel_eldm_run, str(images_npz), tmp_path / "figs", steps=0)
    assert not (tmp_path / "figs").exists()


def test_eldm_sample_and_eval_options_out_of_range_are_one_line(pixel_eldm_run, images_npz, tmp_path, capsys):
    """`eldm sample --seed -1` and `eldm eval --n -3` were numpy ValueError tracebacks; `--n 0` silently evaluated
    eval.n images; `--guidance nan` (or inf) was accepted and sampled images of nan: each is one line, exit 2."""
    from gensis.cli.main import main

    base = ["--eldm", str(pixel_eldm_run), "--data", str(images_npz), "--device", "cpu", "--steps", "2"]
    for argv, words in [(["eldm", "sample", *base, "--out", str(tmp_path / "f"), "--seed", "-1"], ("--seed", ">= 0")),
                        (["eldm", "sample", *base, "--out", str(tmp_path / "f"), "--guidance", "nan"], ("guidance",)),
                        (["eldm", "sample", *base, "--out", str(tmp_path / "f"), "--guidance", "inf"], ("guidance",)),
                        (["eldm", "eval", *base, "--n", "0"], ("--n", ">= 1")),
                        (["eldm", "eval", *base, "--n", "-3"], ("--n",)),
                        (["eldm", "eval", *base, "--n", "4", "--guidance", "nan"], ("guidance",))]:
        assert main(argv) == 2, argv
        err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
        assert len(err) == 1 and all(w in err[0] for w in words), (argv, err)
    assert not (tmp_path / "f").exists()
    from gensis.eldm.model import load_generator

    gen = load_generator(pixel_eldm_run, device="cpu", steps=2)
    emb = gen.encode(_u8(1))
    with pytest.raises(UserError, match="guidance must be a number >= 0, got nan"):
        gen.generate(emb, seeds=[0], guidance=float("nan"))
    assert gen.generate(emb, seeds=[0], guidance=2.0).shape[0] == 1


def test_embed_refuses_a_batch_size_below_one(encoder_run):
    for bs in (0, -1):
        with pytest.raises(UserError, match="batch_size must be an integer >= 1"):
            gensis.embed(encoder_run, _u8(2), batch_size=bs)
    assert gensis.embed(encoder_run, _u8(3), batch_size=2).shape[0] == 3


def test_an_output_path_that_is_the_wrong_kind_is_one_line(tmp_path, capsys, images_npz):
    from gensis.cli.main import main

    (tmp_path / "afile").write_text("notes")
    assert main(["pretrain", "--data", str(images_npz), "--out", str(tmp_path / "afile"), "--preset", "smoke",
                 "optim.batch_size=8"]) == 2
    assert "is a file, not a folder" in capsys.readouterr().err
    assert (tmp_path / "afile").read_text() == "notes"
    assert main(["eval", "knn", "--encoder", "pixels", "--train", str(images_npz), "--json", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is a folder: name a file" in err[0]
    with pytest.raises(UserError, match="is a folder"):
        gensis.evaluate("knn", encoder="pixels", train=str(images_npz), json=tmp_path)


def test_a_cache_that_is_a_file_is_one_line_before_any_work(tmp_path, capsys, images_npz, monkeypatch):
    """``--cache FILE`` silently turned the feature cache off (every write failed): now refused up front."""
    from gensis.cli.main import main

    f = tmp_path / "afile"
    f.write_text("notes")
    for cache, what in [(f, "is a file"), (f / "sub", f"lies under the file {f}")]:
        assert main(["eval", "knn", "--encoder", "pixels", "--train", str(images_npz), "--k", "3",
                     "--cache", str(cache)]) == 2
        out, err = capsys.readouterr()
        err_lines = err.strip().splitlines()
        assert len(err_lines) == 1 and f"--cache {cache} {what}" in err_lines[0] and "name a folder" in err_lines[0]
        assert "top-1" not in out and "features" not in out  # no work was done
        with pytest.raises(UserError, match=what):
            gensis.evaluate("knn", encoder="pixels", train=str(images_npz), k=[3], cache=str(cache))
    assert f.read_text() == "notes"
    monkeypatch.setenv("GENSIS_CACHE_DIR", str(f))
    assert main(["eval", "knn", "--encoder", "pixels", "--train", str(images_npz), "--k", "3"]) == 2
    assert "GENSIS_CACHE_DIR" in capsys.readouterr().err
    cache_dir = tmp_path / "cache"  # a folder (existing or not) is fine
    assert main(["eval", "knn", "--encoder", "pixels", "--train", str(images_npz), "--k", "3",
                 "--cache", str(cache_dir)]) == 0
    assert list(cache_dir.glob("*.safetensors"))


def test_knn_and_linear_take_one_number_and_generate_checks_its_embeddings(encoder_run, pixel_eldm_run, images_npz):
    """gensis.knn(..., ks=20) and linear(..., lrs=0.1) were TypeErrors ('int' object is not iterable); generate()
    with embeddings of another width was a RuntimeError from deep in the conditioner, with nan embeddings it
    sampled images silently."""
    from gensis.eldm.model import load_generator

    train, test = f"{images_npz}@train", f"{images_npz}@val"
    one = gensis.knn(encoder_run, train, test, ks=3)
    assert [r["k"] for r in one["results"]] == [3]
    assert one["results"] == gensis.knn(encoder_run, train, test, ks=[3])["results"]
    assert [r["lr"] for r in gensis.linear(encoder_run, train, test, epochs=1, lrs=0.1, aug_copies=1)["results"]] == [0.1]
    with pytest.raises(UserError, match="ks must be a number or a list"):
        gensis.knn(encoder_run, train, test, ks=None)
    gen = load_generator(pixel_eldm_run, device="cpu", steps=2)
    emb = gen.encode(_u8(2))
    assert gen.embedding_dim == emb.shape[1]
    with pytest.raises(UserError, match=rf"embeddings must be \(B, {emb.shape[1]}\).*got shape \(2, 5\)"):
        gen.generate(torch.zeros(2, 5), seeds=0)
    with pytest.raises(UserError, match="nan or inf"):
        gen.generate(torch.full_like(emb, float("nan")), seeds=0)
    assert gen.generate(emb, seeds=0).shape == (2, 3, gen.image_size, gen.image_size)


def test_eldm_sample_and_eval_refuse_overrides_they_do_not_read(pixel_eldm_run, images_npz, tmp_path, capsys):
    """`eldm eval ... sample.guidance=6` (or optim.epochs=9) was accepted and changed nothing: the numbers were
    those of the run's guidance, under a command line that said 6. Now one line naming the key and the option
    to use; the keys they do read still work."""
    from gensis.cli.main import main

    base = ["--eldm", str(pixel_eldm_run), "--data", str(images_npz), "--device", "cpu", "--steps", "2"]
    for argv, words in [(["eldm", "eval", *base, "--n", "4", "sample.guidance=6"], ("sample.guidance", "--guidance")),
                        (["eldm", "eval", *base, "--n", "4", "optim.epochs=9"], ("optim.epochs", "eval.*")),
                        (["eldm", "sample", *base, "--out", str(tmp_path / "f"), "eval.n=3"],
                         ("eval.n", "gensis eldm eval", "figures.*")),
                        (["eldm", "sample", *base, "--out", str(tmp_path / "f"), "sample.steps=3"],
                         ("sample.steps", "--steps"))]:
        assert main(argv) == 2, argv
        err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
        assert len(err) == 1 and all(w in err[0] for w in words), (argv, err)
    assert not (tmp_path / "f").exists()
    with pytest.raises(UserError, match="does not read sample.guidance"):
        gensis.evaluate_eldm(pixel_eldm_run, str(images_npz), n=4, overrides={"sample": {"guidance": 6.0}})
    r = gensis.evaluate_eldm(pixel_eldm_run, str(images_npz), n=4, steps=2,
                             overrides=["eval.knn_k=3", "data.val_fraction=0.2", "cond.encode_batch_size=8"])
    assert r["n"] == 4


def test_an_eldm_run_that_is_missing_a_file_or_unfinished_is_named_so(pixel_eldm_run, tmp_path, capsys):
    """`--eldm` naming a typo'd path said '... is not a finished `gensis eldm train` run' (for the API's
    load_generator: 'has no eldm.json'), a file the same; an unfinished run did not say how to finish it."""
    from gensis.cli.main import main
    from gensis.eldm.model import load_generator

    f = tmp_path / "notes.txt"
    f.write_text("x")
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    (unfinished / "manifest.json").write_text('{"stage": "eldm", "status": "running"}')
    for eldm, words in [(tmp_path / "typo", ("not found", "no such folder")), (f, ("is a file",)),
                        (unfinished, ("not a finished", "--resume"))]:
        assert main(["eldm", "eval", "--eldm", str(eldm), "--data", "x.npz", "--quiet"]) == 2
        err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
        assert len(err) == 1 and all(w in err[0] for w in words), (eldm, err)
    with pytest.raises(UserError, match="not found"):
        load_generator(tmp_path / "typo")
    with pytest.raises(UserError, match="is a file"):
        load_generator(f)


def test_report_on_a_seeds_folder_names_its_seed_folders(tmp_path):
    """`gensis report OUT` on a `gensis demo --seeds` folder said only 'not a folder made by gensis demo'."""
    from gensis.report import write_report

    for s in (0, 1):
        (tmp_path / f"seed-{s}").mkdir()
        (tmp_path / f"seed-{s}" / "stages.json").write_text("{}")
    (tmp_path / "seeds.md").write_text("# Gen-SIS over seeds [0, 1]\n")
    with pytest.raises(UserError, match=r"demo --seeds.*seed-0, .*seed-1\); the over-seed summary is .*seeds\.md"):
        write_report(tmp_path)
    assert not (tmp_path / "report").exists()


def test_quiet_true_shows_no_progress_bar_of_the_passes_a_stage_runs(pixel_eldm_run, tmp_path, monkeypatch, capsys):
    """`gensis.evaluate_eldm(..., quiet=True)` (and train_eldm) drew the E-LDM's embedding pass's bar ('embed
    eval-train: 0%| ... it/s'), which `--quiet` hides; quiet=False still shows it, and the setting before is kept."""
    import os

    from tiny_runs import make_images

    monkeypatch.delenv("GENSIS_NO_PROGRESS", raising=False)
    data = [str(make_images(tmp_path / f"d{seed}.npz", seed=seed)) for seed in (11, 12)]  # not cached yet
    gensis.evaluate_eldm(pixel_eldm_run, data[0], n=4, steps=2)
    assert "embed eval-train" not in capsys.readouterr().err
    assert "GENSIS_NO_PROGRESS" not in os.environ
    gensis.evaluate_eldm(pixel_eldm_run, data[1], n=4, steps=2, quiet=False)
    assert "embed eval-train" in capsys.readouterr().err


def test_sampler_settings_of_the_wrong_type_are_one_line(pixel_eldm_run, images_npz):
    """From Python, steps=2.5 sampled 2 steps without a word (the result said steps 2), guidance='high' was a
    ValueError traceback and guidance=[2] a TypeError; each is one UserError now, and 3.0 is 3."""
    from gensis.eldm.model import load_generator

    for kw, match in [({"steps": 2.5}, "steps must be an integer, got 2.5"),
                      ({"guidance": "high"}, "guidance must be a number"), ({"guidance": [2]}, "guidance must be a number")]:
        with pytest.raises(UserError, match=match):
            load_generator(pixel_eldm_run, **kw)
        with pytest.raises(UserError, match=match):
            gensis.evaluate_eldm(pixel_eldm_run, str(images_npz), n=4, **kw)
    gen = load_generator(pixel_eldm_run, steps=3.0)
    assert gen.defaults.steps == 3
    with pytest.raises(UserError, match="steps must be an integer"):
        gen.generate(gen.encode(_u8(1)), seeds=[0], steps=1.5)


def test_eldm_eval_of_one_held_out_image_has_no_frechet_distance(pixel_eldm_run, images_npz, tmp_path, capsys):
    """`eldm eval --n 1` (or data whose val split holds one image) was scipy's 'Internal error in
    scipy.linalg.sqrtm: -102' traceback: no covariance from one sample. Now the distance is '-' (null in the
    JSON) with why, and the other numbers are reported."""
    from gensis.cli.main import main

    out = tmp_path / "e.json"
    assert main(["eldm", "eval", "--eldm", str(pixel_eldm_run), "--data", str(images_npz), "--n", "1", "--steps", "2",
                 "--quiet", "--json", str(out)]) == 0
    assert "Frechet distance  -   (needs at least 2 held-out images, got 1)" in capsys.readouterr().out
    import json

    r = json.loads(out.read_text())
    assert r["n"] == 1 and r["frechet_distance"] is None and r["retrieval_top1"] == 1.0


def test_eldm_sample_and_eval_on_data_without_held_out_images_are_one_line(pixel_eldm_run, tmp_path, capsys):
    """Data whose val split holds no image (2 images, one per class) made `eldm sample` a torch 'stack expects a
    non-empty TensorList' traceback and `eldm eval` a 'torch.cat(): expected a non-empty list' one; now one line
    saying why and naming DATA@all; no --out folder is left."""
    from gensis.cli.main import main
    from tiny_runs import make_images

    data = str(make_images(tmp_path / "two.npz", n=2))
    for argv in (["eldm", "sample", "--eldm", str(pixel_eldm_run), "--data", data, "--out", str(tmp_path / "f")],
                 ["eldm", "eval", "--eldm", str(pixel_eldm_run), "--data", data, "--quiet"]):
        assert main(argv) == 2
        err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
        assert len(err) == 1 and "no held-out image" in err[0] and f"--data {data}@all" in err[0], err
    assert not (tmp_path / "f").exists()


def test_embed_knn_linear_take_quiet_as_the_other_calls_do(encoder_run, images_npz, monkeypatch, capsys):
    """`gensis.embed` / `knn` / `linear` had no `quiet=` (a TypeError) and always drew their feature passes' bars
    ('features: 100%| ...'); they take it now as the stage calls do: quiet by default, `quiet=False` shows the bars,
    and the setting before is kept. A seeded linear probe leaves the notebook's random generators as they were."""
    import os

    import torch

    monkeypatch.delenv("GENSIS_NO_PROGRESS", raising=False)
    train, val = gensis.open_data(str(images_npz), "train"), gensis.open_data(str(images_npz), "val")
    enc = gensis.load_encoder(encoder_run)
    calls = {"embed": lambda **kw: gensis.embed(enc, val, **kw),
             "knn": lambda **kw: gensis.knn(enc, train, val, ks=[3], **kw),
             "linear": lambda **kw: gensis.linear(enc, train, val, epochs=1, lrs=[0.1], aug_copies=1, **kw)}
    for name, call in calls.items():
        call()
        assert "it/s]" not in capsys.readouterr().err, name
        call(quiet=True)
        assert "it/s]" not in capsys.readouterr().err, name
        assert "GENSIS_NO_PROGRESS" not in os.environ
        call(quiet=False)
        assert "features" in capsys.readouterr().err, name
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    gensis.linear(enc, train, val, epochs=1, lrs=[0.1], aug_copies=1, seed=7)
    assert torch.equal(torch.rand(3), expected)
