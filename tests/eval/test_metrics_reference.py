"""revisitop compute_map and the DAVIS toolkit's J, F and statistics equal the original code's outputs
(tests/reference/reference-vectors.json, or $GENSIS_REFERENCE_VECTORS)."""

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parents[1]))
from reference_vectors import load_reference  # noqa: E402

from gensis.eval.metrics.retrieval import compute_map, revisited_gnd  # noqa: E402
from gensis.eval.metrics.segmentation import db_eval_boundary, db_eval_iou, db_statistics  # noqa: E402


def _nan(x):
    return np.array([np.nan if v is None else v for v in np.ravel(x)], dtype=np.float64).reshape(np.shape(x))


def _nan2(rows):
    return np.array([[np.nan if v is None else v for v in r] for r in rows], dtype=np.float64)


@pytest.mark.parametrize("protocol", ["easy", "medium", "hard"])
def test_revisitop_compute_map(protocol):
    ref = load_reference()["revisitop_compute_map"]
    inp, out = ref["inputs"], ref["outputs"][protocol]
    gnd = revisited_gnd(inp["gnd"], protocol)
    for key in ("ok", "junk"):  # the lists named by the reference ("easy", "junk+hard", ...)
        want = [sorted(sum((list(g[n]) for n in out[key]), [])) for g in inp["gnd"]]
        assert [sorted(int(i) for i in g[key]) for g in gnd] == want
    m, aps, mpk, prs = compute_map(np.array(inp["ranks"]), gnd, inp["kappas"])
    np.testing.assert_allclose(m, out["mAP"], rtol=1e-10)
    np.testing.assert_allclose(aps, _nan(out["aps"]), rtol=1e-10)  # NaN where a query has no positives
    np.testing.assert_allclose(mpk, out["mP_at_k"], rtol=1e-10)
    np.testing.assert_allclose(prs, _nan2(out["P_at_k_per_query"]), rtol=1e-10)


def test_reference_has_queries_without_positives():
    out = load_reference()["revisitop_compute_map"]["outputs"]
    assert any(a is None for a in out["hard"]["aps"]) and any(a is None for a in out["easy"]["aps"])


def test_davis_pairs():
    pairs = load_reference()["davis"]["pairs"]
    names = set()
    for p in pairs:
        a = np.array(p["inputs"]["annotation"], np.uint8)
        s = np.array(p["inputs"]["segmentation"], np.uint8)
        v = p["inputs"]["void_pixels"]
        v = None if v is None else np.array(v, np.uint8)
        np.testing.assert_allclose(db_eval_iou(a, s, v), p["outputs"]["J"], rtol=1e-10, err_msg=p["name"])
        np.testing.assert_allclose(db_eval_boundary(a, s, v, p["bound_th"]), p["outputs"]["F"], rtol=1e-10,
                                   err_msg=p["name"])
        names.add(p["name"])
    assert len(names) >= 6


def test_davis_sequence_and_statistics():
    seq = load_reference()["davis"]["sequence"]
    a = np.array(seq["inputs"]["annotation"], np.uint8)
    s = np.array(seq["inputs"]["segmentation"], np.uint8)
    th = seq["inputs"]["bound_th"]
    out = seq["outputs"]
    J, F = db_eval_iou(a, s), db_eval_boundary(a, s, None, th)
    np.testing.assert_allclose(J, out["J_per_frame"], rtol=1e-10)
    np.testing.assert_allclose(F, out["F_per_frame"], rtol=1e-10)
    np.testing.assert_allclose(db_statistics(J), out["J_stats_M_R_D"], rtol=1e-10)
    np.testing.assert_allclose(db_statistics(F), out["F_stats_M_R_D"], rtol=1e-10)
    np.testing.assert_allclose((db_statistics(J)[0] + db_statistics(F)[0]) / 2, out["JF_mean"], rtol=1e-10)
