"""gensis eval retrieval / copydetect end to end on tiny folders in the benchmarks' own layouts."""

import json
import os
import pickle

import numpy as np
import pytest
from PIL import Image

from gensis.cli.main import main


def _pattern(i, size=24):
    g = np.random.default_rng(100 + i)
    return (g.random((size // 4, size // 4, 3)) * 255).astype(np.uint8).repeat(4, 0).repeat(4, 1)


def _save(path, arr):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path, quality=95)


def make_revisited(root, dataset="roxford5k", landmarks=4, per=3):
    """db image j is landmark j // per (noisy); query i shows landmark i inside a bigger random image (its box)."""
    base = root / dataset
    g = np.random.default_rng(0)
    imlist, qimlist, gnd = [], [], []
    for j in range(landmarks * per):
        img = np.clip(_pattern(j // per).astype(int) + g.integers(-20, 20, (24, 24, 3)), 0, 255).astype(np.uint8)
        _save(base / "jpg" / f"db_{j}.jpg", img)
        imlist.append(f"db_{j}")
    for i in range(landmarks):
        img = (g.random((60, 60, 3)) * 255).astype(np.uint8)
        img[20:44, 30:54] = _pattern(i)
        _save(base / "jpg" / f"q_{i}.jpg", img)
        qimlist.append(f"q_{i}")
        ids = np.arange(i * per, (i + 1) * per)
        gnd.append({"bbx": np.array([30.0, 20.0, 54.0, 44.0]), "easy": ids[:2], "hard": ids[2:],
                    "junk": np.array([], dtype=np.int64)})
    (base / f"gnd_{dataset}.pkl").write_bytes(pickle.dumps({"imlist": imlist, "qimlist": qimlist, "gnd": gnd}))
    return root


def test_retrieval_end_to_end(tmp_path, capsys):
    root = make_revisited(tmp_path / "revisited")
    js = tmp_path / "r.json"
    assert main(["eval", "retrieval", "--encoder", "pixels", "--data", str(root), "--dataset", "roxford5k",
                 "--imsize", "24", "--json", str(js)]) == 0
    text = capsys.readouterr().out
    assert "medium" in text and "hard" in text
    res = json.loads(js.read_text())
    assert res["database"] == 12 and res["queries"] == 4
    assert res["results"]["medium"]["mAP"] > 90  # the cropped query finds its landmark
    assert res["results"]["hard"]["queries_scored"] == 4
    assert main(["eval", "retrieval", "--encoder", "pixels", "--data", str(root / "roxford5k"),
                 "--dataset", "roxford5k", "--imsize", "24", "--multiscale"]) == 0


def test_retrieval_protocol_without_positives_is_no_number_and_valid_json(tmp_path, capsys):
    """Queries without Hard positives gave mAP NaN, written as a bare NaN that is not JSON (jq, JavaScript and
    strict parsers reject it) and printed as 'nan'; it is null in the file, '-' in the table, said in a line."""
    root = make_revisited(tmp_path / "revisited")
    gnd_path = root / "roxford5k" / "gnd_roxford5k.pkl"
    cfg = pickle.loads(gnd_path.read_bytes())
    for g in cfg["gnd"]:
        g["easy"], g["hard"] = np.concatenate([g["easy"], g["hard"]]), np.array([], dtype=np.int64)
    gnd_path.write_bytes(pickle.dumps(cfg))
    js = tmp_path / "r.json"
    assert main(["eval", "retrieval", "--encoder", "pixels", "--data", str(root), "--dataset", "roxford5k",
                 "--imsize", "24", "--json", str(js), "--cache", "none"]) == 0
    out = capsys.readouterr().out
    assert "nan" not in out and "hard: no query has positives in this protocol, so no mAP (-)" in out

    def no_constants(name):
        raise ValueError(f"{name} is not JSON")

    res = json.loads(js.read_text(), parse_constant=no_constants)
    assert res["results"]["hard"]["mAP"] is None and res["results"]["hard"]["queries_scored"] == 0
    assert res["results"]["medium"]["mAP"] > 90


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


@pytest.mark.parametrize("case,msg", [("evil", "refusing"), ("nognd", "gnd_roxford5k.pkl"),
                                      ("nojpg", "db_0.jpg")])
def test_retrieval_bad_layout_one_line(tmp_path, capsys, case, msg):
    root = make_revisited(tmp_path / "rv", landmarks=2, per=1)
    base = root / "roxford5k"
    if case == "evil":
        (base / "gnd_roxford5k.pkl").write_bytes(pickle.dumps({"imlist": [], "qimlist": [], "gnd": [_Evil()]}))
    elif case == "nognd":
        (base / "gnd_roxford5k.pkl").unlink()
    else:
        (base / "jpg" / "db_0.jpg").unlink()
    assert main(["eval", "retrieval", "--encoder", "pixels", "--data", str(root), "--dataset", "roxford5k"]) == 2
    err = capsys.readouterr()
    assert "pwned" not in err.out
    lines = err.err.strip().splitlines()
    assert len(lines) == 1 and msg in lines[0]


def make_copydays(root, n=5):
    g = np.random.default_rng(1)
    for i in range(n):
        orig = np.kron(_pattern(i, 32), np.ones((1, 1, 1), np.uint8))
        _save(root / "original" / f"{i:04d}00.jpg", orig)
        strong = orig.copy()
        strong[:10] = (g.random((10, 32, 3)) * 255).astype(np.uint8)  # an insertion over a third
        _save(root / "strong" / f"{i:04d}01.jpg", strong)
        _save(root / "jpegqual" / "10" / f"{i:04d}00.jpg", orig)
        crop = np.asarray(Image.fromarray(orig[4:28, 4:28]).resize((32, 32)))
        _save(root / "crops" / "50" / f"{i:04d}00.jpg", crop)
    for j in range(6):
        _save(root.parent / "distractors" / f"d{j}.jpg", (g.random((32, 32, 3)) * 255).astype(np.uint8))
    return root


def test_copydetect_end_to_end(tmp_path, capsys):
    root = make_copydays(tmp_path / "copydays")
    js = tmp_path / "c.json"
    assert main(["eval", "copydetect", "--encoder", "pixels", "--data", str(root), "--imsize", "16",
                 "--distractors", str(tmp_path / "distractors"), "--whiten", str(tmp_path / "distractors"),
                 "--json", str(js)]) == 0
    cap = capsys.readouterr()
    text = cap.out
    assert "strong" in text and "jpegqual/10" in text and "crops/50" in text
    assert "6 images for 960-d descriptors; PCA whitening needs more images than dimensions" in \
        cap.err  # a degenerate whitening was applied without a word
    res = json.loads(js.read_text())
    assert res["database"] == {"originals": 5, "distractors": 6}
    assert res["config"]["whitening"]["images"] == 6
    assert res["mAP_strong"] > 60 and res["results"]["jpegqual/10"]["mAP"] > 95
    assert main(["eval", "copydetect", "--encoder", "pixels", "--data", str(root), "--imsize", "16"]) == 0


def test_copydetect_table_says_which_numbers_are_not_the_benchmarks(tmp_path, capsys):
    """The 'original' row (the database scored against itself: 100) and queries whose name matches no original
    (silently left out of the mAP) are said in the table."""
    root = make_copydays(tmp_path / "copydays", n=3)
    _save(root / "strong" / "999901.jpg", _pattern(7, 32))  # named like no original
    assert main(["eval", "copydetect", "--encoder", "pixels", "--data", str(root), "--imsize", "16"]) == 0
    text = capsys.readouterr().out
    assert "the database's own images" in text
    assert "strong: 1 of 4 queries have no original sharing their first 4 characters" in text


def test_copydetect_missing_strong_is_one_line(tmp_path, capsys):
    root = make_copydays(tmp_path / "copydays", n=2)
    import shutil

    shutil.rmtree(root / "strong")
    assert main(["eval", "copydetect", "--encoder", "pixels", "--data", str(root)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "strong" in lines[0]


def test_result_files_have_no_nan():
    from gensis.eval.registry import json_ready

    assert json_ready({"a": [float("nan"), 1.0, {"b": float("-inf")}], "c": "x"}) == {"a": [None, 1.0, {"b": None}],
                                                                                     "c": "x"}


def test_copydetect_header_names_the_descriptor_used(tmp_path, capsys):
    """--encoder pixels has no CLS token: the header said 'CLS ⊕ GeM(p=4)' for the flattened image ⊕ GeM of
    8-px pixel patches; a ViT's header still says CLS ⊕ GeM."""
    root = make_copydays(tmp_path / "copydays", n=2)
    js = tmp_path / "c.json"
    assert main(["eval", "copydetect", "--encoder", "pixels", "--data", str(root), "--imsize", "16",
                 "--json", str(js)]) == 0
    header = capsys.readouterr().out.splitlines()[1]
    assert "CLS" not in header and "raw pixels ⊕ GeM(p=4) of 8×8-px patches at 16 px" in header
    assert json.loads(js.read_text())["config"]["descriptor"].startswith("raw pixels")
    assert main(["eval", "copydetect", "--encoder", "random", "--data", str(root), "--imsize", "16"]) == 0
    assert "; CLS ⊕ GeM(p=4) at 16 px" in capsys.readouterr().out.splitlines()[1]


@pytest.mark.parametrize("entry,msg", [("one-based", "holds 12, not an index of the 12 database images"),
                                       ("not-dict", "gnd[0] (query q_0) is a list"),
                                       ("words", "'junk' is not a list of database indices"),
                                       ("box-xywh", "'bbx' [30.0, 20.0, 24.0, 24.0] is empty"),
                                       ("box-3", "'bbx' is not 4 numbers")])
def test_retrieval_malformed_ground_truth_one_line(tmp_path, capsys, entry, msg):
    """A positive index outside the database (1-based indices: the last image is 12 of 0..11) matched no image and
    lowered the mAP without a word; a gnd entry that is no dict was an AttributeError traceback."""
    root = make_revisited(tmp_path / "rv")
    gnd_path = root / "roxford5k" / "gnd_roxford5k.pkl"
    cfg = pickle.loads(gnd_path.read_bytes())
    if entry == "one-based":
        for g in cfg["gnd"]:
            g["easy"], g["hard"] = g["easy"] + 1, g["hard"] + 1
    elif entry == "not-dict":
        cfg["gnd"][0] = [0, 1]
    elif entry == "box-xywh":  # x, y, width, height instead of x0, y0, x1, y1: was the whole image, silently
        cfg["gnd"][0]["bbx"] = np.array([30.0, 20.0, 24.0, 24.0])
    elif entry == "box-3":
        cfg["gnd"][2]["bbx"] = [1.0, 2.0, 3.0]
    else:
        cfg["gnd"][1]["junk"] = ["db_3"]
    gnd_path.write_bytes(pickle.dumps(cfg))
    assert main(["eval", "retrieval", "--encoder", "pixels", "--data", str(root), "--dataset", "roxford5k",
                 "--imsize", "24", "--cache", "none"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and msg in lines[0], lines


@pytest.mark.parametrize("block", ["original", "strong"])
def test_copydetect_distractors_from_the_copydays_folder_are_refused(tmp_path, capsys, block):
    """--distractors ROOT/original or ROOT/strong put an original twice in the database (the copy a
    non-positive) or a query itself there, and the mAP dropped without a word; now one line before any work."""
    root = make_copydays(tmp_path / "copydays")
    assert main(["eval", "copydetect", "--encoder", "pixels", "--data", str(root), "--imsize", "16",
                 "--distractors", str(root / block), "--cache", "none"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and f"of {block}/" in lines[0] and "Copydays' own" in lines[0], lines


def test_copydays_from_a_mac_skips_its_appledouble_files(tmp_path):
    """._200000.jpg files (a Mac's metadata beside each JPEG) were read as images of the Copydays blocks (an
    unreadable image, or a wrong count of queries); hidden files are skipped as in every gensis data folder."""
    from gensis.eval.copydetect import copydays_layout

    root = make_copydays(tmp_path / "copydays", n=2)
    for block in ("original", "strong", "jpegqual/10"):
        (root / block / "._000000.jpg").write_bytes(b"\0\x05\x16\x07Mac OS X")
    blocks = copydays_layout(root)["blocks"]
    assert [len(blocks[b]) for b in ("original", "strong", "jpegqual/10", "crops/50")] == [2, 2, 2, 2]
