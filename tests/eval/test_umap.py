"""gensis eval umap: real classes and a bank's interpolations in one projection, encoders side by side."""

import json

import numpy as np
import pytest
from PIL import Image

from gensis.cli.main import main


def _npz(path, n=60):
    g = np.random.default_rng(0)
    labels = np.arange(n) % 3
    images = (g.random((n, 8, 8, 3)) * 60).astype(np.uint8)
    for c in range(3):
        images[labels == c, c * 2:c * 2 + 3, :, c] = 230
    np.savez(path, images=images, labels=labels, classes=np.array(["ant", "bee", "cat"]))
    return path


@pytest.mark.parametrize("method", [pytest.param("umap", marks=pytest.mark.slow),  # numba compiles for minutes
                                    "tsne"])
def test_map_with_bank_two_encoders(tmp_path, capsys, method):
    data = _npz(tmp_path / "d.npz")
    bank = tmp_path / "bank"
    assert main(["bank", "generate", "--generator", "gensis.bank.fake:FakeGenerator", "--data", str(data),
                 "--out", str(bank), "--preset", "smoke", "--quiet", "gen.num_generative=1", "gen.alphas=[0.5]",
                 "run.batch_size=16", "run.threads=1", "data.limit=null"]) == 0
    capsys.readouterr()
    png, js = tmp_path / "map.png", tmp_path / "map.json"
    assert main(["eval", "umap", "--encoder", "pixels,random", "--data", f"{data}@train", "--bank", str(bank),
                 "--classes", "ant,cat", "--per-class", "12", "--out", str(png), "--json", str(js),
                 "--method", method]) == 0
    res = json.loads(js.read_text())
    assert res["classes"] == ["ant", "cat"] and res["real"] == 24 and res["interpolated"] > 0
    assert [e["encoder"]["name"] for e in res["encoders"]] == ["pixels", "random"]
    assert all(e["method"] == method for e in res["encoders"])
    assert res["encoders"][0]["silhouette_real"] > 0.2  # pixels separate the stripe classes
    with Image.open(png) as im:
        assert im.width > 1.8 * im.height  # two panels side by side
    # the whole source instead of the bank's split: its real images, the bank's interpolations (on the bank's own
    # images, read as the bank read them)
    assert main(["eval", "umap", "--encoder", "pixels", "--data", str(data), "--bank", str(bank), "--out", str(png),
                 "--json", str(js), "--method", method]) == 0
    res = json.loads(js.read_text())
    assert res["real"] == 60 and res["interpolated"] > 0


def test_map_with_a_bank_of_a_data_limit(tmp_path, capsys):
    """A bank made with data.limit (the smoke demo's) maps with --data DATA@train, the split it names (it was refused
    naming that same spec, which no --data could satisfy); data that is gone is one line naming the bank's spec."""
    data = _npz(tmp_path / "d.npz")
    bank = tmp_path / "bank"
    assert main(["bank", "generate", "--generator", "gensis.bank.fake:FakeGenerator", "--data", str(data),
                 "--out", str(bank), "--preset", "smoke", "--quiet", "gen.num_generative=1", "gen.alphas=[0.5]",
                 "run.batch_size=16", "run.threads=1", "data.limit=30"]) == 0
    png, js = tmp_path / "map.png", tmp_path / "map.json"
    assert main(["eval", "umap", "--encoder", "pixels", "--data", f"{data}@train", "--bank", str(bank),
                 "--per-class", "5", "--out", str(png), "--json", str(js), "--method", "tsne"]) == 0
    res = json.loads(js.read_text())
    assert res["real"] == 15 and res["interpolated"] > 0
    capsys.readouterr()
    other = tmp_path / "other.npz"
    data.rename(other)
    assert main(["eval", "umap", "--encoder", "pixels", "--data", f"{other}@train", "--bank", str(bank),
                 "--out", str(png), "--method", "tsne"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"({data}@train)" in err[0], err


def test_umap_wrong_bank_and_class_are_one_line(tmp_path, capsys):
    data = _npz(tmp_path / "d.npz")
    png = tmp_path / "m.png"
    assert main(["eval", "umap", "--encoder", "pixels", "--data", str(data), "--classes", "dog",
                 "--out", str(png)]) == 2
    assert "'dog'" in capsys.readouterr().err
    assert main(["eval", "umap", "--encoder", "pixels", "--data", str(data), "--bank", str(tmp_path / "nobank"),
                 "--out", str(png)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "nobank" in lines[0]


def test_map_with_interpolations_given_directly(tmp_path):
    """The demo report's path: interpolated images passed in (E-LDM samples), no bank."""
    import torch

    from gensis.data.sources import open_data
    from gensis.eval.umap import embedding_map
    from gensis.models.encoder import load_encoder

    ds = open_data(str(_npz(tmp_path / "d.npz")), "all")
    a, b = np.flatnonzero(ds.labels == 0)[:5], np.flatnonzero(ds.labels == 2)[:5]
    mixed = (ds.stack(a).astype(np.float32) + ds.stack(b)) / 2  # (5, 8, 8, 3) "interpolations"
    inter = torch.from_numpy(mixed.round().astype(np.uint8)).permute(0, 3, 1, 2)
    enc = load_encoder("pixels", image_size=8)
    enc.name = "raw pixels"
    res = embedding_map([enc], ds, tmp_path / "m.png", per_class=10, method="tsne",
                        interpolations=(inter, np.full(5, 0.5), np.stack([ds.labels[a], ds.labels[b]], 1)))
    assert res["interpolated"] == 5 and res["bank"] is None and res["encoders"][0]["encoder"]["name"] == "raw pixels"
    assert res["encoders"][0]["interp_to_segment"] is not None and (tmp_path / "m.png").stat().st_size > 1000


def test_out_never_overwrites_a_png_it_did_not_write(tmp_path, capsys):
    """--out naming an existing figure of the user's was silently overwritten; it is refused in one line before any
    work, and a map this command wrote is replaced on a rerun."""
    data = _npz(tmp_path / "d.npz")
    mine = tmp_path / "figure1.png"
    Image.new("RGB", (4, 4), (255, 0, 0)).save(mine)
    before = mine.read_bytes()
    argv = ["eval", "umap", "--encoder", "pixels", "--data", str(data), "--per-class", "5", "--method", "tsne",
            "--cache", "none", "--out"]
    (tmp_path / "maps.png").mkdir()
    for out, msg in ((mine, "not a map `gensis eval umap` wrote"), (tmp_path / "maps.png", "is a folder")):
        assert main(argv + [str(out)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and msg in err[0], err
    assert mine.read_bytes() == before
    png = tmp_path / "map.png"
    for _ in range(2):  # its own map: written again
        assert main(argv + [str(png)]) == 0


def test_umap_fit_says_it_is_compiling(tmp_path, capsys, monkeypatch):
    """The default method sat silent for up to a minute (umap-learn's numba compiles in every run): one line says
    so before the fit. A stand-in umap module keeps the test fast."""
    import sys
    import types

    class FakeUMAP:
        def __init__(self, **kw):
            pass

        def fit(self, x):
            self.embedding_ = np.asarray(x)[:, :2].astype(np.float64)
            return self

    monkeypatch.setitem(sys.modules, "umap", types.SimpleNamespace(UMAP=FakeUMAP))
    data = _npz(tmp_path / "d.npz")
    assert main(["eval", "umap", "--encoder", "pixels", "--data", str(data), "--per-class", "5", "--cache", "none",
                 "--out", str(tmp_path / "m.png")]) == 0
    cap = capsys.readouterr()
    assert "fitting UMAP on 15 images" in cap.err and "umap" in cap.out


def test_one_image_per_class_has_no_silhouette(tmp_path, capsys):
    """Three classes of one image each: the silhouette (defined for 2 .. n - 1 classes) was sklearn's ValueError
    traceback; the map is drawn and the silhouette is '-'."""
    for c, v in (("a", 20), ("b", 120), ("c", 220)):
        (tmp_path / "d" / c).mkdir(parents=True)
        Image.fromarray(np.full((8, 8, 3), v, np.uint8)).save(tmp_path / "d" / c / "0.png")
    js = tmp_path / "m.json"
    assert main(["eval", "umap", "--encoder", "pixels", "--data", str(tmp_path / "d"), "--method", "tsne",
                 "--cache", "none", "--out", str(tmp_path / "m.png"), "--json", str(js)]) == 0
    assert json.loads(js.read_text())["encoders"][0]["silhouette_real"] is None


@pytest.mark.parametrize("method", ["tsne", "umap"])
def test_two_images_are_one_line(tmp_path, capsys, method):
    """A map of 2 images was sklearn's (perplexity) or umap-learn's (n_neighbors) ValueError traceback."""
    for c, v in (("a", 20), ("b", 200)):
        (tmp_path / "d" / c).mkdir(parents=True)
        Image.fromarray(np.full((8, 8, 3), v, np.uint8)).save(tmp_path / "d" / c / "0.png")
    assert main(["eval", "umap", "--encoder", "pixels", "--data", str(tmp_path / "d"), "--method", method,
                 "--cache", "none", "--out", str(tmp_path / "m.png")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "a map needs at least 3 images; classes a, b of d have 2" in err[0], err


def test_umap_compile_note_is_said_once_per_process(monkeypatch, capsys):
    """The report fits one map per encoder (DINO, Gen-DINO): 'its numba code compiles first ... up to a minute'
    was printed before each fit, though only the first compiles."""
    import sys
    import types

    import gensis.eval.umap as mod

    class FakeUMAP:
        def __init__(self, **kw):
            pass

        def fit(self, x):
            self.embedding_ = x[:, :2]
            return self

    monkeypatch.setitem(sys.modules, "umap", types.SimpleNamespace(UMAP=FakeUMAP))
    monkeypatch.setattr(mod, "_umap_compiled", False)
    real = np.random.default_rng(0).random((20, 4))
    mod._project(real, None, "umap", 0)
    mod._project(real, None, "umap", 0)
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 2 and "compiles first" in lines[0] and "compiles" not in lines[1]
    assert lines[1] == "[gensis] fitting UMAP on 20 images"


def test_a_map_of_many_classes_says_what_it_shows_and_is_the_same_for_a_seed(tmp_path, monkeypatch):
    """25 classes: tab10 drew classes 0 and 10 (1 and 11 ...) alike, the legend ran below the figure over the points,
    and nothing said which data the map was of. Now each class has its own colour, the legend stands beside the
    panels (inside the PNG), the title names the data and counts, and one seed gives the same PNG."""
    import matplotlib.figure

    g = np.random.default_rng(1)
    labels = np.repeat(np.arange(25), 4)
    images = np.clip(g.integers(0, 255, (25, 8, 8, 3))[labels] + g.normal(0, 20, (100, 8, 8, 3)), 0, 255)
    np.savez(tmp_path / "many.npz", images=images.astype(np.uint8), labels=labels)
    figs = []
    real = matplotlib.figure.Figure.savefig

    def savefig(self, *a, **kw):
        figs.append((self, kw))
        return real(self, *a, **kw)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", savefig)
    png = tmp_path / "m.png"
    argv = ["eval", "umap", "--encoder", "pixels", "--data", str(tmp_path / "many.npz"), "--per-class", "4",
            "--classes", ",".join(map(str, range(25))), "--method", "tsne", "--seed", "3", "--quiet"]
    assert main([*argv, "--out", str(png)]) == 0
    fig, kw = figs[-1]
    assert fig._suptitle.get_text() == "many: 100 real images of 25 classes (dots)"
    (ax,) = fig.axes
    colours = [tuple(c.get_facecolor()[0][:3]) for c in ax.collections]
    assert len(colours) == 25 and len(set(colours)) == 25
    fig.canvas.draw()
    legend = ax.get_legend()
    assert legend.get_window_extent().x0 >= ax.get_window_extent().x1  # beside the points, not over them
    assert kw.get("bbox_inches") == "tight"  # and inside the PNG
    assert main([*argv, "--out", str(tmp_path / "again.png")]) == 0
    assert (tmp_path / "again.png").read_bytes() == png.read_bytes()


def test_long_encoder_paths_are_cut_visibly_in_the_table_and_summary():
    """An encoder path longer than a column was cut at its start with nothing to show it: `eval all`'s summary
    read 'silhouette (ocsrun/api/runs/dino)' for /tmp/h-docsrun/api/runs/dino, a path that looks like another's."""
    from gensis.eval.umap import EVALUATION, format_umap

    long, short = "/tmp/h-docsrun/api/runs/dino", "runs/dino"
    res = {"data": "d", "classes": ["a"], "real": 2, "interpolated": 0, "bank": None, "png": "m.png",
           "encoders": [{"encoder": {"name": n}, "method": "tsne", "silhouette_real": 0.5, "interp_to_segment": None}
                        for n in (long, short, "/a/very/long/path/to/the/pretraining/runs/of/this/study/dino")]}
    (metric_long, _), (metric_short, _), _ = EVALUATION.headline(res)
    assert metric_long == "silhouette (…csrun/api/runs/dino)" and metric_short == "silhouette (runs/dino)"
    rows = format_umap(res).splitlines()[2:5]
    assert rows[0].startswith(long) and rows[1].startswith(short)
    assert rows[2].startswith("…") and rows[2].split()[0].endswith("/of/this/study/dino") and len(rows[2].split()[0]) == 40


def test_unlabelled_images_are_mapped_in_one_colour(tmp_path, capsys):
    """Unlabelled data (tiles of a slide, a folder of images) was refused ('has no labels: the map colours real
    images by class'); it is now mapped in one colour (up to 3 x --per-class images), the title saying unlabelled;
    --classes / --bank, which need classes, are one line."""
    g = np.random.default_rng(0)
    np.savez(tmp_path / "tiles.npz", images=(g.random((40, 8, 8, 3)) * 255).astype(np.uint8))
    png, js = tmp_path / "m.png", tmp_path / "m.json"
    base = ["eval", "umap", "--encoder", "pixels", "--data", str(tmp_path / "tiles.npz"), "--method", "tsne"]
    assert main([*base, "--per-class", "10", "--out", str(png), "--json", str(js)]) == 0
    res = json.loads(js.read_text())
    assert res["real"] == 30 and res["classes"] == ["images (unlabelled)"]
    assert res["encoders"][0]["silhouette_real"] is None and png.stat().st_size > 1000
    capsys.readouterr()
    assert main([*base, "--classes", "a,b", "--out", str(tmp_path / "n.png")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "tiles has no labels: --classes and --bank" in err
    from gensis.eval.umap import map_title

    assert map_title("tiles", 30, ["images (unlabelled)"], None) == "tiles: 30 unlabelled images (dots)"
