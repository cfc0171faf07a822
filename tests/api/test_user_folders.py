"""A researcher's own image folder through the stages that read a run: bad files, odd layouts."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

import gensis
from gensis.errors import UserError


def _folder(root, n=16, size=16, classes=("a", "b")):
    rng = np.random.default_rng(0)
    for i in range(n):
        d = root / classes[i % len(classes)]
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(d / f"{i}.png")
    return root


def test_eldm_sample_and_eval_skip_bad_images_as_configured(tmp_path, pixel_eldm_run):
    data = _folder(tmp_path / "imgs", n=40)
    (data / "a" / "notes.jpg").write_text("not an image")
    with pytest.raises(UserError, match="notes.jpg"):
        gensis.eldm_figures(pixel_eldm_run, str(data), tmp_path / "fig", overrides={"figures.rows": 2})
    skip = {"data.skip_bad_images": True}  # the key of the run's config (was accepted, then ignored)
    pngs = gensis.eldm_figures(pixel_eldm_run, str(data), tmp_path / "fig",
                               overrides={**skip, "figures.rows": 2, "figures.per_image": 1, "figures.pairs": 1})
    assert all(p.is_file() for p in pngs)
    r = gensis.evaluate_eldm(pixel_eldm_run, str(data), n=4, overrides={**skip, "eval.knn_k": 3})
    assert r["n"] == 4


def test_open_data_of_a_folder_with_a_bad_file_names_its_own_keyword(tmp_path):
    """From Python the line named only the command-line ways to skip unreadable images (data.skip_bad_images,
    --skip-bad-images); docs/api.md's gensis.open_data(folder, split, skip_bad_images=True) is named too now."""
    data = _folder(tmp_path / "imgs", n=8)
    (data / "a" / "broken.png").write_bytes(b"\x89PNG not a png")
    with pytest.raises(UserError, match="broken.png") as e:
        gensis.open_data(data, "all")
    assert "gensis.open_data(..., skip_bad_images=True)" in str(e.value) and "\n" not in str(e.value)
    assert len(gensis.open_data(data, "all", skip_bad_images=True)) == 8


def test_a_train_val_folder_at_all_is_both_folders(tmp_path):
    """README: a folder with train/ and val/ keeps its own split; DATA@all (and the default split "all" of the
    demo and of --data without a split) is both (was: 'no images found in folder')."""
    _folder(tmp_path / "tv" / "train", n=8, classes=("a", "b", "c"))
    _folder(tmp_path / "tv" / "val", n=4, classes=("a", "c"))  # val's c is train's class 2
    train, val = gensis.open_data(tmp_path / "tv", "train"), gensis.open_data(tmp_path / "tv", "val")
    for both in (gensis.open_data(f"{tmp_path / 'tv'}@all"), gensis.open_data(tmp_path / "tv", "all")):
        assert len(both) == len(train) + len(val) == 12 and both.classes == ["a", "b", "c"]
        assert both.labels.tolist() == train.labels.tolist() + val.labels.tolist()
        assert both.labels.tolist()[-4:] == [0, 0, 2, 2] and np.array_equal(both.get(8), val.get(0))


def test_images_the_layout_would_leave_out_are_named_not_dropped(tmp_path):
    """Images beside class folders, and class folders whose images sit a level deeper, were left out without a
    word (a whole class missing); a symlink back up (a loop) is not followed and is no error."""
    mixed = _folder(tmp_path / "mixed", n=8)
    Image.new("RGB", (8, 8)).save(mixed / "loose.png")
    with pytest.raises(UserError, match=r"holds 1 image \(loose.png\) beside its class folders"):
        gensis.open_data(mixed)
    nested = _folder(tmp_path / "nested", n=8)
    _folder(tmp_path / "nested" / "c", n=2, classes=("2019",))  # class c only in c/2019/
    with pytest.raises(UserError, match=r"2019/0.png would be left out \(and class 'c', which holds no image"):
        gensis.open_data(nested)
    deeper = _folder(tmp_path / "deeper", n=8)
    _folder(tmp_path / "deeper" / "a", n=1, classes=("more",))
    with pytest.raises(UserError, match=r"a/more/0.png would be left out: .* a level deeper"):
        gensis.open_data(deeper)
    ok = _folder(tmp_path / "ok", n=8)
    (ok / "a" / "loop").symlink_to(ok / "a")
    (ok / "b" / "up").symlink_to(ok)
    assert len(gensis.open_data(ok)) == 8


def test_eval_of_a_run_reads_its_data_as_pretraining_did(tmp_path, capsys):
    """A run pretrained with data.skip_bad_images=true on a folder holding a broken file: `gensis eval knn
    --encoder RUN` (its own data by default) skips it too, and scores the run's own split (was: an error)."""
    import tiny_runs

    from gensis.cli.main import main
    from gensis.rundir import atomic_write_json

    data = _folder(tmp_path / "imgs", n=24)
    (data / "b" / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    run = tiny_runs.make_encoder_run(tmp_path / "run", overrides=("data.skip_bad_images=true",))
    atomic_write_json(run / "manifest.json", {"stage": "pretrain", "status": "done", "inputs": {"data": str(data)}})
    assert main(["eval", "knn", "--encoder", str(run), "--k", "3", "--cache", "none"]) == 0
    out, err = capsys.readouterr()
    assert "skipped 1 unreadable image of 25" in err and "broken.jpg" in err
    assert "(20 images" in out and "(4 images" in out  # 24 readable images: 80/20 per class, as pretraining


def test_a_bank_made_skipping_a_broken_image_opens_the_same_way(tmp_path, capsys):
    """BankDataset and `gensis bank show` open the bank's dataset as its generation did (the bank's
    data.skip_bad_images): they failed, or showed no real images, on the folder the bank was made from."""
    from gensis.bank import generate_bank
    from gensis.bank.fake import FakeGenerator
    from gensis.bank.show import show_bank
    from gensis.config import load_config

    data = _folder(tmp_path / "imgs", n=12)
    (data / "a" / "broken.png").write_bytes(b"")
    cfg = load_config("bank", "smoke", ["data.skip_bad_images=true", "data.limit=null", "run.threads=1"])
    bank = tmp_path / "bank"
    assert generate_bank(cfg, str(data), bank, generator=FakeGenerator(image_size=16, dim=8), quiet=True).complete
    bds = gensis.BankDataset(bank)
    assert len(bds) == 10 and bds[0]["image"].shape == (3, 16, 16)
    capsys.readouterr()
    show_bank(bank, tmp_path / "grid.png", n=2)
    assert "real images not shown" not in capsys.readouterr().err and (tmp_path / "grid.png").is_file()


def _mixed_sizes(root, n=24):
    rng = np.random.default_rng(1)
    for i in range(n):
        h, w = [(16, 16), (9, 40), (30, 12), (1, 1)][i % 4]
        d = root / ("a", "b", "c")[i % 3]
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(d / f"{i}.png")
    return root


def test_eldm_sample_eval_and_report_take_images_of_any_size(tmp_path, monkeypatch):
    """A user's photos differ in size: eldm sample / eldm eval stacked them as read (RuntimeError traceback), the
    report's embedding figure refused them; each image is now loaded as the E-LDM's training loaded it."""
    import tiny_runs

    from gensis.report import embedding_figure

    data = str(_mixed_sizes(tmp_path / "imgs")) + "@all"
    demo = tmp_path / "demo"
    tiny_runs.make_encoder_run(demo / "dino")
    eldm = tiny_runs.make_eldm_run(demo / "eldm", demo / "dino", "pixel")
    pngs = gensis.eldm_figures(eldm, data, tmp_path / "fig", overrides={"figures.rows": 8, "figures.per_image": 1,
                                                                        "figures.pairs": 4})
    assert all(p.is_file() for p in pngs)
    assert gensis.evaluate_eldm(eldm, data, n=12, overrides={"eval.knn_k": 3})["n"] == 12
    from functools import partial

    from gensis.eval import umap

    monkeypatch.setattr(umap, "embedding_map", partial(umap.embedding_map, method="tsne"))
    dest = embedding_figure(demo, data, tmp_path / "emb.png", n_per_class=4, n_interp=3)  # t-SNE: no numba compile
    assert dest is not None and dest.is_file()


def test_demo_reads_and_reports_a_folder_with_a_broken_image_when_pretraining_skips_it(tmp_path, monkeypatch):
    """gensis demo ... pretrain.data.skip_bad_images=true (and eldm./bank.): the demo's own checks, its evaluation
    and the report's figure opened the data without skipping, so the demo stopped before its first stage."""
    import tiny_runs

    from gensis.pipeline import results
    from gensis.pipeline.demo import DemoOptions, _check_enough_images, _check_labels, _Keys
    from gensis.report import embedding_figure

    data = _folder(tmp_path / "imgs", n=40)
    (data / "b" / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    opts = DemoOptions(preset="smoke", data=str(data), overrides=("pretrain.data.skip_bad_images=true",
                                                                  "pretrain.optim.batch_size=8"))
    _check_labels(opts), _check_enough_images(opts)  # were: cannot read image .../broken.jpg
    assert _Keys(opts).data == gensis.open_data(data, "all", skip_bad_images=True).identity
    demo = tmp_path / "demo"
    tiny_runs.make_encoder_run(demo / "dino", overrides=("data.skip_bad_images=true",))
    tiny_runs.make_eldm_run(demo / "eldm", demo / "dino", "pixel")
    from functools import partial

    from gensis.eval import umap

    monkeypatch.setattr(umap, "embedding_map", partial(umap.embedding_map, method="tsne"))
    assert embedding_figure(demo, str(data), tmp_path / "emb.png", n_per_class=3, n_interp=2).is_file()
    (demo / "dino" / "manifest.json").write_text('{"stage": "pretrain", "status": "done"}')
    r = results.evaluate(demo, str(data), "smoke", linear=False)
    assert r["dino"]["knn"]["test"]["size"] == 8 and r["pixels"]["knn"]["train"]["size"] == 32  # 40 readable images


def test_bank_dataset_of_a_folder_of_mixed_sizes_batches_in_a_dataloader(tmp_path):
    """A bank of a folder whose images differ in size: BankDataset in a DataLoader failed in default_collate
    ('stack expects each tensor to be equal size') unless the user added a resize. Real images (and partners) now
    come as the bank's generation loaded them (short side to the bank's image size, centre crop), so they batch
    with the generated ones; ``resize=False`` gives them as stored."""
    from torch.utils.data import DataLoader
    import torch

    from gensis.bank import generate_bank
    from gensis.bank.fake import FakeGenerator
    from gensis.config import load_config
    from gensis.data.loader import load_image

    data = _mixed_sizes(tmp_path / "imgs", n=16)
    cfg = load_config("bank", "smoke", ["data.limit=null", "run.threads=1"])
    bank = tmp_path / "bank"
    assert generate_bank(cfg, str(data), bank, generator=FakeGenerator(image_size=16, dim=8), quiet=True).complete
    bds = gensis.BankDataset(bank)
    batch = next(iter(DataLoader(bds, batch_size=len(bds))))  # every size at once
    n, k = len(bds), bds.num_generative
    assert batch["image"].shape == batch["partner"].shape == (n, 3, 16, 16) and batch["image"].dtype == torch.uint8
    assert batch["generated"].shape == (n, k, 3, 16, 16)
    train = gensis.open_data(data, "train")
    for i in range(n):  # each real image as the bank's generation read it (short side to 16, centre crop)
        assert torch.equal(batch["image"][i], load_image(train, i, 16))
        assert torch.equal(batch["partner"][i], load_image(train, int(batch["partner_index"][i]), 16))
    raw = gensis.BankDataset(bank, resize=False)  # as stored: the user's transform makes them one size
    shapes = {tuple(raw[i]["image"].shape) for i in range(n)}
    assert len(shapes) > 1 and all(torch.equal(raw[i]["image"], torch.from_numpy(train.get(i)).permute(2, 0, 1))
                                   for i in range(n))
    with pytest.raises(UserError, match="resize must be True or False"):
        gensis.BankDataset(bank, resize="no")


def test_as_torch_dataset_of_a_folder_of_mixed_sizes(tmp_path):
    """``ImageSet.as_torch_dataset()`` of a folder whose images differ in size failed in the DataLoader's
    default_collate. ``size=S`` loads them as gensis loads a folder (short side to S, centre crop) so they batch;
    without ``size`` or a transform the set is refused at construction in one line naming ``size=``."""
    from torch.utils.data import DataLoader
    import torch

    from gensis.data.loader import load_image

    images = gensis.open_data(_mixed_sizes(tmp_path / "imgs", n=8), "all")
    ds = images.as_torch_dataset(size=12)
    x, y = next(iter(DataLoader(ds, batch_size=len(ds))))  # every size in one batch
    assert x.shape == (len(images), 3, 12, 12) and x.dtype == torch.uint8
    assert y.tolist() == images.labels.tolist()
    assert all(torch.equal(x[i], load_image(images, i, 12)) for i in range(len(images)))
    with pytest.raises(UserError, match=r"differ in size .*pass size=S") as e:
        images.as_torch_dataset()
    assert "\n" not in str(e.value)
    as_stored = images.as_torch_dataset(lambda t: t)  # a transform of the user's: as stored, their call
    assert {tuple(as_stored[i][0].shape) for i in range(len(images))} == {(3, 16, 16), (3, 9, 40), (3, 30, 12),
                                                                           (3, 1, 1)}
    with pytest.raises(UserError, match="size must be a positive int"):
        images.as_torch_dataset(size=0)
    one_size = gensis.open_data(_folder(tmp_path / "same", n=4), "all").as_torch_dataset()  # no check to fail
    assert next(iter(DataLoader(one_size, batch_size=4)))[0].shape == (4, 3, 16, 16)


def test_as_torch_dataset_of_a_list_of_images_of_mixed_sizes(tmp_path):
    """docs/api.md: images of different sizes without ``size`` or a transform are refused by
    ``as_torch_dataset()`` at once. A list of PIL images, arrays, tensors or file paths (``as_image_set``) was let
    through, and the DataLoader failed later in default_collate ('stack expects each tensor to be equal size')."""
    import torch
    from torch.utils.data import DataLoader

    rng = np.random.default_rng(0)
    arrays = [rng.integers(0, 256, hw + (3,), dtype=np.uint8) for hw in [(16, 16), (9, 40), (16, 16)]]
    folder = _mixed_sizes(tmp_path / "imgs", n=4)
    paths = sorted(str(p) for p in folder.rglob("*.png"))
    kinds = {"PIL images": [Image.fromarray(a) for a in arrays], "arrays": arrays,
             "tensors": [torch.from_numpy(a).permute(2, 0, 1) for a in arrays], "file paths": paths,
             "(image, label) items": [(Image.fromarray(a), 0) for a in arrays]}
    for kind, items in kinds.items():
        images = gensis.as_image_set(items)
        with pytest.raises(UserError, match=r"differ in size .*pass size=S") as e:
            images.as_torch_dataset()
        assert "\n" not in str(e.value), kind
        x, _ = next(iter(DataLoader(images.as_torch_dataset(size=8), batch_size=len(items))))
        assert x.shape == (len(items), 3, 8, 8), kind
    same = gensis.as_image_set([Image.fromarray(arrays[0])] * 3).as_torch_dataset()  # one size: no refusal
    assert next(iter(DataLoader(same, batch_size=3)))[0].shape == (3, 3, 16, 16)


def test_eval_of_baselines_skips_bad_images_when_asked(tmp_path, capsys):
    """The baselines a user compares a run with (`--encoder pixels|random --train DATA --test DATA`) on a folder
    holding a broken file: the error names `--skip-bad-images`, which leaves it out and counts it (was: no way to
    evaluate but deleting the file; the hint named data.skip_bad_images, which eval does not take)."""
    from gensis.cli.main import main

    data, held = _folder(tmp_path / "imgs", n=24), _folder(tmp_path / "held", n=8)
    (data / "b" / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    base = ["eval", "knn", "--train", str(data), "--test", str(held), "--k", "3", "--cache", "none"]
    assert main([*base, "--encoder", "pixels"]) == 2
    assert "broken.jpg" in (err := capsys.readouterr().err) and "--skip-bad-images (eval knn" in err
    for encoder in ("pixels", "random"):
        assert main([*base, "--encoder", encoder, "--skip-bad-images"]) == 0
        out, err = capsys.readouterr()
        assert "(24 images" in out and "(8 images" in out
        if encoder == "pixels":  # said once per process (the check is cached)
            assert "skipped 1 unreadable image of 25" in err and "broken.jpg" in err


def test_demo_on_a_folder_with_a_broken_image_names_its_own_override(tmp_path, capsys):
    """`gensis demo --data FOLDER` with a broken file: the line named data.skip_bad_images=true, which the demo
    refuses (its keys take a stage prefix); it now names pretrain.data.skip_bad_images=true, and nothing is made."""
    from gensis.cli.main import main

    data = _folder(tmp_path / "imgs", n=40)
    (data / "b" / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    out = tmp_path / "demo"
    assert main(["demo", "--preset", "smoke", "--data", str(data), "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert "broken.jpg" in err and err.endswith("add pretrain.data.skip_bad_images=true (every stage of the demo "
                                                "then skips unreadable images and says how many)")
    assert err.count("\n") == 0 and not out.exists()


def test_photo_formats_are_read_and_those_gensis_cannot_read_are_counted(tmp_path, capsys):
    """A folder of a user's photos: .jfif / .jpe / .tga files (PIL reads them) were left out without a word, and so
    were a phone's .heic ones (PIL does not): the first are read now, the second counted in one line."""
    data = _folder(tmp_path / "imgs", n=8)
    Image.new("RGB", (8, 8), (200, 10, 10)).save(data / "a" / "web.jfif", format="JPEG")
    Image.new("RGB", (8, 8), (10, 200, 10)).save(data / "b" / "scan.tga")
    (data / "a" / "IMG_0001.HEIC").write_bytes(b"\0\0\0\x18ftypheic")
    (data / "c").mkdir()
    (data / "c" / "IMG_0002.heic").write_bytes(b"\0\0\0\x18ftypheic")  # a class of phone photos only
    ds = gensis.open_data(data, "all")
    assert len(ds) == 10 and ds.classes == ["a", "b"]
    assert any(p.name == "web.jfif" for p in ds.paths) and ds.get(len(ds) - 1).shape == (8, 8, 3)
    err = capsys.readouterr().err
    assert f"left out 2 files of {data} in a format gensis does not read (.heic 2; first:" in err
    assert "convert them to PNG or JPEG" in err and err.count("\n") == 1
    gensis.open_data(data, "train")
    assert "left out" not in capsys.readouterr().err  # said once


def test_eval_says_when_the_test_images_were_pretraining_images(tmp_path, capsys):
    """`gensis pretrain --data X@all`, then `gensis eval knn --encoder RUN` scored X's val split, images the encoder
    was pretrained on, as a held-out accuracy without a word (was); now a warning counts them. A run of X@train
    (the default) says nothing."""
    import tiny_runs

    from gensis.cli.main import main
    from gensis.rundir import atomic_write_json

    data = _folder(tmp_path / "imgs", n=40)
    for split, warned in (("@all", True), ("@train", False), ("", False)):
        run = tiny_runs.make_encoder_run(tmp_path / f"run{split}", overrides=("data.limit=null",))
        atomic_write_json(run / "manifest.json", {"stage": "pretrain", "status": "done",
                                                  "inputs": {"data": f"{data}{split}"}})
        assert main(["eval", "knn", "--encoder", str(run), "--k", "3", "--cache", "none"]) == 0
        err = capsys.readouterr().err
        assert ("8 of the 8 test images (imgs@val) are images" in err and "was pretrained on" in err) == warned, split
    assert main(["eval", "knn", "--encoder", str(tmp_path / "run@all"), "--train", f"{data}@train", "--test",
                 str(_folder(tmp_path / "held", n=8)), "--k", "3", "--cache", "none"]) == 0
    assert "pretrained on" not in capsys.readouterr().err  # other images: nothing to say


def test_a_folder_with_its_own_split_names_the_folders_it_does_not_read(tmp_path, capsys):
    """train/, val/ and test/: val/ is the held-out split and test/ was left out without a word; a line now names
    it (once), and how to score on it. Only train/ and val/ (or test/): nothing to say."""
    _folder(tmp_path / "tvt" / "train", n=8)
    _folder(tmp_path / "tvt" / "val", n=4)
    _folder(tmp_path / "tvt" / "test", n=4)
    (tmp_path / "tvt" / "notes").mkdir()  # no images: not worth a word
    assert len(gensis.open_data(tmp_path / "tvt", "val")) == 4
    err = capsys.readouterr().err
    assert "has its own split, train/ and val/ (held out); not read: test/ (gensis eval ... --test" in err
    assert "notes" not in err
    gensis.open_data(tmp_path / "tvt", "train")
    assert "not read" not in capsys.readouterr().err  # said once
    _folder(tmp_path / "tv" / "train", n=8)
    _folder(tmp_path / "tv" / "test", n=4)
    assert len(gensis.open_data(tmp_path / "tv", "val")) == 4 and "not read" not in capsys.readouterr().err


def test_a_folder_whose_path_holds_an_at_sign(tmp_path):
    """`--data ~/data/cifar@32px` was 'unknown split '@32px'': a path that exists is read as one (its split, if
    named, after a last '@'); a mistyped split of a path is still one line."""
    data = _folder(tmp_path / "cifar@32px", n=10)
    assert len(gensis.open_data(str(data), "all")) == 10 and len(gensis.open_data(f"{data}@val")) == 2
    with pytest.raises(UserError, match=r"unknown split '@vali'"):
        gensis.open_data(f"{data}@vali")
