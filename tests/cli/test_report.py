"""``gensis report`` as a new user reads it: what the table's numbers are, and a demo folder that is incomplete
(killed midway, --stages) or holds results of another gensis version."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("matplotlib")

from gensis.cli.main import main  # noqa: E402
from gensis.report import write_report  # noqa: E402

TRAIN = {"name": "animal-mnist@train", "size": 8000, "split": "train"}
TEST = {"name": "animal-mnist@val", "size": 2000, "split": "val"}
LABELS = {"dino": "DINO", "pixel": "DINO w/ pixel disent.", "gendino": "Gen-DINO", "pixels": "raw pixels",
          "random": "random-init ViT"}


def _row(label: str, top1: float) -> dict:
    knn = {"train": TRAIN, "test": TEST, "temperature": 0.07,
           "results": [{"k": 10, "top1": top1 + 1}, {"k": 20, "top1": top1}]}
    lin = {"top1": top1 - 20, "config": {"epochs": 30, "lrs": [0.001, 0.01, 0.1]}}
    return {"label": label, "knn": knn, "linear": lin}


def _demo(tmp_path: Path, done: tuple[str, ...] = ("dino", "eldm", "pixel", "gendino")) -> Path:
    out = tmp_path / "demo"
    out.mkdir()
    for name in done:
        (out / name).mkdir()
        (out / name / "manifest.json").write_text(json.dumps({"status": "done", "stage": name}))
    (out / "results.json").write_text(json.dumps({n: _row(lab, 60.0) for n, lab in LABELS.items()}))
    return out


def test_the_results_section_says_what_its_numbers_are(tmp_path, capsys):
    """The report's table had rows '10-NN', 'linear probe' and five columns with no word on the metric, the split,
    k or what a column is (the terminal's title 'top-1 accuracy (%) ...' was not in report.md / .html)."""
    out = _demo(tmp_path)
    rows = json.loads((out / "results.json").read_text())
    (out / "results.json").write_text(json.dumps({"gendino": rows.pop("gendino"), **rows}))  # as the demo writes it
    md_path, html_path = write_report(out)
    md, page = md_path.read_text(), html_path.read_text()
    section = md[md.index("## Results"):md.index("| 10-NN")]
    said = [section.index(f"; {label}: ") for label in list(LABELS.values())[1:]]
    assert said == sorted(said)  # the columns in the table's order
    for words in ["Top-1 accuracy (%) on animal-mnist@val (2,000 images)", "animal-mnist@train (8,000 images)",
                  "k = 10, 20", "temperature 0.07", "30 epochs", "best of 3 learning rates",
                  "DINO: trained with DINO alone", "DINO w/ pixel disent.: DINO plus the disentanglement loss on pixel",
                  "Gen-DINO: DINO with the E-LDM's generated", "raw pixels: the images' pixels",
                  "random-init ViT: the same ViT, randomly initialised"]:
        assert words in section, words
    assert "Top-1 accuracy (%) on animal-mnist@val (2,000 images)" in page
    assert "incomplete" not in md and "incomplete" not in capsys.readouterr().err  # every stage is there


def test_an_incomplete_demo_folder_gets_one_line_saying_what_it_lacks(tmp_path, capsys):
    """A demo killed during Gen-DINO (pixel/ missing, gendino/ without a finished manifest, no eval yet): the report
    showed a lone curve and said nothing; now one line, in the report and on stderr, says what is missing and how
    to finish it."""
    out = _demo(tmp_path, done=("dino", "eldm"))
    (out / "results.json").unlink()
    (out / "gendino").mkdir()
    (out / "gendino" / "manifest.json").write_text(json.dumps({"status": "running"}))
    (out / "dino" / "metrics.jsonl").write_text('{"step": 0, "loss": 1.0}\n{"step": 1, "loss": 0.5}\n')
    assert main(["report", str(out)]) == 0
    err = capsys.readouterr().err
    line = ("This demo folder is incomplete (killed midway, run with --stages, or made by another gensis version): "
            "DINO w/ pixel disent. (pixel/) not trained; Gen-DINO (gendino/) unfinished; no results table (the eval "
            "stage has not run). Run the same `gensis demo` command again with this --out to finish it")
    assert f"gensis: note: {line}" in err and err.count("incomplete") == 1
    assert line in (out / "report.md").read_text() and line in (out / "report.html").read_text()


@pytest.mark.parametrize("results", [[1, 2], {"dino": {"label": "DINO", "top1": 50.0}}])
def test_results_of_another_gensis_version_are_left_out_in_one_line(tmp_path, capsys, results):
    """results.json of another shape (an older version's rows, a hand-edited file) was a KeyError / TypeError
    traceback from `gensis report`; now the readable rows are shown and one line says which were left out."""
    out = _demo(tmp_path)
    cache = json.loads((out / "results.json").read_text())
    if isinstance(results, dict):
        cache.update(results)
    (out / "results.json").write_text(json.dumps(cache if isinstance(results, dict) else results))
    assert main(["report", str(out)]) == 0
    err, md = capsys.readouterr().err, (out / "report.md").read_text()
    assert "Traceback" not in err
    if isinstance(results, dict):
        assert "the results of dino in results.json are in a form this gensis version does not read" in err
        assert "| 10-NN |" in md and "|  | DINO w/ pixel disent. |" in md  # the unreadable DINO row left out
    else:
        assert "results.json is in a form this gensis version does not read" in err
        assert "## Results" not in md


def test_loss_curves_keep_a_run_s_colour_and_plot_the_method_s_own_loss(tmp_path, monkeypatch):
    """The curves figure gave 'DINO w/ pixel disent.' orange on the left and blue on the right (each panel its own
    colour cycle), titled a SimCLR section's losses 'DINO loss' and drew Gen-X's total loss (disentanglement term
    included) against X's own loss; now one colour per run, the method's name, loss − gen.disent_weight ×
    loss_disent, and axis labels."""
    import gensis.report as report

    out = tmp_path / "demo"
    rows = {"simclr": [{"step": 0, "loss": 4.0}, {"step": 1, "loss": 3.0}],
            "gen-simclr": [{"step": 0, "loss": 9.0, "loss_disent": 2.5}, {"step": 1, "loss": 7.0, "loss_disent": 2.0}]}
    for name, lines in rows.items():
        (out / name).mkdir(parents=True)
        (out / name / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    (out / "gen-simclr" / "config.yaml").write_text("data: {}\nmodel: {}\noptim: {}\ntrain: {}\ngen:\n  disent_weight: 2.0\n")
    (out / "gen-simclr" / "manifest.json").write_text(json.dumps({"status": "done", "stage": "pretrain"}))
    figs = []
    monkeypatch.setattr(report, "atomic_savefig", lambda fig, dest, **kw: figs.append(fig))
    series = report.loss_series(out, [("simclr", "SimCLR"), ("gen-simclr", "Gen-SimCLR")])
    report.curves_figure(out, out / "c.png", series=series, method="SimCLR")
    left, right = figs[0].axes
    assert left.get_title() == "SimCLR loss (without the disentanglement term)" and left.get_ylabel() == "loss"
    own = {line.get_label(): list(line.get_ydata()) for line in left.lines}
    assert own == {"SimCLR": [4.0, 3.0], "Gen-SimCLR": [4.0, 3.0]}  # 9 − 2 × 2.5, 7 − 2 × 2.0
    colour = {line.get_label(): line.get_color() for line in left.lines}
    assert [line.get_label() for line in right.lines] == ["Gen-SimCLR"]
    assert right.lines[0].get_color() == colour["Gen-SimCLR"] != colour["SimCLR"]


def test_gensis_report_follows_the_methods_the_folder_holds(tmp_path, capsys):
    """`gensis report` on a `demo --methods dino,simclr` folder drew DINO's curves only (the command passed no
    methods); it now has a section per method whose runs the folder holds, as the demo's own report."""
    out = _demo(tmp_path)
    for name in ("dino", "simclr", "gen-simclr"):
        (out / name).mkdir(exist_ok=True)
        (out / name / "metrics.jsonl").write_text('{"step": 0, "loss": 1.0}\n{"step": 1, "loss": 0.5}\n')
    assert main(["report", str(out)]) == 0
    md = (out / "report.md").read_text()
    assert "## Training curves: DINO\n" in md and "## Training curves: SimCLR\n" in md
    assert (out / "report" / "curves-simclr.png").is_file()
    assert "SimCLR w/ pixel disent. (simclr-pixel/) not trained" in capsys.readouterr().err
