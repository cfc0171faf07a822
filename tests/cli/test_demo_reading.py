"""The "How to read it" block under the demo's results table (gensis.pipeline.reading), on synthetic results."""

import json
import math
from types import SimpleNamespace

import pytest

from gensis.pipeline.reading import (THRESHOLD_SD, binomial_sd, read_results, read_seeds, t_critical, verdict,
                                     verdict_over_seeds)
from gensis.pipeline.seeds import format_seed_table, seeds_markdown, summarize_seeds

N = 1600


def _row(label, top1, n=N, ks=(10, 20)):
    """An evaluation row as ``results.json`` stores it: ``top1`` is the 20-NN score (other k: 1 point less)."""
    knn = {"results": [{"k": k, "top1": top1 if k == 20 else top1 - 1} for k in ks]}
    if n is not None:
        knn["test"] = {"size": n}
    return {"label": label, "knn": knn}


def _rows(dino=65.0, pixel=63.1, gen=62.4, pixels=84.0, random=56.9, **kw):
    return {"dino": _row("DINO", dino, **kw), "pixel": _row("DINO w/ pixel disent.", pixel, **kw),
            "gendino": _row("Gen-DINO", gen, **kw), "pixels": _row("raw pixels", pixels, **kw),
            "random": _row("random-init ViT", random, **kw)}


def _by_label(reading):
    return {d.label: d for d in reading.differences}


def test_binomial_sd_of_a_difference_by_hand():
    # one score of 28 % on 1,600 images: sqrt(0.28 * 0.72 / 1600) = 1.1225 points; a difference adds both variances
    assert binomial_sd(28.0, 0.0, N) == pytest.approx(100 * math.sqrt(0.28 * 0.72 / N))
    assert binomial_sd(28.0, 0.0, N) == pytest.approx(1.1225, abs=1e-4)
    assert binomial_sd(65.0, 56.9, N) == pytest.approx(100 * math.sqrt(0.65 * 0.35 / N + 0.569 * 0.431 / N))
    assert binomial_sd(50.0, 50.0, 100, 400) == pytest.approx(100 * math.sqrt(0.25 / 100 + 0.25 / 400))
    assert binomial_sd(50.0, 50.0, 4 * N) == pytest.approx(binomial_sd(50.0, 50.0, N) / 2)  # sd ∝ 1/sqrt(n)


def test_within_noise_up_to_two_sd():
    assert THRESHOLD_SD == 2.0
    assert verdict(2.0, 1.0) == "within noise" and verdict(-2.0, 1.0) == "within noise"
    assert verdict(2.01, 1.0) == "above" and verdict(-2.01, 1.0) == "below"
    assert verdict(0.0, 0.0) == "within noise" and verdict(5.0, None) == "noise unknown"


def test_one_seed_signs_noise_and_words():
    r = read_results(_rows())
    assert r.row == "20-NN" and "the 20-NN row" in r.intro() and "n = 1,600 test images" in r.intro()
    d = _by_label(r)
    assert list(d) == ["DINO − random-init ViT", "DINO − raw pixels", "DINO w/ pixel disent. − DINO",
                       "Gen-DINO − DINO"]
    assert d["DINO − random-init ViT"].value == pytest.approx(65.0 - 56.9)
    assert d["DINO − raw pixels"].value == pytest.approx(65.0 - 84.0)
    assert d["DINO w/ pixel disent. − DINO"].value == pytest.approx(63.1 - 65.0)
    assert d["Gen-DINO − DINO"].value == pytest.approx(62.4 - 65.0)
    assert d["Gen-DINO − DINO"].sd == pytest.approx(binomial_sd(62.4, 65.0, N))
    words = {k: v.word for k, v in d.items()}
    # +8.1 vs 2 sd ≈ 3.4: above; −19.0: below; −1.9 and −2.6 vs 2 sd ≈ 3.4: within noise
    assert words == {"DINO − random-init ViT": "above", "DINO − raw pixels": "below",
                     "DINO w/ pixel disent. − DINO": "within noise", "Gen-DINO − DINO": "within noise"}
    assert r.hints == []  # DINO is above the random-init ViT here
    text = r.text()
    assert text.startswith("How to read it") and "+8.1 ± 1.7" in text and "within noise" in text
    assert "| Gen-DINO − DINO | -2.6 ± 1.7 | within noise |" in r.markdown()
    assert "<td>DINO − raw pixels</td><td>-19.0 ± 1.5</td><td>below</td>" in r.html()


def test_scores_are_read_as_the_table_prints_them():
    # 65.04 and 56.86 print as 65.0 and 56.9: the difference shown is 8.1, the one a reader computes from the table
    r = read_results(_rows(dino=65.04, random=56.86))
    assert _by_label(r)["DINO − random-init ViT"].value == pytest.approx(8.1)


def test_hint_only_when_a_distillation_method_is_not_above_random_init():
    r = read_results(_rows(dino=57.5, random=56.9))  # +0.6, sd ≈ 1.75
    assert _by_label(r)["DINO − random-init ViT"].word == "within noise"
    assert len(r.hints) == 1 and r.hints[0].startswith("DINO was not shown to beat a random-init ViT with 1 seed")
    assert "--methods simclr" in r.hints[0] and "When does it help" in r.hints[0]
    assert "DINO was not shown to beat" in " ".join(r.text().split())
    assert r.hints[0] in r.markdown() and "not shown to beat" in r.html()
    below = read_results(_rows(dino=50.0, random=56.9))
    assert _by_label(below)["DINO − random-init ViT"].word == "below" and below.hints
    # SimCLR is contrastive: at the random-init level it gets no distillation hint
    rows = {"simclr": _row("SimCLR", 57.0), "random": _row("random-init ViT", 56.9)}
    simclr = read_results(rows, ("simclr",))
    assert _by_label(simclr)["SimCLR − random-init ViT"].word == "within noise" and simclr.hints == []
    # two distillation methods stuck: one line naming both
    rows = {"dino": _row("DINO", 57.0), "ibot": _row("iBOT", 56.0), "simclr": _row("SimCLR", 70.0),
            "random": _row("random-init ViT", 56.9)}
    both = read_results(rows, ("dino", "ibot", "simclr"))
    assert len(both.hints) == 1 and both.hints[0].startswith("DINO and iBOT were not shown to beat")


def test_missing_cells_are_skipped():
    rows = _rows()
    del rows["gendino"], rows["random"]  # stages not run
    r = read_results(rows)
    assert list(_by_label(r)) == ["DINO − raw pixels", "DINO w/ pixel disent. − DINO"] and r.hints == []
    assert read_results({"pixels": _row("raw pixels", 84.0), "random": _row("random-init ViT", 56.9)}) is None
    assert read_results({}) is None
    # no recorded test-set size (an older results.json): the differences without noise, no word
    old = read_results(_rows(n=None, dino=50.0))
    d = _by_label(old)["DINO − random-init ViT"]
    assert d.sd is None and d.word == "noise unknown" and d.text == "-6.9"
    assert "n = unknown" in old.intro() and old.hints  # not higher than random init at all


def test_largest_k_when_there_is_no_20nn():
    r = read_results(_rows(ks=(10, 50)))
    assert r.row == "50-NN" and "largest k" in r.intro()
    assert _by_label(r)["DINO − raw pixels"].value == pytest.approx((65.0 - 1) - (84.0 - 1))


def _per_seed(dino_scores, random_scores, gen_scores):
    return {s: {"dino": _row("DINO", d), "gendino": _row("Gen-DINO", g), "pixels": _row("raw pixels", 84.0),
                "random": _row("random-init ViT", r)}
            for s, (d, r, g) in enumerate(zip(dino_scores, random_scores, gen_scores))}


def test_seeds_paired_mean_and_std():
    # DINO − random per seed: 8, 6, 10 -> mean 8, std 2; Gen-DINO − DINO: 1, 0, 2 -> mean 1, std 1
    s = summarize_seeds(_per_seed([64, 62, 66], [56, 56, 56], [65, 62, 68]))
    assert s["methods"]["dino"]["test_size"] == N
    r = read_seeds(s)
    assert "over 3 seeds [0, 1, 2]" in r.intro()
    d = _by_label(r)
    assert d["DINO − random-init ViT"].value == pytest.approx(8.0) and d["DINO − random-init ViT"].sd == pytest.approx(2.0)
    assert d["DINO − random-init ViT"].word == "above"  # 8 − 4.30 · 2 / √3 = 3.0 > 0
    assert d["Gen-DINO − DINO"].value == pytest.approx(1.0) and d["Gen-DINO − DINO"].word == "within noise"
    assert d["DINO − raw pixels"].value == pytest.approx(64.0 - 84.0) and d["DINO − raw pixels"].word == "below"
    assert "DINO w/ pixel disent. − DINO" not in d and r.hints == []  # that column was not run
    # DINO − random per seed: 1, -1, 3 -> mean 1, std 2: within noise, and the hint
    stuck = read_seeds(summarize_seeds(_per_seed([57, 55, 59], [56, 56, 56], [57, 55, 59])))
    assert _by_label(stuck)["DINO − random-init ViT"].word == "within noise" and len(stuck.hints) == 1
    table = format_seed_table(s)
    assert "How to read it" in table and "+8.0 ± 2.0" in table
    md = seeds_markdown(s, SimpleNamespace(preset="smoke", data="D", out="OUT"))
    assert "## How to read it" in md and "| DINO − random-init ViT | +8.0 ± 2.0 | above |" in md


def test_t_critical_values_of_a_printed_table():
    # Student's t, two-sided 95 % (e.g. NIST/SEMATECH e-Handbook, table 1.3.6.7.2, column 0.975)
    for n, t in [(2, 12.706), (3, 4.303), (5, 2.776), (11, 2.228), (31, 2.042)]:
        assert t_critical(n) == pytest.approx(t, abs=1e-3)
    with pytest.raises(ValueError):
        t_critical(1)
    # the interval mean ± t · sd / √n against 0, strictly
    assert verdict_over_seeds(2.48, 1.0, 3) == "within noise"  # half-width 4.303 / √3 = 2.484
    assert verdict_over_seeds(2.49, 1.0, 3) == "above" and verdict_over_seeds(-2.49, 1.0, 3) == "below"
    assert verdict_over_seeds(0.0, 0.0, 2) == "within noise"


def _gen_minus_dino(dino, gen):
    s = summarize_seeds(_per_seed(dino, [56] * len(dino), gen))
    r = read_seeds(s)
    return r, _by_label(r)["Gen-DINO − DINO"], s


def test_two_seeds_that_agree_on_a_small_gap_are_within_noise():
    """A smoke run printed "Gen-DINO − DINO −0.1 ± 0.1" over 2 seeds as "below": 2 sd is no 95 % rule for the
    mean of 2 values. Per seed −0.16, −0.08: mean −0.12, sd 0.057, half-width 12.71 · 0.057 / √2 = 0.51."""
    r, d, s = _gen_minus_dino([60.0, 61.0], [59.84, 60.92])
    assert d.text == "-0.1 ± 0.1" and abs(d.value) > THRESHOLD_SD * d.sd  # what the 2-sd rule called "below"
    assert d.word == "within noise"
    text = " ".join(format_seed_table(s).split())
    assert "95% t-interval of the mean over 2 seeds, mean ± t·sd/√2 with t = 12.71" in text
    assert "| Gen-DINO − DINO | -0.1 ± 0.1 | within noise | -0.2, -0.1 |" in seeds_markdown(
        s, SimpleNamespace(preset="smoke", data="D", out="OUT"))
    assert "exceeds 2 sd" not in text


def test_three_seeds_clearly_below_and_a_gap_only_2_sd_wide():
    # per seed −3, −4, −5: mean −4, sd 1, half-width 4.30 / √3 = 2.48: the interval [−6.5, −1.5] is below 0
    r, d, _ = _gen_minus_dino([60.0, 61.0, 62.0], [57.0, 57.0, 57.0])
    assert d.value == pytest.approx(-4.0) and d.word == "below"
    assert "over 3 seeds, mean ± t·sd/√3 with t = 4.30 (Student's t, 2 degrees of freedom)" in r.intro()
    # per seed −1.1, −2, −2.9: mean −2, sd 0.9 (> 2 sd, "below" by the old rule); half-width 4.30 · 0.9 / √3 = 2.24
    _, d, _ = _gen_minus_dino([60.0, 61.0, 62.0], [58.9, 59.0, 59.1])
    assert d.value == pytest.approx(-2.0) and d.sd == pytest.approx(0.9) and d.word == "within noise"


def test_a_single_seed_summary_uses_the_binomial_sd():
    r = read_seeds(summarize_seeds({4: _rows()}))
    assert "binomial sd (one seed)" in r.intro()
    assert "the difference exceeds 2 sd" in r.intro() and "t-interval" not in r.intro()
    d = _by_label(r)["DINO − random-init ViT"]
    assert d.sd == pytest.approx(binomial_sd(65.0, 56.9, N)) and d.word == "above"
    # one seed: no per-seed column and no line for the other rows (the table's cells give them), as read_results
    assert r.other_rows == [] and "per seed" not in r.markdown() and "other rows" not in r.text()
    one = read_results(_rows())
    assert one.other_rows == [] and "per seed" not in one.markdown()
    assert r.table().markdown() == one.table().markdown()  # the same numbers in both renderings


def test_seeds_block_has_per_seed_values_and_gen_in_the_other_rows():
    s = summarize_seeds(_per_seed([64, 62, 66], [56, 56, 56], [65, 62, 68]))
    r = read_seeds(s)
    d = _by_label(r)
    assert d["DINO − random-init ViT"].per_seed == (8.0, 6.0, 10.0) and d["Gen-DINO − DINO"].per_seed == (1, 0, 2)
    assert "| DINO − random-init ViT | +8.0 ± 2.0 | above | +8.0, +6.0, +10.0 |" in r.markdown()
    assert "<th>per seed</th>" in r.html()
    # the other row (10-NN, 1 point below 20-NN in every column here): Gen-DINO − DINO only, its own mean/std
    (o,) = r.other_rows
    assert (o.label, o.row, o.value, o.per_seed) == ("Gen-DINO − DINO", "10-NN", pytest.approx(1.0), (1, 0, 2))
    assert r.other_lines() == ["Gen-DINO − DINO in the other rows: 10-NN +1.0 ± 1.0 (per seed +1.0, +0.0, +2.0), "
                               "within noise."]
    assert r.other_lines()[0] in r.markdown() and "in the other rows" in r.html()
    # a difference that rounds to zero reads "+0.0", not "-0.0" (seen as "+0.1, -0.0" in a smoke run)
    from gensis.pipeline.reading import Difference

    tiny = Difference("dino", "gen", "Gen-DINO − DINO", -0.04, 0.1, per_seed=(0.1, -0.04))
    assert tiny.text == "+0.0 ± 0.1" and tiny.seeds_text == "+0.1, +0.0"


def test_report_has_the_block(tmp_path):
    pytest.importorskip("matplotlib")
    from gensis.report import write_report

    out = tmp_path / "demo"
    out.mkdir()
    (out / "results.json").write_text(json.dumps(_rows(dino=57.5)))
    md_path, html_path = write_report(out)
    md, page = md_path.read_text(), html_path.read_text()
    assert md.index("## Results") < md.index("## How to read it")
    assert "| DINO − random-init ViT | +0.6 ± 1.7 | within noise |" in md and "DINO was not shown to beat" in md
    assert "<h2>How to read it</h2>" in page and "<td>+0.6 ± 1.7</td>" in page


def test_the_hint_says_what_the_verdict_says():
    """2 seeds, DINO − random +4.5 ± 0.7 (per seed +4.0, +5.0): the t-interval (t = 12.71, half-width 6.4) calls it
    within noise, so the hint may only say DINO was not shown to beat random init with 2 seeds (and how to tell),
    never that it did not beat it or was below; "below" only when the verdict is below."""
    r = read_seeds(summarize_seeds(_per_seed([60.0, 61.0], [56.0, 56.0], [60.0, 61.0])))
    d = _by_label(r)["DINO − random-init ViT"]
    assert d.text == "+4.5 ± 0.7" and d.word == "within noise"
    (hint,) = r.hints
    assert hint.startswith("DINO was not shown to beat a random-init ViT with 2 seeds (DINO − random-init ViT "
                           "+4.5 ± 0.7, within noise)")
    assert "did not beat" not in hint and "below" not in hint
    assert "more seeds (--seeds" in hint and "longer budget" in hint
    # 3 seeds clearly below (per seed −6, −7, −8): "below", and no call for more seeds
    below = read_seeds(summarize_seeds(_per_seed([50.0, 49.0, 48.0], [56.0, 56.0, 56.0], [50.0, 49.0, 48.0])))
    assert _by_label(below)["DINO − random-init ViT"].word == "below"
    (hint,) = below.hints
    assert hint.startswith("DINO scored below a random-init ViT here (DINO − random-init ViT -7.0 ± 1.0, below)")
    assert "more seeds" not in hint and "not shown" not in hint
    # one seed, within noise: "with 1 seed"
    (hint,) = read_results(_rows(dino=57.5, random=56.9)).hints
    assert hint.startswith("DINO was not shown to beat a random-init ViT with 1 seed (")
    # one method below, one within noise: each in its own words, one line
    rows = {"dino": _row("DINO", 50.0), "ibot": _row("iBOT", 57.0), "random": _row("random-init ViT", 56.9)}
    (hint,) = read_results(rows, ("dino", "ibot")).hints
    assert hint.startswith("DINO scored below a random-init ViT here (DINO − random-init ViT -6.9 ± 1.8, below); "
                           "iBOT was not shown to beat it with 1 seed (iBOT − random-init ViT +0.1 ± 1.8, within noise)")
    # two within noise: plural
    rows = {"dino": _row("DINO", 57.0), "ibot": _row("iBOT", 56.0), "random": _row("random-init ViT", 56.9)}
    (hint,) = read_results(rows, ("dino", "ibot")).hints
    assert hint.startswith("DINO and iBOT were not shown to beat a random-init ViT with 1 seed (")
    # noise unknown (no test-set size recorded) and not higher: no verdict claimed
    (hint,) = read_results(_rows(n=None, dino=50.0)).hints
    assert hint.startswith("DINO scored no higher than a random-init ViT here (DINO − random-init ViT -6.9, "
                           "noise unknown)")


def test_report_curves_caption_names_the_runs_drawn(tmp_path):
    """A demo with --stages dino,eval,report: the caption read 'Loss per step of DINO, DINO w/ pixel disent.,
    Gen-DINO' over a figure of DINO alone."""
    pytest.importorskip("matplotlib")
    from gensis.report import write_report

    out = tmp_path / "demo"
    (out / "dino").mkdir(parents=True)
    (out / "dino" / "metrics.jsonl").write_text('{"step": 0, "loss": 1.0}\n{"step": 1, "loss": 0.5}\n')
    (out / "results.json").write_text(json.dumps(_rows(dino=57.5)))
    md = write_report(out)[0].read_text()
    assert "Loss per step of DINO (same seed" in md
