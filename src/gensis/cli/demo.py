"""``gensis demo``: the whole Gen-SIS pipeline on an embedded dataset, as resumable stages.

    dino      DINO pretraining (the baseline, and the encoder that conditions the E-LDM)
    eldm      embedding-conditioned diffusion model on the same images (autoencoder first if latent)
    bank      generative + interpolated self-augmentations, written to disk
    gendino   Gen-DINO: DINO with bank views + disentanglement loss (same epochs/seed/budget as dino)
    pixel     "DINO w/ pixel disent." ablation (paper Table 12)
    eval      k-NN (and linear probe) of each, next to raw-pixel and random-init baselines
    report    Markdown + HTML report with curves, grids and a UMAP

Each stage writes its own run directory under --out. A stage whose output exists, is finished and was made
from the same inputs and settings is skipped; one that was killed is resumed; one made from other settings
is redone. So a killed demo continues where it stopped when run again.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
import time
from pathlib import Path

from gensis.cli.main import add_common

PRESETS = ("smoke", "demo", "small", "paper", "gpu")


def add_parser(sub) -> None:
    p = sub.add_parser(
        "demo", help="run the whole pipeline (DINO, E-LDM, bank, Gen-DINO, ablation, eval, report) on a dataset",
        description="Run Gen-SIS end to end and print DINO | DINO w/ pixel disent. | Gen-DINO (paper Table 12). "
                    "Stages are resumable: run the same command again after an interruption. "
                    "Presets: smoke (~2 min, tests), demo (~16 min on 2 CPU cores with AMX), small (~35 min per "
                    "seed), paper (GPU nodes). With --seeds 0,1,2 every number comes as mean ± std over seeds.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--preset", default="demo", choices=PRESETS + ("wsi",),
                   help="size of every stage; wsi: the whole-slide demo (`gensis wsi demo`: a real slide, tiles, "
                        "DINO vs Gen-DINO, ABMIL on region bags with synthetic labels)")
    p.add_argument("--data", default="builtin:animal-mnist",
                   help="labelled dataset (builtin:NAME, folder or .npz); pretraining uses its train split, "
                        "evaluation its val split")
    p.add_argument("--out", default="gensis-demo", help="folder for all stages' outputs")
    p.add_argument("--seed", type=int, default=0, help="seed of every stage")
    p.add_argument("--seeds", default=None,
                   help="comma-separated seeds (e.g. 0,1,2): run the whole pipeline once per seed in OUT/seed-S, "
                        "then print every number as mean ± std over the seeds (also OUT/seeds.md, seeds.json)")
    p.add_argument("--stages", default=None,
                   help="comma-separated subset of stages to run (dino,eldm,bank,gendino,pixel,eval,report)")
    p.add_argument("--no-linear", action="store_true", help="skip the linear probe (k-NN only)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    add_common(p)
    p.set_defaults(func=run)


def _key(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:12]


class Pipeline:
    """Runs stages in order; each stage is a ``gensis`` command line executed in this process."""

    def __init__(self, out: Path, quiet: bool):
        self.out = out
        self.quiet = quiet
        self.state_path = out / "stages.json"
        self.state = json.loads(self.state_path.read_text()) if self.state_path.is_file() else {}
        self.times: dict[str, float] = self.state.get("_seconds", {})

    def _save(self) -> None:
        from gensis.rundir import atomic_write_json

        self.state["_seconds"] = self.times
        atomic_write_json(self.state_path, self.state)

    def stage(self, name: str, argv: list[str], key: str, done_file: str = "manifest.json",
              resumable: bool = True) -> Path:
        """Run ``gensis <argv>`` unless stage ``name`` already finished with the same ``key``."""
        from gensis.cli.main import main
        from gensis.errors import UserError

        path = self.out / name
        if self.state.get(name) == key and self._finished(path, done_file):
            self._say(f"[{name}] up to date, skipped ({path})")
            return path
        if path.exists() and self.state.get(name) != key:
            self._say(f"[{name}] made with other settings: redoing")
            shutil.rmtree(path)
        resume = resumable and path.exists()
        self._say(f"[{name}] {'resuming' if resume else 'running'}: gensis {' '.join(argv)}")
        t0 = time.time()
        self.state[name] = key
        self._save()
        code = main(argv + (["--resume"] if resume and "--resume" not in argv else []))
        if code != 0:
            raise UserError(f"stage '{name}' failed (exit {code}); fix the cause and run the demo again to resume")
        self.times[name] = round(self.times.get(name, 0.0) * resume + time.time() - t0, 1)
        self._save()
        return path

    @staticmethod
    def _finished(path: Path, done_file: str) -> bool:
        f = path / done_file
        if not f.is_file():
            return False
        if f.suffix != ".json":
            return True
        try:
            return json.loads(f.read_text()).get("status", "done") == "done"
        except json.JSONDecodeError:
            return False

    def _say(self, msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)


def run(args) -> int:
    import os

    if args.quiet:  # stages run in this process: one switch silences every progress bar
        os.environ["GENSIS_NO_PROGRESS"] = "1"
    if args.preset == "wsi":  # the slide pipeline lives in gensis.wsi.demo (one entry point)
        from gensis.wsi.demo import run_wsi_demo

        run_wsi_demo(args.out, seed=args.seed, quiet=args.quiet, debug=args.debug)
        return 0
    if args.seeds is None:
        run_pipeline(args, Path(args.out), args.seed)
        return 0
    from gensis.errors import UserError
    from gensis.rundir import atomic_write_json, atomic_write_text

    try:
        seeds = sorted({int(s) for s in args.seeds.split(",") if s.strip()})
    except ValueError:
        raise UserError(f"--seeds must be comma-separated integers, got '{args.seeds}'") from None
    if not seeds:
        raise UserError("--seeds is empty")
    out = Path(args.out)
    per_seed = {}
    for s in seeds:
        print(f"=== seed {s} ({seeds.index(s) + 1}/{len(seeds)}): {out / f'seed-{s}'}", file=sys.stderr, flush=True)
        results = run_pipeline(args, out / f"seed-{s}", s)
        if results:
            per_seed[s] = results
    if per_seed:
        summary = summarize_seeds(per_seed)
        table = format_seed_table(summary)
        print(table)
        atomic_write_json(out / "seeds.json", summary)
        atomic_write_text(out / "seeds.md", seeds_markdown(summary, args))
        print(f"over-seed summary: {out / 'seeds.md'} and {out / 'seeds.json'}")
    return 0


def run_pipeline(args, out: Path, seed: int) -> dict | None:
    """One pass of the pipeline into ``out`` with ``seed``; returns the evaluation rows (None if not run)."""
    out.mkdir(parents=True, exist_ok=True)
    pipe = Pipeline(out, args.quiet)
    wanted = set(args.stages.split(",")) if args.stages else None
    P, D, S = args.preset, args.data, str(seed)
    dbg = ["--debug"] if args.debug else []
    seed_ov = [f"train.seed={S}"]
    t_start = time.time()

    def want(name: str) -> bool:
        return wanted is None or name in wanted

    runs: dict[str, Path] = {}
    k_dino = _key("dino", P, D, S)
    if want("dino"):
        runs["dino"] = pipe.stage("dino", ["pretrain", "--data", D, "--out", str(out / "dino"), "--preset", P,
                                           *dbg, *seed_ov], k_dino)
    have_gen = _module_exists("gensis.eldm.train") and _module_exists("gensis.bank")
    k_eldm = _key("eldm", k_dino, P, S)
    k_bank = _key("bank", k_eldm, P, S)
    if have_gen and want("eldm"):
        runs["eldm"] = _eldm_stage(pipe, out, P, D, S, k_eldm, dbg)
    if have_gen and want("eldm"):  # figures and fidelity numbers of the E-LDM (for the report)
        pipe.stage("eldm-figures", ["eldm", "sample", "--eldm", str(out / "eldm"), "--data", D,
                                    "--out", str(out / "eldm-figures"), *dbg], _key("fig", k_eldm),
                   done_file="interpolation.png", resumable=False)
        pipe.stage("eldm-eval", ["eldm", "eval", "--eldm", str(out / "eldm"), "--data", D,
                                 "--json", str(out / "eldm-eval" / "eval.json"), *dbg], _key("ev", k_eldm),
                   done_file="eval.json", resumable=False)
    if have_gen and want("bank"):
        # the bank must cover exactly the images Gen-DINO trains on: same split and limit as pretraining
        from gensis.config import load_config

        d = load_config("pretrain", P)["data"]
        same_data = [f"data.limit={'null' if d['limit'] is None else d['limit']}",
                     f"data.val_fraction={d['val_fraction']}", f"data.split_seed={d['split_seed']}"]
        runs["bank"] = pipe.stage("bank", ["bank", "generate", "--eldm", str(out / "eldm"), "--data", D,
                                           "--out", str(out / "bank"), "--preset", P, *dbg, *same_data,
                                           f"gen.seed={S}"] + (["--quiet"] if args.quiet else []),
                                  k_bank, done_file="bank.json", resumable=False)
    if have_gen and want("gendino"):
        runs["gendino"] = pipe.stage("gendino", ["pretrain", "--data", D, "--out", str(out / "gendino"),
                                                 "--preset", P, "--bank", str(out / "bank"), *dbg, *seed_ov],
                                     _key("gendino", k_bank, P, D, S))
    if want("pixel"):
        runs["pixel"] = pipe.stage("pixel", ["pretrain", "--data", D, "--out", str(out / "pixel"), "--preset", P,
                                             "--interp", "pixel", *dbg, *seed_ov], _key("pixel", P, D, S))
    results = None
    if want("eval"):
        results = _evaluate(out, D, P, not args.no_linear)
        print(format_table(results))
    if want("report") and _module_exists("gensis.report") and not _module_exists("matplotlib"):
        print("report skipped: it needs matplotlib (pip install 'gensis[report]')", file=sys.stderr)
    elif want("report") and _module_exists("gensis.report"):
        from gensis.report import write_report

        md, html = write_report(out)
        print(f"report: {md} and {html}")
    print(f"demo finished in {time.time() - t_start:.0f} s; outputs in {out}/")
    return results


def _module_exists(name: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:
        return False


def _eldm_stage(pipe: Pipeline, out: Path, P: str, D: str, S: str, key: str, extra: list[str]) -> Path:
    from gensis.config import load_config

    cfg = load_config("eldm", P)
    argv = ["eldm", "train", "--encoder", str(out / "dino"), "--data", D, "--out", str(out / "eldm"),
            "--preset", P, *extra, f"train.seed={S}"]
    if cfg.get("space", cfg.get("ae", {}).get("space")) not in (None, "pixel"):
        ae = pipe.stage("eldm-ae", ["eldm", "train-ae", "--data", D, "--out", str(out / "eldm-ae"), "--preset", P,
                                    *extra], _key("ae", key))
        argv += ["--ae", str(ae)]
    return pipe.stage("eldm", argv, key)


LINEAR_EPOCHS = {"smoke": 5, "demo": 30, "small": 100, "paper": 100, "gpu": 100}
METHODS = [("dino", "DINO"), ("pixel", "DINO w/ pixel disent."), ("gendino", "Gen-DINO")]
BASELINES = [("pixels", "raw pixels"), ("random", "random-init ViT")]


def _evaluate(out: Path, data: str, preset: str, linear: bool) -> dict:
    """k-NN (and linear probe) of each finished run and of the two baselines; cached in results.json."""
    from gensis.data.sources import open_data
    from gensis.device import pick_device
    from gensis.eval.knn import knn_eval
    from gensis.models.encoder import load_encoder
    from gensis.rundir import RunDir, atomic_write_json

    dev = pick_device("auto")  # the GPU when there is one, as every stage's train.device=auto
    path = out / "results.json"
    cache = json.loads(path.read_text()) if path.is_file() else {}
    rows = {}
    cfg = RunDir(out / "dino").config() if (out / "dino" / "config.yaml").is_file() else None
    vf = cfg["data"]["val_fraction"] if cfg else 0.2
    seed = cfg["data"]["split_seed"] if cfg else 0
    train_ds, test_ds = open_data(data, "train", vf, seed), open_data(data, "val", vf, seed)
    if train_ds.labels is None or test_ds.labels is None:
        from gensis.errors import UserError

        raise UserError(f"the demo evaluates with labels, and {data} has none")
    size = cfg["data"]["image_size"] if cfg else 28
    specs = [(name, str(out / name), label) for name, label in METHODS if RunDir(out / name).is_done()]
    specs += [(name, name, label) for name, label in BASELINES]
    for name, spec, label in specs:
        enc = load_encoder(spec, image_size=size, like=str(out / "dino") if name == "random" and cfg else None)
        ident = f"{enc.identity}|{train_ds.identity}|{test_ds.identity}|{linear and LINEAR_EPOCHS[preset]}"
        if cache.get(name, {}).get("identity") == ident:
            rows[name] = cache[name]
            continue
        print(f"[eval] {label}", file=sys.stderr, flush=True)
        row = {"label": label, "identity": ident, "knn": knn_eval(enc, train_ds, test_ds, device=dev)}
        if linear:
            from gensis.eval.linear import LinearConfig, linear_eval

            # fewer probe epochs at the small presets keep the demo in budget (DINO's protocol: 100)
            row["linear"] = linear_eval(enc, train_ds, test_ds, LinearConfig(epochs=LINEAR_EPOCHS[preset]), device=dev)
        rows[name] = row
        cache[name] = row
        atomic_write_json(path, cache)
    return rows


def format_table(rows: dict) -> str:
    """The paper's Table 12 layout: methods as columns, k-NN and linear probe as rows."""
    names = [n for n, _ in METHODS if n in rows] + [n for n, _ in BASELINES if n in rows]
    labels = [rows[n]["label"] for n in names]
    width = max(12, *(len(l) for l in labels))
    lines = ["top-1 accuracy (%) on the held-out split", " " * 14 + "".join(f"{l:>{width + 2}}" for l in labels)]
    knn = [rows[n]["knn"] for n in names]
    for k in sorted({r["k"] for x in knn for r in x["results"]}):
        vals = [next((r["top1"] for r in x["results"] if r["k"] == k), float("nan")) for x in knn]
        lines.append(f"{f'{k}-NN':<14}" + "".join(f"{v:>{width + 2}.1f}" for v in vals))
    if all("linear" in rows[n] for n in names):
        lines.append(f"{'linear probe':<14}" + "".join(f"{rows[n]['linear']['top1']:>{width + 2}.1f}" for n in names))
    return "\n".join(lines)


def _metrics(row: dict) -> dict[str, float]:
    """The table's numbers of one evaluation row: '<k>-NN' top-1 for each k, and 'linear probe'."""
    m = {f"{r['k']}-NN": float(r["top1"]) for r in row["knn"]["results"]}
    if "linear" in row:
        m["linear probe"] = float(row["linear"]["top1"])
    return m


def summarize_seeds(per_seed: dict[int, dict]) -> dict:
    """Mean and sample standard deviation (ddof=1) over seeds of every (method, metric) in the table.

    Also the paired difference Gen-DINO − DINO per seed (same seed = same data order and initialisation), whose
    spread is the one that says whether the gap is larger than seed noise.
    """
    import numpy as np

    seeds = sorted(per_seed)
    names = [n for n, _ in METHODS + BASELINES if all(n in per_seed[s] for s in seeds)]
    labels = {n: per_seed[seeds[0]][n]["label"] for n in names}
    rows: dict[str, dict] = {}
    for n in names:
        vals = [_metrics(per_seed[s][n]) for s in seeds]
        keys = [k for k in vals[0] if all(k in v for v in vals)]
        rows[n] = {"label": labels[n], "metrics": {k: _stats([v[k] for v in vals]) for k in keys}}
    diff = {}
    if "gendino" in rows and "dino" in rows:
        for k in rows["dino"]["metrics"]:
            if k in rows["gendino"]["metrics"]:
                g, d = rows["gendino"]["metrics"][k]["values"], rows["dino"]["metrics"][k]["values"]
                diff[k] = _stats(list(np.subtract(g, d)))
    return {"seeds": seeds, "methods": rows, "gendino_minus_dino": diff}


def _stats(values: list[float]) -> dict:
    import numpy as np

    v = np.asarray(values, dtype=float)
    return {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if len(v) > 1 else 0.0,
            "n": int(len(v)), "values": [float(x) for x in v]}


def format_seed_table(summary: dict) -> str:
    """Table 12 layout with mean ± std over seeds in every cell."""
    rows = summary["methods"]
    names = list(rows)
    metrics = [k for k in rows[names[0]]["metrics"] if all(k in rows[n]["metrics"] for n in names)]
    width = max(13, *(len(rows[n]["label"]) for n in names))
    lines = [f"top-1 accuracy (%) on the held-out split, mean ± std over seeds {summary['seeds']}",
             " " * 14 + "".join(f"{rows[n]['label']:>{width + 2}}" for n in names)]
    for k in metrics:
        cells = [f"{rows[n]['metrics'][k]['mean']:.1f} ± {rows[n]['metrics'][k]['std']:.1f}" for n in names]
        lines.append(f"{k:<14}" + "".join(f"{c:>{width + 2}}" for c in cells))
    if summary["gendino_minus_dino"]:
        d = summary["gendino_minus_dino"]
        lines.append("Gen-DINO − DINO (paired by seed): "
                     + ", ".join(f"{k} {d[k]['mean']:+.1f} ± {d[k]['std']:.1f}" for k in d))
    return "\n".join(lines)


def seeds_markdown(summary: dict, args) -> str:
    rows = summary["methods"]
    names = list(rows)
    metrics = [k for k in rows[names[0]]["metrics"] if all(k in rows[n]["metrics"] for n in names)]
    cmd = f"gensis demo --preset {args.preset} --data {args.data} --seeds {','.join(map(str, summary['seeds']))}"
    md = [f"# Gen-SIS over seeds {summary['seeds']}", "", f"Command: `{cmd} --out {args.out}`", "",
          "Top-1 accuracy (%) on the held-out split, mean ± sample std (ddof=1) over seeds.", "",
          "| | " + " | ".join(rows[n]["label"] for n in names) + " |", "|---|" + "---:|" * len(names)]
    for k in metrics:
        md.append(f"| {k} | " + " | ".join(f"{rows[n]['metrics'][k]['mean']:.1f} ± {rows[n]['metrics'][k]['std']:.1f}"
                                            for n in names) + " |")
    if summary["gendino_minus_dino"]:
        d = summary["gendino_minus_dino"]
        md += ["", "Gen-DINO − DINO, paired by seed: "
               + "; ".join(f"{k} {d[k]['mean']:+.1f} ± {d[k]['std']:.1f}" for k in d), ""]
    md += ["", "Per seed:", "", "| seed | " + " | ".join(f"{rows[n]['label']} {k}" for n in names for k in metrics) + " |",
           "|---|" + "---:|" * (len(names) * len(metrics))]
    for i, s in enumerate(summary["seeds"]):
        md.append(f"| {s} | " + " | ".join(f"{rows[n]['metrics'][k]['values'][i]:.1f}" for n in names for k in metrics)
                  + " |")
    return "\n".join(md) + "\n"
