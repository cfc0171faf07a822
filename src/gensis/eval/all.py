"""``gensis eval all``: every evaluation whose data is given, one encoder, one summary table.

The config (``--config evals.yaml``) has one section per evaluation, holding that evaluation's own
command-line options (without dashes; lists for repeated or comma-separated values; true for flags; ``json: FILE``
also writes that evaluation's own result file)::

    knn:        {train: builtin:animal-mnist}
    robustness: {train: /data/imagenet, ood: [/data/imagenet-a, /data/imagenet-r]}
    copydetect: {data: /data/copydays, whiten: /data/yfcc-20k}
    retrieval:  {data: /data/revisited, dataset: roxford5k, multiscale: true}
    davis:      {data: /data/DAVIS, out: davis-out}
    umap:       {data: /data/imagenet@train, classes: [n02701002, n01986214, n07718472], out: umap.png}

Without a config, the evaluations that have default data run (k-NN on the data the encoder run was
pretrained on; the builtin data for the baselines). Each section is
parsed by the evaluation's own parser, so a wrong option or value is reported as that command would.
"""

from __future__ import annotations

from gensis.errors import UserError
from gensis.eval.registry import check_result_path, parse_options, replaced_note, run_parsed, write_result

RUNTIME = ("device", "threads", "cache", "feature_batch_size", "backbone", "init_seed", "random_like")
DEFAULT_RUN = {"knn": {}}


def run_all(args) -> dict:
    import yaml

    from gensis.eval.options import check_cache_option
    from gensis.eval.registry import evaluations

    evs = {k: v for k, v in evaluations().items() if k != "all"}
    if args.config:
        from gensis.inputs import input_file

        path = input_file(args.config, "config")
        try:
            cfg = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as e:
            raise UserError(f"cannot read {path}: {str(e).splitlines()[0]}") from None
        if not isinstance(cfg, dict):
            raise UserError(f"{path}: expected one section per evaluation ({', '.join(evs)})")
        unknown = [k for k in cfg if k not in evs]
        if unknown:
            raise UserError(f"{path}: unknown evaluation '{unknown[0]}' (one of {', '.join(evs)})")
    else:
        cfg = DEFAULT_RUN
    common = {"encoder": args.encoder, **{key: getattr(args, key, None) for key in RUNTIME}}
    # parse every section first (by the evaluation's own parser): a wrong option fails before any work
    parsed = {}
    for name, section in cfg.items():
        if not isinstance(section or {}, dict):
            raise UserError(f"config section '{name}' must be a mapping of options, got {type(section).__name__}")
        parsed[name] = ns = parse_options(name, {**common, **(section or {})}, where=f"config section '{name}'")
        try:  # a section's own json / cache is checked as its command checks it, before any work
            check_result_path(getattr(ns, "json", None))
            check_cache_option(ns)
        except UserError as e:
            raise UserError(f"config section '{name}': {e}") from None
    results, rows = {}, []
    for name, ns in parsed.items():
        ev = evs[name]
        print(f"== {name}", flush=True)
        try:
            res = run_parsed(name, ns)
        except UserError as e:
            results[name] = {"error": str(e)}
            rows.append((name, "error", str(e)))
            print(f"gensis: error: {name}: {e}")
            continue
        note = replaced_note(getattr(ns, "json", None))
        if getattr(ns, "json", None):  # the section's own result file, as `gensis eval NAME --json` writes it
            write_result(ns.json, res)
        print(ev.format(res), flush=True)
        if getattr(ns, "json", None):
            print(f"results written to {ns.json}{note}", flush=True)
        results[name] = res
        rows += [(name, metric, value) for metric, value in ev.headline(res)]
    return {"protocol": "all", "encoder": args.encoder, "config": str(args.config) if args.config else None,
            "summary": [{"evaluation": n, "metric": m, "value": v} for n, m, v in rows], "results": results}


def format_all(res: dict) -> str:
    lines = [f"summary  encoder: {res['encoder']}", f"{'evaluation':<12} {'metric':<36} {'value':>8}"]
    for r in res["summary"]:
        v = r["value"]
        lines.append(f"{r['evaluation']:<12} {r['metric'][:36]:<36} " + (f"{v:8.2f}" if isinstance(v, float) else f"{v}"))
    return "\n".join(lines)


def _add_arguments(p) -> None:
    from gensis.eval.options import add_encoder_options, add_runtime_options

    add_encoder_options(p, data_option="a config section's train")
    p.add_argument("--config", default=None, metavar="evals.yaml",
                   help="one section per evaluation with its options (default: k-NN on the data the --encoder run "
                        "was pretrained on; builtin:animal-mnist for the baselines)")
    add_runtime_options(p)


def _run(args) -> dict:
    res = run_all(args)
    failed = [n for n, r in res["results"].items() if "error" in r]
    if failed:
        print(format_all(res))
        if args.json:
            write_result(args.json, res)
        raise UserError(f"{len(failed)} of {len(res['results'])} evaluations failed: {', '.join(failed)}")
    return res


from gensis.eval.registry import Evaluation  # noqa: E402

EVALUATION = Evaluation(
    name="all",
    summary="every evaluation whose data the config gives, one summary table",
    description="Runs the evaluations listed in --config (one section each, holding that command's options) "
                "with one encoder, and prints one summary table.",
    add_arguments=_add_arguments, run=_run, format=format_all,
)
