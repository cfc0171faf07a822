""""How to read it": the comparisons of the demo's results table that matter, each with its noise and a word.

For every SSL method X of the run, four differences of one k-NN row of the table (20-NN, else the largest k
present), in points of top-1 accuracy:

    X − random-init ViT       did pretraining learn anything?
    X − raw pixels            does it beat the features of no model at all?
    X w/ pixel disent. − X    the disentanglement loss with pixel interpolations (ablation)
    Gen-X − X                 the paper's method against its baseline

Noise, one seed. A k-NN top-1 score on n test images is a binomial proportion p with standard deviation
sqrt(p(1 − p)/n). For a difference of two scores the two variances are added:

    sd(p1 − p2) = sqrt(p1 (1 − p1) / n1 + p2 (1 − p2) / n2)        (p in [0, 1], × 100 for points)

with n1 = n2 = the test-set size recorded in the results (``knn.test.size``). Both scores are measured on the
same test images; the positive correlation this brings (an image easy for one encoder tends to be easy for
the other) makes the true sd of the difference smaller, so this sd is conservative.

Noise over seeds (``gensis demo --seeds``): the sample standard deviation (ddof=1) over seeds of the
difference taken seed by seed (``gensis.pipeline.seeds.paired_difference``); the difference shown is its mean,
its value in each seed follows ("per seed"). Gen-X − X in the table's other rows (the other k, the linear
probe) is one more line, the same way: over seeds that difference cannot be worked out from the table's
mean ± std cells, while with one seed it can. With a single seed the one-seed formula above is used on the
scores.

Word, one seed: "above" when difference > 2 sd, "below" when difference < −2 sd, otherwise "within noise".
Word over n ≥ 2 seeds: the same question asked of the paired mean d̄ with its small-sample interval, Student's
t at two-sided 95 % with n − 1 degrees of freedom (``t_critical``; 12.71 for 2 seeds, 4.30 for 3, 2.78 for 5):

    "above" when d̄ − t · sd / sqrt(n) > 0, "below" when d̄ + t · sd / sqrt(n) < 0, otherwise "within noise"

(sd: the sample std of the per-seed differences; the interval is the paired t-test's). A fixed 2 sd would
call a gap of 2 seeds that happen to agree a difference: −0.1 ± 0.1 over 2 seeds is within noise here.

A hint line follows when a distillation method (registry ``target == "distillation"``: DINO, iBOT, DINOv2)
is not above the random-init ViT in this run's numbers, worded as its verdict: "scored below" only when the
word is "below"; "within noise" is "not shown to beat it with n seeds", with more seeds or a longer budget as
the way to tell (with 2 seeds t = 12.71 keeps even +4.5 ± 0.7 within noise). Measured on colour images at short
budgets they can stay at the random-init level while SimCLR learns (README, "When does it help").
"""

from __future__ import annotations

import html
import math
import textwrap
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from gensis.pipeline.results import BASELINES, DISPLAY, methods_in, metrics, n_test_images, score_text, variants
from gensis.pipeline.table import Table

FORMULA = "sqrt(p1(1−p1)/n + p2(1−p2)/n)"
PREFERRED_K = 20  # the row the README and the paper quote
THRESHOLD_SD = 2.0  # one seed: |difference| above this many sd: "above" / "below"
CONFIDENCE = 0.95  # over seeds: the two-sided level of the t-interval of the paired mean
PIXELS, RANDOM = "pixels", "random"  # the baselines' column names (``results.BASELINES``)
BASELINE_LABEL = dict(BASELINES)
TEXT_WIDTH = 110  # terminal lines of the block's sentences


def binomial_sd(p1: float, p2: float, n1: int, n2: int | None = None) -> float:
    """Standard deviation (points) of the difference of two top-1 scores ``p1``, ``p2`` (in %) measured on
    ``n1`` and ``n2`` (default ``n1``) test images: sqrt(p1(1−p1)/n1 + p2(1−p2)/n2), p as fractions, × 100."""
    n2 = n1 if n2 is None else n2
    f1, f2 = p1 / 100.0, p2 / 100.0
    return 100.0 * math.sqrt(f1 * (1 - f1) / n1 + f2 * (1 - f2) / n2)


def verdict(value: float, sd: float | None) -> str:
    """"above" / "below" when ``|value|`` exceeds ``THRESHOLD_SD`` sd, else "within noise"; "noise unknown"
    when there is no sd (the test-set size was not recorded)."""
    if sd is None:
        return "noise unknown"
    if value > THRESHOLD_SD * sd:
        return "above"
    if value < -THRESHOLD_SD * sd:
        return "below"
    return "within noise"


def t_critical(n: int) -> float:
    """Student's t quantile at two-sided ``CONFIDENCE`` with ``n − 1`` degrees of freedom (n ≥ 2 seeds):
    12.71 for n = 2, 4.30 for n = 3, 2.78 for n = 5 (``scipy.stats.t.ppf``)."""
    from scipy.stats import t

    if n < 2:
        raise ValueError(f"a t-interval needs at least 2 values, got {n}")
    return float(t.ppf(0.5 + CONFIDENCE / 2, n - 1))


def verdict_over_seeds(mean: float, sd: float, n: int) -> str:
    """"above" / "below" when the ``CONFIDENCE`` t-interval of the mean of ``n`` paired differences (sample std
    ``sd``), mean ± t · sd / sqrt(n), lies wholly above / below 0; else "within noise"."""
    half = t_critical(n) * sd / math.sqrt(n)
    if mean > half:
        return "above"
    if mean < -half:
        return "below"
    return "within noise"


@dataclass(frozen=True)
class Difference:
    """One line of the block: ``a − b`` of the chosen row, in points, with its sd."""

    method: str  # the SSL method X (registry name) this comparison belongs to
    kind: str  # "random" | "pixels" | "pixel" | "gen": what X (or its variant) is compared with
    label: str  # e.g. "Gen-DINO − DINO"
    value: float
    sd: float | None  # None: noise unknown
    row: str = ""  # the table row, e.g. "10-NN", where it is not the block's own row
    per_seed: tuple[float, ...] = ()  # over seeds: the difference in each seed (its mean is ``value``)

    @property
    def word(self) -> str:
        if len(self.per_seed) > 1 and self.sd is not None:
            return verdict_over_seeds(self.value, self.sd, len(self.per_seed))
        return verdict(self.value, self.sd)

    @property
    def text(self) -> str:
        return _signed(self.value) + ("" if self.sd is None else f" ± {self.sd:.1f}")

    @property
    def seeds_text(self) -> str:
        return ", ".join(map(_signed, self.per_seed))


def _signed(v: float) -> str:
    """``v`` with its sign and one decimal; a value that rounds to zero is "+0.0", never "-0.0"."""
    return f"{round(v, 1) + 0.0:+.1f}"


@dataclass
class Reading:
    """The block: which row, what the noise is, one line per difference, hint lines."""

    row: str  # e.g. "20-NN"
    why_row: str  # e.g. "the 20-NN row" or "the 50-NN row (the largest k; no 20-NN)"
    noise: str  # what the ± is
    differences: list[Difference] = field(default_factory=list)
    hints: list[str] = field(default_factory=list)
    other_rows: list[Difference] = field(default_factory=list)  # over seeds: Gen-X − X of the other rows
    seeds: int = 1  # how many seeds each difference is the mean of (the word's rule depends on it)

    def intro(self) -> str:
        return (f"Differences of {self.why_row} (top-1, points) between columns of the table above; ± is "
                f"{self.noise}. {self.rule()}")

    def rule(self) -> str:
        """The sentence that says when a difference is "above" / "below"."""
        if self.seeds < 2:
            return f"\"above\" / \"below\": the difference exceeds {THRESHOLD_SD:g} sd; otherwise \"within noise\"."
        n = self.seeds
        return (f"\"above\" / \"below\": the {CONFIDENCE:.0%} t-interval of the mean over {n} seeds, mean ± "
                f"t·sd/√{n} with t = {t_critical(n):.2f} (Student's t, {n - 1} degree{'s' if n > 2 else ''} of "
                f"freedom), lies above / below 0; otherwise \"within noise\" (the interval contains 0).")

    def table(self) -> Table:
        seeds = any(d.per_seed for d in self.differences)
        t = Table(["difference ± sd", "reading", *(["per seed"] if seeds else [])], corner=self.row)
        for d in self.differences:
            t.add(d.label, [d.text, d.word, *([d.seeds_text] if seeds else [])])
        return t

    def other_lines(self) -> list[str]:
        """One line per Gen-X − X: its paired difference in the rows other than the block's own."""
        labels = list(dict.fromkeys(d.label for d in self.other_rows))
        return [f"{label} in the other rows: " + "; ".join(
            f"{d.row} {d.text}" + (f" (per seed {d.seeds_text})" if d.per_seed else "") + f", {d.word}"
            for d in self.other_rows if d.label == label) + "." for label in labels]

    def paragraphs(self) -> list[str]:
        """The sentences under the table: the other rows' lines, then the hints."""
        return [*self.other_lines(), *self.hints]

    def text(self) -> str:
        wrap = partial(textwrap.fill, width=TEXT_WIDTH, break_on_hyphens=False)
        return "\n".join([wrap("How to read it: " + self.intro()), self.table().text(),
                          *map(wrap, self.paragraphs())])

    def markdown(self) -> str:
        return "\n\n".join([self.intro(), self.table().markdown().rstrip("\n"), *self.paragraphs()]) + "\n"

    def html(self) -> str:
        return "\n".join([f"<p>{html.escape(self.intro())}</p>", self.table().html(),
                          *(f"<p>{html.escape(h)}</p>" for h in self.paragraphs())])


def _pairs(method: str) -> list[tuple[str, str, str, str, str]]:
    """(kind, a, b, label of a, label of b) of the four comparisons of ``method``, as column names."""
    base, pixel, gen = variants(method)
    return [(RANDOM, base.name, RANDOM, base.label, BASELINE_LABEL[RANDOM]),
            (PIXELS, base.name, PIXELS, base.label, BASELINE_LABEL[PIXELS]),
            ("pixel", pixel.name, base.name, pixel.label, base.label),
            ("gen", gen.name, base.name, gen.label, base.label)]


def _row_to_read(keys: set[str]) -> tuple[str, str] | None:
    """(row name, how the block names it): 20-NN when present, else the largest k."""
    ks = sorted(int(k.split("-")[0]) for k in keys if k.endswith("-NN"))
    if not ks:
        return None
    if PREFERRED_K in ks:
        return f"{PREFERRED_K}-NN", f"the {PREFERRED_K}-NN row"
    return f"{ks[-1]}-NN", f"the {ks[-1]}-NN row (the largest k present; no {PREFERRED_K}-NN)"


def _distillation(method: str) -> bool:
    from gensis.ssl.methods import METHODS, method_class

    return method in METHODS and method_class(method).target == "distillation"


def _names(differences: list[Difference]) -> str:
    names = [DISPLAY.get(d.method, d.method) for d in differences]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def _hints(differences: list[Difference], seeds: int = 1) -> list[str]:
    """One line when a distillation method is not above the random-init ViT (or, noise unknown, not higher), in
    the words of its verdict: "scored below" only when it is "below"; "within noise" says no more than that the
    gain was not shown with this many seeds (and how to tell: more seeds, a longer budget)."""
    stuck = [d for d in differences if d.kind == RANDOM and _distillation(d.method)
             and (d.word in ("within noise", "below") or (d.sd is None and d.value <= 0))]
    if not stuck:
        return []
    clauses: list[str] = []
    for group in ([d for d in stuck if d.word == "below"], [d for d in stuck if d.word == "within noise"],
                  [d for d in stuck if d.sd is None]):
        if not group:
            continue
        baseline = "it" if clauses else "a random-init ViT"
        numbers = "; ".join(f"{d.label} {d.text}, {d.word}" for d in group)
        if group[0].word == "below":
            clauses.append(f"{_names(group)} scored below {baseline} here ({numbers})")
        elif group[0].word == "within noise":
            were = "was" if len(group) == 1 else "were"
            clauses.append(f"{_names(group)} {were} not shown to beat {baseline} with {seeds} "
                           f"seed{'s' if seeds > 1 else ''} ({numbers})")
        else:
            clauses.append(f"{_names(group)} scored no higher than {baseline} here ({numbers})")
    unsure = any(d.word != "below" for d in stuck)
    tell = ("more seeds (--seeds, e.g. 0,1,2,3,4) or a longer budget (e.g. pretrain.optim.epochs=N) would tell; "
            if unsure else "")
    return ["; ".join(clauses) + f": {tell}at a few minutes of CPU training, on colour images especially, the "
            f"distillation methods may need longer budgets; --methods simclr learns at the `demo` preset's budget on "
            f"colour images (README, \"When does it help\")."]


def _assemble(row: tuple[str, str], noise: str, differences: list[Difference],
              other_rows: list[Difference] | None = None, seeds: int = 1) -> Reading | None:
    if not differences:
        return None
    return Reading(row[0], row[1], noise, differences, _hints(differences, seeds), other_rows or [], seeds)


def read_results(rows: dict[str, Any], methods: tuple[str, ...] | None = None) -> Reading | None:
    """The block for one seed's evaluation rows (``results.json``: column name -> row); None when no
    comparison has both its cells. Scores are taken as the table prints them (one decimal), so every
    difference can be checked against the table by hand."""
    scores = {n: metrics(r) for n, r in rows.items()}
    row = _row_to_read({k for m in scores.values() for k in m})
    if row is None:
        return None
    k = row[0]
    out, sizes = [], set()
    for m in methods or methods_in(rows):
        for kind, a, b, la, lb in _pairs(m):
            if k not in scores.get(a, {}) or k not in scores.get(b, {}):
                continue  # a column whose stage did not run (or has no such k)
            pa, pb = float(score_text(scores[a][k])), float(score_text(scores[b][k]))
            na, nb = n_test_images(rows[a]), n_test_images(rows[b])
            sd = binomial_sd(pa, pb, na, nb) if na and nb else None
            sizes |= {n for n in (na, nb) if n}
            out.append(Difference(m, kind, f"{la} − {lb}", pa - pb, sd))
    n = " / ".join(f"{s:,}" for s in sorted(sizes)) or "unknown"
    noise = f"the binomial sd (one seed) of a difference of two scores on the same n = {n} test images, {FORMULA}"
    return _assemble(row, noise, out)


def read_seeds(summary: dict[str, Any], methods: tuple[str, ...] | None = None) -> Reading | None:
    """The block for a ``--seeds`` summary (``gensis.pipeline.seeds.summarize_seeds``): mean ± sample std over
    seeds of each paired difference, and its value per seed; with one seed, the one-seed binomial sd. Over
    seeds, Gen-X − X of every other row both columns have (``Reading.other_rows``)."""
    from gensis.pipeline.seeds import paired_difference

    rows = summary["methods"]
    seeds = summary["seeds"]
    row = _row_to_read({k for r in rows.values() for k in r["metrics"]})
    if row is None:
        return None
    k = row[0]
    out, others = [], []
    for m in methods or methods_in(rows):
        for kind, a, b, la, lb in _pairs(m):
            if a not in rows or b not in rows or k not in rows[a]["metrics"] or k not in rows[b]["metrics"]:
                continue
            paired = paired_difference(rows, a, b)
            d = paired[k]
            if len(seeds) > 1:
                sd: float | None = d["std"]
                others += [Difference(m, kind, f"{la} − {lb}", o["mean"], o["std"], r, tuple(o["values"]))
                           for r, o in paired.items() if r != k and kind == "gen"]
            else:
                na, nb = rows[a].get("test_size"), rows[b].get("test_size")
                sd = binomial_sd(rows[a]["metrics"][k]["mean"], rows[b]["metrics"][k]["mean"], na, nb) \
                    if na and nb else None
            out.append(Difference(m, kind, f"{la} − {lb}", d["mean"], sd,
                                  per_seed=tuple(d["values"]) if len(seeds) > 1 else ()))
    noise = (f"the sample std over {len(seeds)} seeds {seeds} of the difference taken seed by seed (paired: same "
             f"seed, same data order and initialisation)") if len(seeds) > 1 else \
        f"the binomial sd (one seed) of a difference of two scores on the same test images, {FORMULA}"
    return _assemble(row, noise, out, others, len(seeds))
