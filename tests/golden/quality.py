"""Golden values for src/domain/agreement.rs, computed once by independent references:
scipy.stats.kendalltau (τ-b), scipy.stats.friedmanchisquare (tie-corrected; Kendall's
W = χ²_F / (m (n − 1))), scipy.stats.binomtest, the `krippendorff` package and statsmodels'
fleiss_kappa. Run with numpy, scipy, krippendorff and statsmodels installed:

    python3 tests/golden/quality.py > tests/golden/quality.json
"""
import json

import krippendorff
import numpy as np
from scipy import stats
from statsmodels.stats.inter_rater import fleiss_kappa

TAU = [
    ([1, 2, 3, 4, 5], [2, 1, 4, 3, 5]),
    ([1, 1, 2, 3, 3, 4], [1, 2, 2, 3, 4, 4]),
    ([1.5, 1.5, 3, 4, 5, 6, 7, 8], [8, 7, 6, 5, 4, 3, 1.5, 1.5]),
    ([3, 1, 2, 2, 5, 4, 4, 1, 6], [2, 1, 3, 3, 4, 4, 5, 2, 6]),
]

# raters x objects, fractional ranks with ties
W = [
    [[1, 2, 3, 4], [2, 1, 3, 4], [1, 3, 2, 4]],
    [[1.5, 1.5, 3, 4, 5], [1, 2, 3.5, 3.5, 5], [2, 1, 3, 5, 4], [1, 2, 3, 4, 5]],
    [[1, 2, 3], [3, 2, 1]],
    [[2, 2, 2, 4.5, 4.5, 6], [1, 3, 3, 3, 5, 6], [1, 2, 3, 4, 5, 6]],
]

NAN = float("nan")
# coders x units; NaN = missing
ALPHA = [
    [[1, 2, 3, 3, 2, 1, 4, 1, 2, NAN], [1, 2, 3, 3, 2, 2, 4, 1, 2, 5], [NAN, 3, 3, 3, 2, 3, 4, 2, 2, 5], [1, 2, 3, 3, 2, 4, 4, 1, 2, 5]],
    [[1.5, 1.5, 3, 1, 2, 3, 2.5, 2.5, 1], [1, 2, 3, 1, 3, 2, 1, 2.5, 2.5], [2, 1, 3, NAN, 2, 3, 1, 2, 3]],
    [[0, 1, 2, 0, 0, 1, 1, 0], [0, 1, 2, 1, 0, 1, 0, 0], [0, 0, 2, 1, 0, 1, 1, NAN]],
]

# subjects x categories (first preferred, second preferred, tie), equal raters per subject
FLEISS = [
    [[3, 0, 0], [0, 3, 0], [2, 1, 0], [1, 1, 1], [3, 0, 0], [0, 2, 1], [2, 0, 1]],
    [[4, 1, 0], [2, 2, 1], [5, 0, 0], [0, 5, 0], [1, 3, 1], [3, 2, 0]],
]

BINOM = [(12, 40, 0.125), (40, 40, 0.125), (3, 20, 0.5), (55, 200, 0.25)]


def kendall_w(m):
    raters, objects = len(m), len(m[0])
    chi2 = stats.friedmanchisquare(*[[row[o] for row in m] for o in range(objects)]).statistic
    return chi2 / (raters * (objects - 1))


out = {
    "tau_b": [{"x": x, "y": y, "value": stats.kendalltau(x, y).statistic} for x, y in TAU],
    "kendall_w": [{"ratings": m, "value": kendall_w(m)} for m in W],
    "alpha": [
        {
            "data": [[None if np.isnan(v) else v for v in row] for row in d],
            "ordinal": krippendorff.alpha(reliability_data=np.array(d, dtype=float), level_of_measurement="ordinal"),
            "nominal": krippendorff.alpha(reliability_data=np.array(d, dtype=float), level_of_measurement="nominal"),
        }
        for d in ALPHA
    ],
    "fleiss": [{"table": t, "value": fleiss_kappa(np.array(t), method="fleiss")} for t in FLEISS],
    "binomial_upper": [{"x": x, "n": n, "p": p, "value": stats.binomtest(x, n, p, alternative="greater").pvalue} for x, n, p in BINOM],
}
print(json.dumps(out, indent=1))
