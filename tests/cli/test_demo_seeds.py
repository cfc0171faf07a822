"""Aggregation of `gensis demo --seeds`: mean ± sample std per cell, paired Gen-DINO − DINO difference."""

import math
from types import SimpleNamespace

import pytest

from gensis.pipeline.seeds import format_seed_table, seeds_markdown, summarize_seeds


def _row(label, k10, k20, lin=None):
    row = {"label": label, "knn": {"results": [{"k": 10, "top1": k10}, {"k": 20, "top1": k20}]}}
    if lin is not None:
        row["linear"] = {"top1": lin}
    return row


def _per_seed():
    # DINO 20-NN 60, 62, 64 -> mean 62, sample std 2; Gen-DINO 61, 62, 66 -> diffs 1, 0, 2 -> mean 1, std 1
    return {
        0: {"dino": _row("DINO", 61, 60, 40), "gendino": _row("Gen-DINO", 60, 61, 41), "pixels": _row("raw pixels", 85, 84, 58)},
        1: {"dino": _row("DINO", 63, 62, 42), "gendino": _row("Gen-DINO", 64, 62, 42), "pixels": _row("raw pixels", 85, 84, 58)},
        2: {"dino": _row("DINO", 65, 64, 44), "gendino": _row("Gen-DINO", 66, 66, 40), "pixels": _row("raw pixels", 85, 84, 58)},
    }


def test_mean_and_sample_std_by_hand():
    s = summarize_seeds(_per_seed())
    assert s["seeds"] == [0, 1, 2]
    d20 = s["methods"]["dino"]["metrics"]["20-NN"]
    assert d20["mean"] == pytest.approx(62.0) and d20["std"] == pytest.approx(2.0)  # ddof=1, not 1.633
    assert s["methods"]["pixels"]["metrics"]["10-NN"]["std"] == 0.0
    lin = s["methods"]["gendino"]["metrics"]["linear probe"]
    assert lin["mean"] == pytest.approx(41.0) and lin["std"] == pytest.approx(1.0)
    diff = s["gendino_minus_dino"]["20-NN"]
    assert diff["values"] == [1.0, 0.0, 2.0]
    assert diff["mean"] == pytest.approx(1.0) and diff["std"] == pytest.approx(1.0)
    # method order follows the paper's table, baselines last; a method missing in one seed is dropped
    assert list(s["methods"]) == ["dino", "gendino", "pixels"]


def test_method_missing_in_a_seed_is_left_out_and_single_seed_has_zero_std():
    per = _per_seed()
    del per[1]["pixels"]
    s = summarize_seeds(per)
    assert "pixels" not in s["methods"]
    one = summarize_seeds({3: _per_seed()[0]})
    assert one["methods"]["dino"]["metrics"]["20-NN"]["std"] == 0.0 and not math.isnan(
        one["gendino_minus_dino"]["20-NN"]["mean"])


def test_tables_show_every_cell():
    s = summarize_seeds(_per_seed())
    table = format_seed_table(s)
    assert "62.0 ± 2.0" in table and "Gen-DINO − DINO" in table and "+1.0 ± 1.0" in table
    md = seeds_markdown(s, SimpleNamespace(preset="small", data="builtin:animal-mnist", out="OUT"))
    assert "gensis demo --preset small --data builtin:animal-mnist --seeds 0,1,2 --out OUT" in md
    assert "| 2 | 65.0 | 64.0 | 44.0 |" in md  # per-seed row: DINO 10-NN, 20-NN, linear of seed 2


def test_each_paired_difference_is_shown_once_with_every_row_and_its_seeds():
    """The paired Gen-DINO − DINO used to be printed (and written to seeds.md) twice: a "(paired by seed)" line
    under the table and the "How to read it" block. Now only the block, which also carries what only that line
    had (the other rows: 10-NN, linear probe) and the difference in each seed."""
    s = summarize_seeds(_per_seed())
    md = seeds_markdown(s, SimpleNamespace(preset="small", data="builtin:animal-mnist", out="OUT"))
    for text in (format_seed_table(s), md):
        assert "paired by seed)" not in text
        # 20-NN (the block's row): diffs 1, 0, 2 -> +1.0 ± 1.0, once
        assert text.count("+1.0 ± 1.0") == 1, text
        # 10-NN: -1, +1, +1 -> mean 0.33, std 1.15; linear probe: +1, 0, -4 -> mean -1, std 2.65
        assert ("Gen-DINO − DINO in the other rows: 10-NN +0.3 ± 1.2 (per seed -1.0, +1.0, +1.0), within noise; "
                "linear probe -1.0 ± 2.6 (per seed +1.0, +0.0, -4.0), within noise.") in " ".join(text.split())
    assert "| Gen-DINO − DINO | +1.0 ± 1.0 | within noise | +1.0, +0.0, +2.0 |" in md
    assert md.index("## How to read it") < md.index("in the other rows") < md.index("Per seed:")


@pytest.mark.slow
def test_demo_seeds_runs_each_seed_and_summarizes(tmp_path):
    import json
    import os
    import subprocess
    import sys

    out = tmp_path / "seeds"
    r = subprocess.run([sys.executable, "-m", "gensis.cli.main", "demo", "--preset", "smoke", "--seeds", "1,0",
                        "--stages", "dino,eval", "--no-linear", "--out", str(out), "--quiet"],
                       capture_output=True, text=True, env={**os.environ, "GENSIS_NO_PROGRESS": "1"})
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads((out / "seeds.json").read_text())
    assert summary["seeds"] == [0, 1]
    per_seed = [json.loads((out / f"seed-{s}" / "results.json").read_text()) for s in (0, 1)]
    for s, res in zip((0, 1), per_seed):  # each seed trained its own DINO with its own seed
        assert json.loads((out / f"seed-{s}" / "dino" / "manifest.json").read_text())["seed"] == s
    vals = [next(x["top1"] for x in res["dino"]["knn"]["results"] if x["k"] == 20) for res in per_seed]
    cell = summary["methods"]["dino"]["metrics"]["20-NN"]
    assert cell["values"] == pytest.approx(vals)
    assert cell["std"] == pytest.approx(abs(vals[0] - vals[1]) / 2 ** 0.5)
    assert "mean ± std over seeds [0, 1]" in r.stdout and (out / "seeds.md").is_file()


def test_seeds_command_repeats_stages_and_no_linear():
    """seeds.md's Command line left out --stages and --no-linear: run as printed it did other work (every stage,
    the linear probe)."""
    md = seeds_markdown(summarize_seeds(_per_seed()), SimpleNamespace(
        preset="smoke", data="D", out="OUT", stages=("dino", "eval", "report"), linear=False))
    assert "gensis demo --preset smoke --data D --seeds 0,1,2 --out OUT --stages dino,eval,report --no-linear`" in md


def test_seeds_md_says_what_its_numbers_are():
    """seeds.md said only 'Top-1 accuracy (%) on the held-out split': not which split, its size, k or what a column
    is; it now opens with the report's paragraph (from a seed's rows), then says each cell is mean ± std."""
    per = _per_seed()
    for rows in per.values():
        for row in rows.values():
            row["knn"].update(train={"name": "animal-mnist@train", "size": 8000},
                              test={"name": "animal-mnist@val", "size": 2000}, temperature=0.07)
    md = seeds_markdown(summarize_seeds(per), SimpleNamespace(preset="small", data="builtin:animal-mnist", out="OUT"),
                        per[0])
    assert ("Top-1 accuracy (%) on animal-mnist@val (2,000 images), each encoder frozen, its CLS embedding classified "
            "from the labelled images of animal-mnist@train (8,000 images).") in md
    assert "k = 10, 20" in md and "Gen-DINO: DINO with the E-LDM's" in md
    assert "Each cell: mean ± sample std (ddof=1) over the seeds." in md
