"""The demo's overall progress line (``gensis.pipeline.eta``): stages done of those planned, elapsed time and an
estimate of the time left for the whole pipeline; before it, each stage had its own bar and nothing said how long
the whole demo would take."""

import json
import sys
from pathlib import Path

import pytest

from gensis.pipeline import demo
from gensis.pipeline.eta import SHARES, Overall, role

sys.path.insert(0, str(Path(__file__).parent))
from stage_keys import SCENARIOS, plan_keys  # noqa: E402

FIXTURE = json.loads((Path(__file__).parent / "stage_keys_smoke.json").read_text())


def test_roles_of_every_stage_name():
    assert {n: role(n) for n in ["dino", "simclr", "pixel", "simclr-pixel", "gendino", "gen-simclr", "eldm-ae",
                                 "eldm", "eldm-simclr", "eldm-figures", "eldm-simclr-figures", "eldm-eval",
                                 "eldm-simclr-eval", "bank", "bank-simclr", "eval-early-dino", "eval", "report"]} == {
        "dino": "pretrain", "simclr": "pretrain", "pixel": "pixel", "simclr-pixel": "pixel", "gendino": "gen",
        "gen-simclr": "gen", "eldm-ae": "ae", "eldm": "eldm", "eldm-simclr": "eldm", "eldm-figures": "figures",
        "eldm-simclr-figures": "figures", "eldm-eval": "fidelity", "eldm-simclr-eval": "fidelity", "bank": "bank",
        "bank-simclr": "bank", "eval-early-dino": "eval", "eval": "eval", "report": "report"}


def test_the_estimate_is_the_pace_of_the_stages_run_times_the_shares_left():
    s = SHARES["smoke"]
    o = Overall("smoke", [("dino", 1), ("eldm", 1), ("bank", 1), ("gendino", 1), ("eval", 5), ("report", 1)], now=0)
    # DINO found up to date: done, but no pace yet: the usual times as they are
    usual = s["eldm"] + s["bank"] + s["gen"] + 5 * s["eval"] + s["report"]
    assert o.finished("dino", ran=False, now=1) == (f"[demo] 1/6 stages done, 1 s elapsed, about {usual / 60:.0f} min "
                                                    f"left (no stage trained yet: the 'smoke' preset's usual stage "
                                                    f"times)")
    # the E-LDM ran in 46 s, twice its usual share: the rest is expected to take twice its usual time
    left = 46 * (s["bank"] + s["gen"] + 5 * s["eval"] + s["report"]) / s["eldm"]
    assert o.finished("eldm", ran=True, now=47) == (f"[demo] 2/6 stages done, 47 s elapsed, about {left / 60:.0f} min "
                                                    f"left (estimate from the 'smoke' preset's usual stage times)")
    assert o.finished("eldm", ran=True, now=48).startswith("[demo] 2/6 stages done")  # counted once
    for name in ("bank", "gendino", "eval"):
        line = o.finished(name, ran=True, now=400)
    assert line.startswith("[demo] 5/6 stages done, 7 min elapsed, about ")
    assert o.finished("report", ran=True, now=460) == "[demo] 6/6 stages done, 8 min elapsed"
    # a preset without measured shares takes the demo preset's proportions
    assert Overall("paper", [("dino", 1)]).share == {"dino": SHARES["demo"]["pretrain"]}


@pytest.mark.parametrize("name,preset,seed,methods", SCENARIOS, ids=[s[0] for s in SCENARIOS])
def test_the_plan_is_the_stages_a_pass_runs(tmp_path, monkeypatch, name, preset, seed, methods):
    """The line's 'N/M stages' counts the stages the pass runs: the plan names exactly the stages the pipeline
    hands to its runner (its autoencoder only in latent space, every method's runs)."""
    planned: dict[str, float] = {}
    real = demo.Overall

    def spy(preset, plan, *rest):
        planned.update(plan)
        return real(preset, plan, *rest)

    monkeypatch.setattr(demo, "Overall", spy)
    ran = plan_keys(tmp_path / name, preset, seed, methods, frozen=FIXTURE[name])["keys"]
    assert sorted(planned) == sorted(ran) and all(units == 1 for units in planned.values())


def test_evaluations_are_planned_by_the_columns_they_score(monkeypatch):
    """With a side lane the early evaluation scores DINO, its ablation and the two baselines, the last the
    Gen-X columns; serially the last scores every column."""
    monkeypatch.setattr(demo, "_latent", lambda cfg: False)

    class Keys:
        def config(self, family, overrides):
            return {}

    opts = demo.DemoOptions(preset="smoke", methods=("dino", "simclr"))
    lanes = dict(demo._plan(opts, Keys(), "0", True, True, True, []))
    assert (lanes["eval-early-dino"], lanes["eval-early-simclr"], lanes["eval"], lanes["report"]) == (4, 2, 2, 1)
    serial = dict(demo._plan(opts, Keys(), "0", True, False, True, []))
    assert serial["eval"] == 8 and not any(n.startswith("eval-early") for n in serial)


def test_the_line_follows_stages_that_ran_and_counts_those_up_to_date(tmp_path, capsys):
    """A resumed demo: a stage found up to date is counted (2/3 after the next one) but prints no line of its own."""
    from gensis.pipeline.runner import Pipeline, Stage

    out = tmp_path / "out"

    def call(name):
        def run(resume):
            (out / name).mkdir()
            (out / name / "done.json").write_text('{"status": "done"}')
        return run

    def stage(name):
        return Stage(name, [], f"key-{name}", done_file="done.json", call=call(name))

    pipe = Pipeline(out)
    pipe.run(stage("a"))
    capsys.readouterr()
    pipe = Pipeline(out)  # the same folder again: "a" is up to date
    pipe.overall = Overall("smoke", [("a", 1), ("b", 1), ("c", 1)])
    pipe.run(stage("a"))
    err = capsys.readouterr().err
    assert "[a] up to date" in err and "[demo]" not in err
    pipe.run(stage("b"))
    assert "[demo] 2/3 stages done" in capsys.readouterr().err


def test_with_seeds_the_estimate_also_covers_the_seeds_after_this_one():
    """`--seeds 0,1,2`: the line of the first pass gave only that pass's time left (a third of the wait); it now
    adds the passes after it, each expected to take as long as this one."""
    s = SHARES["smoke"]
    o = Overall("smoke", [("dino", 1), ("bank", 1)], now=0, passes_after=2)
    pace = 10 / s["pretrain"]
    line = o.finished("dino", ran=True, now=10)
    assert line == (f"[demo] 1/2 stages done, 10 s elapsed, about {pace * s['bank']:.0f} s left for this seed, "
                    f"{pace * (s['bank'] + 2 * (s['pretrain'] + s['bank'])) / 60:.0f} min with the 2 seeds after it "
                    f"(estimate from the 'smoke' preset's usual stage times)")
    last = Overall("smoke", [("dino", 1)], now=0, passes_after=1).finished("dino", ran=True, now=10)
    assert last.endswith("about 0 s left for this seed, 10 s with the 1 seed after it (estimate from the 'smoke' "
                         "preset's usual stage times)")


def test_a_resumed_demo_whose_evaluation_reruns_on_cached_results_sets_no_pace():
    """A resumed demo: every training up to date, the early evaluation rerun on cached results in 10 s; the line
    said 'about 6 s left' before a report of 43 s (the cached evaluation set the pace). Evaluations now set no
    pace, and without one the usual times are given."""
    s = SHARES["smoke"]
    o = Overall("smoke", [("dino", 1), ("eval-early-dino", 4), ("eval", 1), ("report", 1)], now=0)
    o.finished("dino", ran=False, now=1)
    line = o.finished("eval-early-dino", ran=True, now=10)
    assert s["eval"] + s["report"] == 110
    assert line.endswith("about 2 min left (no stage trained yet: the 'smoke' preset's usual stage times)")
