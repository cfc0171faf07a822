"""Over-seed summary of the demo (``--seeds 0,1,2``): mean ± sample std per cell, and the paired Gen-X − X
difference per seed (same seed = same data order and initialisation), whose spread says whether the gap is
larger than seed noise."""

from __future__ import annotations

import numpy as np

from gensis.pipeline.results import columns, describe_results, methods_in, metrics, n_test_images, variants
from gensis.pipeline.table import Table


def _stats(values: list[float]) -> dict:
    v = np.asarray(values, dtype=float)
    return {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if len(v) > 1 else 0.0,
            "n": int(len(v)), "values": [float(x) for x in v]}


def summarize_seeds(per_seed: dict[int, dict], methods: tuple[str, ...] | None = None) -> dict:
    """Mean and sample standard deviation (ddof=1) over seeds of every (method, metric) in the table."""
    seeds = sorted(per_seed)
    methods = methods or methods_in(per_seed[seeds[0]])
    order = [n for n, _ in columns(methods)]
    names = [n for n in order if all(n in per_seed[s] for s in seeds)]
    rows: dict[str, dict] = {}
    for n in names:
        vals = [metrics(per_seed[s][n]) for s in seeds]
        keys = [k for k in vals[0] if all(k in v for v in vals)]
        sizes = {n_test_images(per_seed[s][n]) for s in seeds}
        rows[n] = {"label": per_seed[seeds[0]][n]["label"], "metrics": {k: _stats([v[k] for v in vals]) for k in keys},
                   "test_size": sizes.pop() if len(sizes) == 1 else None}  # images behind each k-NN score
    paired = {}
    for m in methods:
        base, _, gen = variants(m)
        if gen.name in rows and base.name in rows:
            paired[m] = {"label": f"{gen.label} − {base.label}", "metrics": paired_difference(rows, gen.name, base.name)}
    out = {"seeds": seeds, "methods": rows, "paired": paired}
    out["gendino_minus_dino"] = paired.get("dino", {}).get("metrics", {})  # the DINO pair, as before
    return out


def paired_difference(rows: dict, a: str, b: str) -> dict[str, dict]:
    """Per metric both rows of a summary have: mean and sample std over seeds of ``a − b`` taken seed by seed
    (paired: the same seed gives both runs the same data order and initialisation)."""
    ma, mb = rows[a]["metrics"], rows[b]["metrics"]
    return {k: _stats(list(np.subtract(ma[k]["values"], mb[k]["values"]))) for k in ma if k in mb}


def _common_metrics(rows: dict) -> list[str]:
    names = list(rows)
    return [k for k in rows[names[0]]["metrics"] if all(k in rows[n]["metrics"] for n in names)]


def seed_table(summary: dict) -> Table:
    """Table 12 layout with mean ± std over seeds in every cell."""
    rows = summary["methods"]
    t = Table([rows[n]["label"] for n in rows],
              title=f"top-1 accuracy (%) on the held-out split, mean ± std over seeds {summary['seeds']}")
    for k in _common_metrics(rows):
        t.add(k, [f"{rows[n]['metrics'][k]['mean']:.1f} ± {rows[n]['metrics'][k]['std']:.1f}" for n in rows])
    return t


def format_seed_table(summary: dict, methods: tuple[str, ...] | None = None) -> str:
    """The over-seed table and its "How to read it" block (the paired differences, Gen-X − X of every row among
    them: ``gensis.pipeline.reading.read_seeds``), for the terminal."""
    from gensis.pipeline.reading import read_seeds

    reading = read_seeds(summary, methods)
    return "\n".join([seed_table(summary).text(), *([] if reading is None else ["", reading.text()])])


def per_seed_table(summary: dict) -> Table:
    rows = summary["methods"]
    ks = _common_metrics(rows)
    t = Table([f"{rows[n]['label']} {k}" for n in rows for k in ks], corner="seed")
    for i, s in enumerate(summary["seeds"]):
        t.add(str(s), [f"{rows[n]['metrics'][k]['values'][i]:.1f}" for n in rows for k in ks])
    return t


def seeds_markdown(summary: dict, args, rows: dict | None = None) -> str:
    """``OUT/seeds.md``; ``rows``: one seed's evaluation rows, for the paragraph saying what the numbers are
    (``describe_results``: the splits and their sizes, k, the probe, the columns)."""
    cmd = f"gensis demo --preset {args.preset} --data {args.data} --seeds {','.join(map(str, summary['seeds']))}"
    methods = tuple(getattr(args, "methods", ("dino",)))
    stages = getattr(args, "stages", None)  # what ran (the command reruns exactly it: all stages, linear probe ...)
    extra = ((f" --methods {','.join(methods)}" if methods != ("dino",) else "")
             + (f" --stages {','.join(stages)}" if stages is not None else "")
             + ("" if getattr(args, "linear", True) else " --no-linear")
             + "".join(f" {o}" for o in getattr(args, "overrides", ())))  # the config overrides every seed ran with
    md = [f"# Gen-SIS over seeds {summary['seeds']}", "", f"Command: `{cmd} --out {args.out}{extra}`", "",
          (describe_results(rows) + " Each cell: mean ± sample std (ddof=1) over the seeds." if rows else
           "Top-1 accuracy (%) on the held-out split, mean ± sample std (ddof=1) over seeds."), "",
          seed_table(summary).markdown()]
    from gensis.pipeline.reading import read_seeds

    reading = read_seeds(summary, methods)
    if reading is not None:
        md += ["## How to read it", "", reading.markdown()]
    md += ["Per seed:", "", per_seed_table(summary).markdown()]
    return "\n".join(md)
