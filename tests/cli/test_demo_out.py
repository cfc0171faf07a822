"""``gensis demo`` / ``gensis wsi demo`` rewrite files at the top of ``--out`` (stages.json, results, the report):
a folder that is not a demo's own (a user's folder, a run folder, the other demo's) is refused with one line, exit 2,
nothing written or deleted; a missing or empty folder, or one an earlier demo wrote, is used (resumed)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from cli_asserts import one_error_line
from gensis.errors import UserError
from gensis.folder_kind import require_own_or_empty

DEMOS = {"demo": ["demo", "--preset", "smoke"], "wsi-demo": ["wsi", "demo", "--preset", "smoke"]}
KEY = "0123456789abcdef"


def _listing(folder):
    return sorted((str(p.relative_to(folder)), p.stat().st_mtime_ns) for p in folder.rglob("*"))


def _folder(path, files):
    for name, text in files.items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_text(text)
    path.mkdir(parents=True, exist_ok=True)
    return path


def _gensis(argv, tmp_path):
    slide = tmp_path / "slide.svs"
    slide.write_bytes(b"never read: the demo stops before tiling")
    extra = ["--slide", str(slide)] if argv[0] == "wsi" else []
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "gensis.cli.main", *argv, *extra], capture_output=True, text=True,
                          env=env, timeout=300)


FOREIGN = {
    "home": ({"notes.txt": "mine", "photos/a.jpg": "x"}, "is not empty and not a{n} .*holds notes.txt ..."),
    "own-stages-json": ({"stages.json": '{"build": "done"}'}, "is not empty and not a{n} .*holds stages.json"),
    "pretrain-run": ({"manifest.json": json.dumps({"stage": "pretrain", "status": "done"}), "config.yaml": "a: 1\n",
                      "teacher_backbone.safetensors": ""}, "is a pretraining run, not a{n}"),
}


@pytest.mark.parametrize("demo", DEMOS)
@pytest.mark.parametrize("case", FOREIGN)
def test_a_folder_the_demo_did_not_write_is_refused_with_one_line_and_nothing_written(tmp_path, demo, case):
    files, msg = FOREIGN[case]
    out = _folder(tmp_path / "out", files)
    before = _listing(out)
    r = _gensis([*DEMOS[demo], "--out", str(out)], tmp_path)
    assert r.returncode == 2, r.stderr
    line = one_error_line(r.stderr)
    noun = " slide demo folder" if demo == "wsi-demo" else " demo folder"
    assert __import__("re").search(msg.format(n=noun), line), line
    assert _listing(out) == before  # nothing written (no lock file left), nothing deleted


def test_each_demo_refuses_the_others_folder(tmp_path):
    main = _folder(tmp_path / "main", {"demo-settings.json": json.dumps({"settings": "s", "overrides": []}),
                                       "stages.json": json.dumps({"dino": KEY, "_seconds": {}})})
    slide = _folder(tmp_path / "slide", {"stages.json": json.dumps({"tiles": KEY, "dino": KEY, "_seconds": {}})})
    with pytest.raises(UserError, match="is a demo folder, not a slide demo folder"):
        require_own_or_empty(main, "wsi-demo")
    with pytest.raises(UserError, match="is a slide demo folder, not a demo folder"):
        require_own_or_empty(slide, "demo")
    require_own_or_empty(main, "demo")
    require_own_or_empty(slide, "wsi-demo")


def test_missing_empty_and_earlier_demo_folders_are_used(tmp_path):
    for kind in DEMOS:
        require_own_or_empty(tmp_path / "missing", kind)
        require_own_or_empty(_folder(tmp_path / "empty", {}), kind)
        require_own_or_empty(_folder(tmp_path / "locked", {".gensis.lock": "{}"}), kind)  # killed at its start
    # gensis demo: killed after its first file, finished, older stages.json, --seeds (killed in seed 0's start)
    for name, files in {
        "settings": {".gensis.lock": "{}", "demo-settings.json": json.dumps({"settings": "s", "overrides": []})},
        "done": {"stages.json": json.dumps({"dino": KEY, "eldm": KEY, "_seconds": {"dino": 1.0}}),
                 "report.md": "# report", "dino/manifest.json": "{}"},
        "old-keys": {"stages.json": json.dumps({"dino": {"key": KEY[:12], "done": True, "seconds": 1.0}})},
        "seeds": {"seeds.json": json.dumps({"seeds": [0, 1]}), "seeds.md": "", "seed-0/stages.json":
                  json.dumps({"dino": KEY})},
        "seed-started": {"seed-0/.gensis.lock": "{}"},
    }.items():
        require_own_or_empty(_folder(tmp_path / name, files), "demo")
    require_own_or_empty(_folder(tmp_path / "wsi", {"stages.json": json.dumps({"tiles": KEY}), "results.md": ""}),
                         "wsi-demo")
    with pytest.raises(UserError, match="is a file, not a folder"):
        require_own_or_empty(_folder(tmp_path, {"f": ""}) / "f", "demo")
