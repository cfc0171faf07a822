"""A folder passed to the wrong option (``--eldm`` given a pretraining run, ``--encoder`` given a bank, ...) is one
line naming what the folder is, what was expected and the command that writes it (``gensis.folder_kind``)."""

import json

import numpy as np
import pytest

from gensis.cli.main import main
from gensis.folder_kind import folder_kind, require_kind


def _folder(path, files):
    path.mkdir(parents=True)
    for name, text in files.items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_text(text)
    return path


def _manifest(stage):
    return json.dumps({"stage": stage, "status": "done"})


@pytest.fixture()
def kinds(tmp_path):
    """One folder of each kind, holding what its writer leaves there (contents are not read by the check)."""
    from gensis.config import dump, load_config

    return {
        "pretrain": _folder(tmp_path / "dino", {"config.yaml": dump(load_config("pretrain", "smoke")),
                                                "manifest.json": _manifest("pretrain"),
                                                "teacher_backbone.safetensors": ""}),
        "eldm": _folder(tmp_path / "eldm", {"config.yaml": dump(load_config("eldm", "smoke")),
                                            "manifest.json": _manifest("eldm"), "eldm.json": "{}",
                                            "encoder/teacher_backbone.safetensors": ""}),
        "eldm-ae": _folder(tmp_path / "ae", {"manifest.json": _manifest("eldm-ae"), "autoencoder.json": "{}"}),
        "bank": _folder(tmp_path / "bank", {"bank.json": json.dumps({"format": "gensis-bank"}),
                                            "config.yaml": dump(load_config("bank", "smoke"))}),
        "mil": _folder(tmp_path / "mil", {"mil.json": "{}", "config.yaml": "{}"}),
        "features": _folder(tmp_path / "feats", {"s1.h5": ""}),
        "tiles": _folder(tmp_path / "tiles", {"mag10_px32/tiling.json": "{}", "mag10_px32/patches/s1.h5": ""}),
    }


@pytest.fixture()
def npz(tmp_path):
    path = tmp_path / "img.npz"
    np.savez(path, images=np.zeros((24, 16, 16, 3), np.uint8), labels=np.arange(24) % 2)
    return path


def test_each_kind_is_named_from_what_its_writer_leaves(kinds, tmp_path):
    for kind, path in kinds.items():
        assert folder_kind(path) == kind
    # without a manifest: the files alone (an autoencoder copy inside an E-LDM run, a run of an older gensis)
    (kinds["eldm-ae"] / "manifest.json").unlink()
    assert folder_kind(kinds["eldm-ae"]) == "eldm-ae"
    (kinds["pretrain"] / "manifest.json").unlink()
    assert folder_kind(kinds["pretrain"]) == "pretrain"
    # `gensis wsi tile --out TILES` writes TILES/<resolution>/tiling.json; a pipeline marks stages without manifest
    assert folder_kind(_folder(tmp_path / "tiles2", {"mag10_px32/tiling.json": "{}"})) == "tiles"
    assert folder_kind(_folder(tmp_path / "marked", {"stage-done.json": '{"stage": "features"}'})) == "features"
    assert folder_kind(tmp_path / "missing") is None and folder_kind(_folder(tmp_path / "empty", {})) is None
    require_kind(tmp_path / "empty", "eldm")  # no known kind: left to the caller's own check


def _line(capsys) -> str:
    err = capsys.readouterr().err
    lines = [l for l in err.splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith("gensis: error: "), err
    return lines[0]


@pytest.mark.parametrize("argv,given,expected", [
    (["eldm", "sample", "--eldm", "{pretrain}", "--out", "{tmp}/o"], "a pretraining run",
     "not an E-LDM run: pass the folder written by `gensis eldm train`"),
    (["eldm", "eval", "--eldm", "{pretrain}"], "a pretraining run", "not an E-LDM run"),
    (["eldm", "eval", "--eldm", "{bank}"], "an augmentation bank", "not an E-LDM run"),
    (["eldm", "sample", "--eldm", "{eldm-ae}", "--out", "{tmp}/o"], "an autoencoder run", "not an E-LDM run"),
    (["bank", "generate", "--eldm", "{pretrain}", "--out", "{tmp}/b", "--preset", "smoke"], "a pretraining run",
     "not an E-LDM run"),
    (["eval", "knn", "--encoder", "{eldm}", "--cache", "none"], "an E-LDM run",
     "not a pretraining run: pass the folder written by `gensis pretrain`"),
    (["eval", "knn", "--encoder", "{bank}", "--cache", "none"], "an augmentation bank", "not a pretraining run"),
    (["eval", "linear", "--encoder", "{eldm-ae}", "--cache", "none"], "an autoencoder run", "not a pretraining run"),
    (["eval", "knn", "--encoder", "random", "--random-like", "{eldm}", "--cache", "none"], "an E-LDM run",
     "not a pretraining run"),
    (["eldm", "train", "--encoder", "{bank}", "--out", "{tmp}/e", "--preset", "smoke"], "an augmentation bank",
     "not a pretraining run"),
    (["eldm", "train", "--encoder", "{pretrain}", "--ae", "{pretrain}", "--out", "{tmp}/e", "--preset", "smoke"],
     "a pretraining run", "not an autoencoder run: pass the folder written by `gensis eldm train-ae`"),
    (["pretrain", "--data", "{npz}", "--bank", "{eldm}", "--out", "{tmp}/p", "--preset", "smoke",
      "optim.batch_size=8"], "an E-LDM run", "not an augmentation bank: pass the folder written by `gensis bank generate`"),
    (["bank", "verify", "{pretrain}"], "a pretraining run", "not an augmentation bank"),
    (["export", "{pretrain}", "--to", "diffusers", "{tmp}/x"], "a pretraining run", "not an E-LDM run"),
    (["mil", "predict", "--run", "{pretrain}", "--feats", "{features}", "--out", "{tmp}/m"], "a pretraining run",
     "not a MIL run: pass the folder written by `gensis mil train`"),
    (["mil", "train", "--feats", "{eldm}", "--labels", "{tmp}/l.csv", "--out", "{tmp}/m", "--preset", "smoke"],
     "an E-LDM run", "not a features folder (slide bags): pass the folder written by `gensis wsi embed`"),
    (["mil", "train", "--feats", "{tiles}", "--labels", "{tmp}/l.csv", "--out", "{tmp}/m", "--preset", "smoke"],
     "a tiles folder", "not a features folder (slide bags)"),
    # --out: a gensis folder without a manifest was "not empty and not a gensis run folder (holds bank.json ...)"
    (["pretrain", "--data", "{npz}", "--out", "{bank}", "--preset", "smoke", "optim.batch_size=8"],
     "an augmentation bank", "not a pretraining run: use another --out"),
    (["eldm", "train", "--encoder", "{pretrain}", "--data", "{npz}", "--out", "{tiles}", "--preset", "smoke"],
     "a tiles folder", "not an E-LDM run: use another --out"),
])
def test_a_folder_of_another_kind_is_one_line_naming_both(kinds, npz, tmp_path, capsys, argv, given, expected):
    fill = {**{k: str(v) for k, v in kinds.items()}, "tmp": str(tmp_path), "npz": str(npz)}
    argv = [a.format(**fill) if "{" in a else a for a in argv]
    assert main(argv) == 2
    line = _line(capsys)
    assert f" is {given}, {expected}" in line, line


def test_mil_train_never_writes_into_another_kind_of_folder(kinds, tmp_path, capsys):
    run = kinds["pretrain"]
    before = (run / "config.yaml").read_text()
    (tmp_path / "l.csv").write_text("slide,label\ns1,a\n")
    assert main(["mil", "train", "--feats", str(kinds["features"]), "--labels", str(tmp_path / "l.csv"),
                 "--out", str(run), "--preset", "smoke"]) == 2
    line = _line(capsys)
    assert "is a pretraining run, not a MIL run" in line and "use another --out" in line, line
    assert (run / "config.yaml").read_text() == before and not (run / "mil.json").exists()


def test_demo_stages_json_with_its_timings_marks_the_demo(tmp_path):
    """stages.json holds stage keys and timing dicts (``_seconds``, ``_cpu_seconds`` since the side lane): the
    slide demo is known by it alone (its rerun was refused as 'not a slide demo folder' when a timing dict
    other than ``_seconds`` was there); timings alone, or a non-hex stage value, mark nothing."""
    timings = {"_seconds": {"tiles": 1.0}, "_cpu_seconds": {"tiles": 0.9}}
    slide = _folder(tmp_path / "slide", {"stages.json": json.dumps({"tiles": "ab12cd34", **timings})})
    assert folder_kind(slide) == "wsi-demo"
    demo = _folder(tmp_path / "demo", {"stages.json": json.dumps({"dino": "ab12cd34", **timings})})
    assert folder_kind(demo) == "demo"
    assert folder_kind(_folder(tmp_path / "t", {"stages.json": json.dumps(timings)})) is None
    assert folder_kind(_folder(tmp_path / "u", {"stages.json": json.dumps({"tiles": "not hex", **timings})})) is None
