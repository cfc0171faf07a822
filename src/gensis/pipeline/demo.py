"""The whole Gen-SIS pipeline on one dataset, as resumable stages (``gensis demo``).

    dino      DINO pretraining (the baseline, and the encoder that conditions the E-LDM)
    eldm      embedding-conditioned diffusion model on the same images (autoencoder first if latent)
    bank      generative + interpolated self-augmentations, written to disk
    gendino   Gen-DINO: DINO with bank views + disentanglement loss (same epochs/seed/budget as dino)
    pixel     "DINO w/ pixel disent." ablation (paper Table 12)
    eval      k-NN (and linear probe) of each, next to raw-pixel and random-init baselines
    report    Markdown + HTML report with curves, grids and a UMAP

Each stage calls the library (``gensis.pipeline.calls``: ``gensis.api.pretrain``, ``train_eldm``, ... with the
typed config whose resolved dict its key hashes) and prints the equivalent ``gensis`` command line, to re-run
it by hand. It writes its own run directory under ``out`` and is keyed by a hash of its resolved config and
inputs (``gensis.pipeline.runner``): a finished stage with the same key is skipped, a killed one resumed, one made
with other settings redone. So a killed demo continues where it stopped when run again. Config keys added to gensis
later at the value that reproduces older runs (``gensis.configs.added``) are left out of the hash: upgrading
gensis keeps a finished demo up to date.

Overrides: ``overrides=("pretrain.optim.epochs=5", "eldm.optim.epochs=4", "bank.gen.num_generative=2")`` change the config of
every stage of that family (``gensis.pipeline.overrides``); ``eldm.eval.*`` and ``eldm.figures.*`` go to the
E-LDM's evaluation and figure stages, which read them, so they do not retrain it. Without overrides the stages'
keys and commands are exactly those of a demo without the option.

Methods: ``methods=("dino",)`` by default. Another SSL method X (from ``gensis pretrain --method X``) adds the
runs X, X-pixel and gen-X (``gensis.pipeline.results.variants``); their E-LDM is conditioned on X's encoder.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from gensis.api import AUTOENCODER_SECTIONS
from gensis.configs.added import without_added
from gensis.configs.typed import BankConfig, ELDMConfig, PretrainConfig
from gensis.errors import UserError
from gensis.pipeline import calls
from gensis.pipeline.eta import Overall
from gensis.pipeline.lanes import side_threads
from gensis.pipeline.overrides import check_overrides, split_overrides
from gensis.pipeline.reading import read_results
from gensis.pipeline.results import BASELINES, Variant, evaluate, results_table, variants
from gensis.pipeline.runner import Pipeline, Stage, stage_key

STAGES = ("dino", "eldm", "bank", "gendino", "pixel", "eval", "report")


@dataclass
class DemoOptions:
    preset: str = "demo"
    data: str = "builtin:animal-mnist"
    out: str = "gensis-demo"
    seed: int = 0
    seeds: tuple[int, ...] | None = None
    stages: tuple[str, ...] | None = None  # subset of STAGES (None: all)
    linear: bool = True
    quiet: bool = False
    debug: bool = False
    methods: tuple[str, ...] = ("dino",)
    overrides: tuple[str, ...] = ()  # STAGE.key=value (gensis.pipeline.overrides)
    serial: bool = False  # no side lane: every stage in this process, one after another (gensis.pipeline.lanes)


ELDM_AFTER_TRAINING = {"eval": "eldm-eval", "figures": "eldm-figures"}  # eldm.* sections read after training


SETTINGS = "demo-settings.json"  # OUT/: the settings of the last pass (the report shows them)


def header(opts: DemoOptions, seed: int | None = None) -> str:
    """The settings line the demo prints first (and the report repeats); ``seed``: one pass's seed."""
    seeds = (f"seed {seed}" if seed is not None else f"seeds {','.join(map(str, opts.seeds))}"
             if opts.seeds is not None else f"seed {opts.seed}")
    text = f"preset {opts.preset}, data {opts.data}, {seeds}, methods {','.join(opts.methods)}"
    return text + (f"; overrides: {' '.join(opts.overrides)}" if opts.overrides else "")


def parse_seeds(text: str) -> tuple[int, ...]:
    try:
        seeds = tuple(sorted({int(s) for s in text.split(",") if s.strip()}))
    except ValueError:
        raise UserError(f"--seeds must be comma-separated integers, got '{text}'") from None
    if not seeds:
        raise UserError("--seeds is empty")
    if seeds[0] < 0:
        raise UserError(f"--seeds must be integers >= 0 (each stage's train.seed), got {seeds[0]}")
    return seeds


def check_seed(seed: int) -> None:
    """``--seed`` is every stage's ``train.seed``: refused before anything is written (a negative one stopped the
    first training stage, after the demo had written its settings, or the slide demo had tiled its slide)."""
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise UserError(f"--seed must be an integer >= 0 (each stage's train.seed), got {seed}")


def parse_stages(text: str | None) -> tuple[str, ...] | None:
    if text is None:
        return None
    wanted = tuple(s.strip() for s in text.split(",") if s.strip())
    unknown = [s for s in wanted if s not in STAGES]
    if unknown:
        raise UserError(f"unknown stage '{unknown[0]}' in --stages; stages: {', '.join(STAGES)}")
    return wanted


def parse_methods(text: str) -> tuple[str, ...]:
    """``dino,ibot`` -> ('dino', 'ibot'); each must be a registered SSL method (``gensis pretrain --method``)."""
    methods = tuple(dict.fromkeys(m.strip() for m in text.split(",") if m.strip()))
    if not methods:
        raise UserError("--methods is empty")
    try:
        from gensis.ssl.methods import METHODS as REGISTERED
    except ImportError:
        REGISTERED = ("dino",)
    bad = [m for m in methods if m not in REGISTERED]
    if bad:
        raise UserError(f"unknown method '{bad[0]}' in --methods; available: {', '.join(REGISTERED)}")
    return methods


def run_demo(opts: DemoOptions) -> dict | None:
    """Run the pipeline once (``opts.seed``) or once per seed (``opts.seeds``); returns the results."""
    from gensis.rundir import atomic_write_json, atomic_write_text, lock_folder

    out = Path(opts.out)
    from gensis.folder_kind import require_own_or_empty

    require_own_or_empty(out, "demo")  # a user's folder or a run folder: refused before anything is written
    check_seed(opts.seed)
    check_overrides(split_overrides(opts.overrides), opts.preset, opts.methods)  # before anything is written
    if opts.stages is None or "report" in opts.stages:  # not after the whole pipeline
        from gensis.plots import matplotlib_module

        matplotlib_module("the demo's report (--stages without report: none)")
    with _demo_skip_hint():
        _check_enough_images(opts)
        _check_labels(opts)
    print(f"gensis demo: {header(opts)}", file=sys.stderr, flush=True)
    lock_folder(out)  # one demo per folder (a pass's own folder is locked by its Pipeline)
    if opts.seeds is None:
        return run_pipeline(opts, out, opts.seed)
    from gensis.pipeline.seeds import format_seed_table, seeds_markdown, summarize_seeds

    per_seed = {}
    for i, s in enumerate(opts.seeds):
        print(f"=== seed {s} ({i + 1}/{len(opts.seeds)}): {out / f'seed-{s}'}", file=sys.stderr, flush=True)
        results = run_pipeline(opts, out / f"seed-{s}", s, passes_after=len(opts.seeds) - i - 1)
        if results:
            per_seed[s] = results
    if not per_seed:
        return None
    summary = summarize_seeds(per_seed, opts.methods)
    print(format_seed_table(summary, opts.methods))
    atomic_write_json(out / "seeds.json", summary)
    atomic_write_text(out / "seeds.md", seeds_markdown(summary, opts, next(iter(per_seed.values()))))
    print(f"over-seed summary: {out / 'seeds.md'} and {out / 'seeds.json'}")
    return summary


class _Keys:
    """Resolved configs and data identity, computed once per pipeline pass."""

    def __init__(self, opts: DemoOptions):
        self.opts = opts
        self._data: str | None = None

    def config(self, family: str, overrides: list[str]) -> dict:
        from gensis.config import load_config

        return load_config(family, self.opts.preset, overrides)

    @property
    def data(self) -> str:
        if self._data is None:
            from gensis.data.sources import open_data

            self._data = open_data(self.opts.data, "all", skip_bad_images=_skips_bad_images(self.opts)).identity
        return self._data


def _skips_bad_images(opts: DemoOptions) -> bool:
    """``pretrain.data.skip_bad_images=true`` given: the demo's own reads of the data (its identity, the label and
    size checks) leave unreadable images out as its pretraining does. (No shipped preset sets the key, and the
    demo takes only those; the overrides are already checked, and parsed here as the stages parse them.)"""
    from gensis.config import parse_overrides

    data = parse_overrides(split_overrides(opts.overrides)["pretrain"]).get("data")
    return isinstance(data, dict) and bool(data.get("skip_bad_images", False))


DEMO_SKIP_HINT = ("fix or remove it, or add pretrain.data.skip_bad_images=true (every stage of the demo then skips "
                  "unreadable images and says how many)")


@contextlib.contextmanager
def _demo_skip_hint() -> Iterator[None]:
    """An unreadable image met by the demo's checks: its line names the demo's override (the stages' own hint,
    ``data.skip_bad_images=true``, is not a key the demo takes)."""
    from gensis.data.sources import SKIP_HINT

    try:
        yield
    except UserError as e:
        if not str(e).endswith(SKIP_HINT):
            raise
        raise UserError(str(e)[: -len(SKIP_HINT)] + DEMO_SKIP_HINT) from None


def _module_exists(name: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:
        return False


def _check_labels(opts: DemoOptions) -> None:
    """Refuse, before anything is written, unlabelled data when the eval stage runs (k-NN and linear probe need
    labels): found at the end of an hour of training it would cost the whole run."""
    if opts.stages is not None and "eval" not in opts.stages:
        return
    from gensis.data.sources import open_data

    import numpy as np

    labels = open_data(opts.data, "all", skip_bad_images=_skips_bad_images(opts)).labels
    if labels is None:
        raise UserError(f"{opts.data} has no labels, and the demo's eval stage (k-NN, linear probe) needs them: give "
                        f"labelled images (one folder per class, an .npz with 'labels') or leave eval out (--stages)")
    if len(np.unique(labels)) < 2:  # every score would be 100% by construction, after the whole run
        raise UserError(f"{opts.data} holds images of one class only, and the demo's eval stage (k-NN, linear probe) "
                        f"scores 100% on it whatever the encoder: give images of two classes or more, or leave eval "
                        f"out (--stages)")


def _check_enough_images(opts: DemoOptions) -> None:
    """Refuse, before anything is written, a dataset with fewer training images than a batch of a stage, naming
    the override that sets a smaller one."""
    from gensis.data.sources import open_data

    keys = _Keys(opts)
    ov = split_overrides(opts.overrides)
    have_gen = _module_exists("gensis.eldm.train") and _module_exists("gensis.bank")

    def want(name: str) -> bool:
        return opts.stages is None or name in opts.stages

    need: dict[str, tuple[int, str]] = {}  # stage -> (batch, the override that sets it)
    if any(want(s) for s in ("dino", "gendino", "pixel")):
        for method in opts.methods:
            cfg = keys.config("pretrain", ([] if method == "dino" else [f"method={method}"]) + ov["pretrain"])
            need[f"pretrain ({method})"] = (int(cfg["optim"]["batch_size"]), "pretrain.optim.batch_size")
    if have_gen and want("eldm"):
        e = keys.config("eldm", _eldm_training(ov["eldm"]))
        need["eldm train"] = (int(e["optim"]["batch_size"]), "eldm.optim.batch_size")
        if e["space"] == "vq":
            need["eldm train-ae"] = (int(e["ae"]["optim"]["batch_size"]), "eldm.ae.optim.batch_size")
    if not need:
        return
    d = keys.config("pretrain", ov["pretrain"])["data"]
    n = len(open_data(opts.data, "train", d["val_fraction"], d["split_seed"], d["limit"], d["skip_bad_images"]))
    stage, (batch, key) = max(need.items(), key=lambda kv: kv[1][0])
    if n < batch:
        raise UserError(f"{opts.data} has {n} training images, fewer than the batch of {batch} the '{opts.preset}' "
                        f"preset uses ({stage}): give at least {batch} training images, or a smaller batch "
                        f"({key}=N, N <= {n}; the same for every stage whose batch is larger)")


def _section(override: str) -> str:
    """The top-level section a ``key=value`` override sets (``optim`` of ``optim.epochs=3``)."""
    return override.split("=", 1)[0].strip().split(".", 1)[0]


def _eldm_training(user: Sequence[str]) -> list[str]:
    """The ``eldm.*`` overrides the E-LDM's training reads (not its eval.* / figures.* sections)."""
    return [o for o in user if _section(o) not in ELDM_AFTER_TRAINING]


def _eldm_after(user: Sequence[str], section: str) -> list[str]:
    return [o for o in user if _section(o) == section]


def run_pipeline(opts: DemoOptions, out: Path, seed: int, passes_after: int = 0) -> dict | None:
    """One pass of the pipeline into ``out`` with ``seed``; returns the evaluation rows (None if not run).
    ``passes_after``: seeds still to run after this one (the progress line's estimate covers them)."""
    from gensis.rundir import make_folder

    make_folder(out)
    pipe = Pipeline(out, opts.quiet, side_threads=0 if opts.serial else side_threads())
    keys = _Keys(opts)
    user_ov = split_overrides(opts.overrides)  # {family: [key=value, ...]}; all empty without overrides
    # the stages that read the data the pretraining read skip its unreadable images too (E-LDM, its autoencoder,
    # figures and eval through the E-LDM run's config, the bank); only when set, so other keys stay as before
    same_data = ["data.skip_bad_images=true"] if _skips_bad_images(opts) else []
    from gensis.rundir import atomic_write_json

    atomic_write_json(out / SETTINGS, {"settings": header(opts, seed), "overrides": list(opts.overrides)})
    P, D, S = opts.preset, opts.data, str(seed)
    dbg = ["--debug"] if opts.debug else []  # in the printed command lines only (errors reach the caller)
    t_start = time.time()

    def want(name: str) -> bool:
        return opts.stages is None or name in opts.stages

    have_gen = _module_exists("gensis.eldm.train") and _module_exists("gensis.bank")
    report = want("report") and _module_exists("matplotlib")
    pipe.overall = Overall(P, _plan(opts, keys, S, have_gen, pipe.side is not None, report, user_ov["eldm"]), t_start,
                           passes_after)
    for method in opts.methods:
        base, pixel, gen = variants(method)
        pre_ov = [f"train.seed={S}"] + ([] if method == "dino" else [f"method={method}"])  # = --method X
        pre_ov += user_ov["pretrain"]
        ae_stage: list[tuple[str, Path | None]] = [("pixel", None)]  # (key, folder) of the E-LDM's autoencoder

        def autoencoder() -> None:
            if have_gen and want("eldm"):
                ae_stage[0] = _autoencoder_stage(pipe, keys, out, P, D, S, dbg, [*same_data, *user_ov["eldm"]])

        def pixel_ablation(method: str = method, pre_ov: list[str] = pre_ov, pixel: Variant = pixel) -> None:
            if want("pixel"):
                ov = [*pre_ov, "gen.interp=pixel"]
                cfg = keys.config("pretrain", ov)
                k = stage_key("pretrain", without_added("pretrain", cfg), keys.data, D, method)
                pipe.run(Stage(pixel.name, ["pretrain", "--data", D, "--out", str(out / pixel.name), "--preset", P,
                                            "--interp", "pixel", *dbg, *pre_ov], k, kind="pretrain",
                               call=calls.pretrain(PretrainConfig.from_dict(cfg), D, out / pixel.name,
                                                     interp="pixel"), background=True))

        # the stages that read none of the chain's outputs: with a side lane they go first and run beside the
        # chain; without one they run where they always did (the autoencoder before the E-LDM, the ablation last)
        lanes = pipe.side is not None
        if lanes:
            autoencoder()
            pixel_ablation()
        cfg = keys.config("pretrain", pre_ov)
        k_base = stage_key("pretrain", without_added("pretrain", cfg), keys.data, D, method)
        if want("dino"):
            pipe.run(Stage(base.name, ["pretrain", "--data", D, "--out", str(out / base.name), "--preset", P,
                                       *dbg, *pre_ov], k_base, kind="pretrain",
                           call=calls.pretrain(PretrainConfig.from_dict(cfg), D, out / base.name), lane_threads=True))
        if not lanes:
            autoencoder()
        eldm_dir = "eldm" if method == "dino" else f"eldm-{method}"
        k_eldm = k_base
        if have_gen and want("eldm"):
            k_eldm = _eldm_stages(pipe, keys, out, base.name, eldm_dir, P, D, S, k_base, dbg,
                                  [*same_data, *user_ov["eldm"]], *ae_stage[0])
        if lanes and want("eval"):  # the columns finished by now, evaluated beside the bank and Gen-X
            early = [base.name, pixel.name] + ([name for name, _ in BASELINES] if method == opts.methods[0] else [])
            argv = [str(out), D, P, ",".join(opts.methods), ",".join(early)] + ([] if opts.linear else ["--no-linear"])
            pipe.run(Stage(f"eval-early-{method}", argv, stage_key("eval-early", time.time()), resumable=False,
                           extra={"module": "gensis.pipeline.early_eval"}, call=lambda resume: None, background=True))
        k_bank = stage_key("bank-of", k_eldm)
        bank_dir = "bank" if method == "dino" else f"bank-{method}"
        if have_gen and want("bank"):
            # the bank must cover exactly the images Gen-X trains on: same split and limit as pretraining
            d = keys.config("pretrain", pre_ov)["data"]
            same = [f"data.limit={'null' if d['limit'] is None else d['limit']}",
                    f"data.val_fraction={d['val_fraction']}", f"data.split_seed={d['split_seed']}",
                    f"gen.seed={S}", *same_data, *user_ov["bank"]]
            cfg = keys.config("bank", same)
            k_bank = stage_key("bank", without_added("bank", cfg), k_eldm, keys.data, D)
            pipe.run(Stage(bank_dir, ["bank", "generate", "--eldm", str(out / eldm_dir), "--data", D,
                                      "--out", str(out / bank_dir), "--preset", P, *dbg, *same]
                           + (["--quiet"] if opts.quiet else []),
                           k_bank, kind="bank", done_file="bank.json", resumable=False,
                           call=calls.bank(BankConfig.from_dict(cfg), out / eldm_dir, D, out / bank_dir,
                                           opts.quiet)))
        if have_gen and want("gendino"):
            # Gen-X's disentanglement uses the bank's alphas: `bank.gen.alphas=...` alone sets both
            gen_ov = pre_ov + [o for o in user_ov["bank"] if o.startswith("gen.alphas=")
                               and not any(p.startswith("gen.alphas=") for p in user_ov["pretrain"])]
            ov = [*gen_ov, "gen.interp=bank"]
            cfg = keys.config("pretrain", ov)
            k = stage_key("pretrain", without_added("pretrain", cfg), keys.data, D, method, k_bank)
            pipe.run(Stage(gen.name, ["pretrain", "--data", D, "--out", str(out / gen.name), "--preset", P,
                                      "--bank", str(out / bank_dir), *dbg, *gen_ov], k, kind="pretrain",
                           call=calls.pretrain(PretrainConfig.from_dict(cfg), D, out / gen.name,
                                                 bank=out / bank_dir), lane_threads=True))
        if not lanes:
            pixel_ablation()
    pipe.join()  # the side lane's stages (if any) are done before anything reads them
    results = None
    if want("eval"):
        results = evaluate(out, D, P, opts.linear, opts.methods)
        if report or passes_after:  # the last line of the last pass would only repeat the summary below
            print(pipe.overall.finished("eval", ran=True), file=sys.stderr, flush=True)
        print(results_table(results, opts.methods).text())
        reading = read_results(results, opts.methods)
        if reading is not None:
            print("\n" + reading.text())
    if want("report") and not report:
        print("report skipped: it needs matplotlib (pip install 'gensis[report]')", file=sys.stderr)
    elif want("report"):
        from gensis.report import write_report

        md, html = write_report(out, methods=opts.methods)
        print(f"report: {md} and {html}")
    print(f"demo finished in {time.time() - t_start:.0f} s; outputs in {out}/")
    if pipe.cpu:
        print("stage seconds (wall / CPU): " + ", ".join(f"{k} {pipe.times.get(k, 0):.0f}/{v:.0f}"
                                                          for k, v in pipe.cpu.items()), file=sys.stderr)
    return results


def _plan(opts: DemoOptions, keys: _Keys, seed: str, have_gen: bool, lanes: bool, report: bool,
          user: Sequence[str]) -> list[tuple[str, float]]:
    """The stages one pass runs, as (name, units of its role) for the overall progress line (``Overall``): the
    evaluations' units are the columns they score. ``user``: the ``eldm.*`` overrides."""
    def want(name: str) -> bool:
        return opts.stages is None or name in opts.stages

    plan: list[tuple[str, float]] = []
    ae = have_gen and want("eldm") and _latent(keys.config("eldm", [f"train.seed={seed}", *_eldm_training(user)]))
    columns = early = 0
    for i, method in enumerate(opts.methods):
        base, pixel, gen = variants(method)
        eldm = "eldm" if method == "dino" else f"eldm-{method}"
        names = [base.name] if want("dino") else []
        if have_gen and want("eldm"):
            names += [*(["eldm-ae"] if ae else []), eldm, f"{eldm}-figures", f"{eldm}-eval"]
        names += [n for n, on in (("bank" if method == "dino" else f"bank-{method}", have_gen and want("bank")),
                                  (gen.name, have_gen and want("gendino")), (pixel.name, want("pixel"))) if on]
        plan += [(n, 1.0) for n in names]
        columns += 3 + (len(BASELINES) if i == 0 else 0)
        if lanes and want("eval"):  # the columns finished early (the baselines with the first method's)
            plan.append((f"eval-early-{method}", 2.0 + (len(BASELINES) if i == 0 else 0)))
            early += 2 + (len(BASELINES) if i == 0 else 0)
    if want("eval"):
        plan.append(("eval", float(columns - early)))
    if report:
        plan.append(("report", 1.0))
    return plan


def _latent(eldm_cfg: dict) -> bool:
    """Whether an E-LDM config trains in an autoencoder's latent space (so the demo runs the autoencoder stage)."""
    return eldm_cfg.get("space", eldm_cfg.get("ae", {}).get("space")) not in (None, "pixel")


def _autoencoder_stage(pipe: Pipeline, keys: _Keys, out: Path, P: str, D: str, S: str, extra: list[str],
                       user: Sequence[str] = ()) -> tuple[str, Path | None]:
    """The E-LDM's autoencoder (latent space only; a side-lane stage): (its key, its folder), or ("pixel",
    None) in pixel space. ``user``: the ``eldm.*`` overrides."""
    training = _eldm_training(user)
    if not _latent(keys.config("eldm", [f"train.seed={S}", *training])):
        return "pixel", None
    ae_cfg = keys.config("eldm", list(training))
    keyed = without_added("eldm", ae_cfg)
    # keyed on what the autoencoder's training reads: an E-LDM-only change (eldm.optim.epochs=N) keeps it
    k_ae = stage_key("eldm-ae", {s: keyed[s] for s in AUTOENCODER_SECTIONS if s in keyed}, keys.data, D)
    ae_training = [o for o in training if _section(o) in AUTOENCODER_SECTIONS]
    stage = Stage("eldm-ae", ["eldm", "train-ae", "--data", D, "--out", str(out / "eldm-ae"), "--preset", P, *extra,
                              *ae_training], k_ae, kind="eldm-ae",
                  call=calls.autoencoder(ELDMConfig.from_dict(ae_cfg), D, out / "eldm-ae"), background=True)
    # demos before 2026-12-02 keyed it on the whole E-LDM config: such a finished autoencoder, made with these very
    # settings, is kept under its key (and so are the stages that read it), not trained again
    k_before = stage_key("eldm-ae", keyed, keys.data, D)
    if pipe.state.get(stage.name) == k_before and pipe.finished(stage):
        stage.key = k_ae = k_before
    ae = pipe.run(stage)
    return k_ae, ae


def _eldm_stages(pipe: Pipeline, keys: _Keys, out: Path, encoder: str, eldm_dir: str, P: str, D: str, S: str,
                 k_encoder: str, extra: list[str], user: Sequence[str] = (), k_ae: str = "pixel",
                 ae: Path | None = None) -> str:
    """E-LDM (on the autoencoder ``ae`` with key ``k_ae``, from ``_autoencoder_stage``), its figures and
    fidelity numbers (side-lane stages); returns the E-LDM's key. ``user``: the ``eldm.*`` overrides (eval.* /
    figures.* go to those stages; the rest to both trainings)."""
    training, figs, evs = _eldm_training(user), _eldm_after(user, "figures"), _eldm_after(user, "eval")
    ov = [f"train.seed={S}", *training]
    cfg = keys.config("eldm", ov)
    argv = ["eldm", "train", "--encoder", str(out / encoder), "--data", D, "--out", str(out / eldm_dir),
            "--preset", P, *extra, *ov]
    if ae is not None:
        argv += ["--ae", str(ae)]
    k = stage_key("eldm", without_added("eldm", cfg), keys.data, D, k_encoder, k_ae)
    pipe.run(Stage(eldm_dir, argv, k, kind="eldm",
                   call=calls.eldm(ELDMConfig.from_dict(cfg), out / encoder, D, out / eldm_dir, ae),
                   after=("eldm-ae",) if ae is not None else (), lane_threads=True))
    fig_dir = "eldm-figures" if eldm_dir == "eldm" else f"{eldm_dir}-figures"
    ev_dir = "eldm-eval" if eldm_dir == "eldm" else f"{eldm_dir}-eval"
    # their keys take the overrides only when there are some (keys without overrides stay those of before)
    pipe.run(Stage(fig_dir, ["eldm", "sample", "--eldm", str(out / eldm_dir), "--data", D,
                             "--out", str(out / fig_dir), *extra, *figs],
                   stage_key("figures", k, figs) if figs else stage_key("figures", k),
                   done_file="interpolation.png", resumable=False,
                   call=calls.eldm_figures(out / eldm_dir, D, out / fig_dir, figs), background=True))
    pipe.run(Stage(ev_dir, ["eldm", "eval", "--eldm", str(out / eldm_dir), "--data", D,
                            "--json", str(out / ev_dir / "eval.json"), *extra, *evs],
                   stage_key("eval", k, evs) if evs else stage_key("eval", k),
                   done_file="eval.json", resumable=False,
                   call=calls.eldm_eval(out / eldm_dir, D, out / ev_dir / "eval.json", evs), background=True))
    return k
