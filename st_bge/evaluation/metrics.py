"""ranx, wrapped once: string ids, no mutation of the caller's Run, always a dict of floats.

ranx's `evaluate` returns a bare float for a single metric, requires `str` ids, and stores its results inside
the Run it was given; every caller in st-bge goes through this module instead.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager

import numpy as np
from numba.core.errors import NumbaTypeSafetyWarning
from ranx import Qrels, Run
from ranx import evaluate as ranx_evaluate


def to_qrels(qrels: Mapping[str, Mapping[str, int]], name: str | None = None) -> Qrels:
    """A ranx `Qrels` from `{query_id: {doc_id: grade}}` (ids turned into `str`)."""
    return Qrels({str(q): {str(d): int(g) for d, g in docs.items()} for q, docs in qrels.items()}, name=name)


def to_run(scores: Mapping[str, Mapping[str, float]], name: str | None = None) -> Run:
    """A ranx `Run` from `{query_id: {doc_id: score}}` (ids turned into `str`).

    A query that retrieved nothing (e.g. no word in common with any document, for a lexical run) is left out:
    ranx cannot compile an empty ranking, and every evaluation here scores a missing query as 0 (`make_comparable`).
    A run where no query retrieved anything (a sparse head that weights no token) is an empty run, which scores 0:
    ranx builds one from None, not from an empty mapping.
    """
    kept = {str(q): {str(d): float(s) for d, s in docs.items()} for q, docs in scores.items() if docs}
    return Run(kept or None, name=name)


@contextmanager
def quiet_numba() -> Iterator[None]:
    """ranx's compiled metrics cast array sizes uint64 -> int64; harmless, but numba warns on every call."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NumbaTypeSafetyWarning)
        yield


def evaluate_run(qrels: Qrels, run: Run, metrics: Sequence[str]) -> dict[str, float]:
    """Mean of each metric over the qrels' queries; a query the run misses scores 0 (ranx `make_comparable`).

    ranx's nDCG uses linear gains (Järvelin & Kekäläinen): grade 2 counts twice grade 1.
    """
    with quiet_numba():
        result = ranx_evaluate(qrels, run, list(metrics), save_results_in_run=False, make_comparable=True)
    if not isinstance(result, dict):
        result = {metrics[0]: result}
    return {metric: float(result[metric]) for metric in metrics}


def per_query_scores(qrels: Qrels, run: Run, metric: str) -> dict[str, float]:
    """`{query_id: score}` of one metric for every query of the qrels (0 where the run has none)."""
    run = to_run(run.to_dict(), name=run.name)  # a copy: ranx stores the scores in the run it is given
    with quiet_numba():
        ranx_evaluate(qrels, run, metric, save_results_in_run=True, make_comparable=True)
    return {query_id: float(run.scores[metric].get(query_id, 0.0)) for query_id in qrels.keys()}  # noqa: SIM118 (not a dict)


def fisher_randomisation_p(differences: Sequence[float], permutations: int, seed: int) -> float:
    """Two-sided p-value of Fisher's randomisation test on paired per-query differences, as ranx defines it (the
    share of random sign flips whose |mean| reaches the observed one), from a seeded numpy generator.

    Swapping a query's two scores flips the sign of its difference, so this is ranx's test (Smucker et al., CIKM
    '07): ranx seeds numba's generator and then draws inside a parallel loop, and its p-values moved by a few
    hundredths from run to run, with `threads=1` too (ranx 0.3, 10,000 permutations). Here the same inputs
    give the same p-value.
    """
    differences = np.asarray(differences, dtype=np.float64)
    observed = abs(differences.mean())
    rng = np.random.default_rng(seed)
    reached = 0
    for start in range(0, permutations, 1024):  # bounded memory: 1024 x queries signs at a time
        signs = rng.choice((-1.0, 1.0), size=(min(1024, permutations - start), len(differences)))
        reached += int((np.abs((signs * differences).mean(axis=1)) >= observed).sum())
    return reached / permutations
