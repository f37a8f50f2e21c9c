"""Our fractional ridge (fmrirecon.fracridge) against the published fracridge package.

The published package (Rokem & Kay 2020; ``pip install fracridge``, 2.0) is not a
dependency: this script compares it by hand. Usage (with the package anywhere on the
path, e.g. ``pip install --target /tmp/fracridge_pkg --no-deps fracridge==2.0``)::

    PYTHONPATH=src:/tmp/fracridge_pkg .venv/bin/python benchmarks/fracridge_published.py

For each problem size it prints both wall times, the largest coefficient difference,
how far each lands from the requested fractions of the OLS norm, and the relative
difference of the alphas.
"""

from __future__ import annotations

import time

import numpy as np


def main():
    import fracridge as published

    from fmrirecon.fracridge import DEFAULT_FRACTIONS, fracridge

    rng = np.random.default_rng(0)
    fractions = np.sort(np.array(DEFAULT_FRACTIONS))  # the package needs them ascending
    for n, p, t in [(60, 12, 5), (300, 80, 2000), (1200, 200, 5000)]:
        X = rng.normal(size=(n, p))
        X[:, 1] = X[:, 0] + 0.01 * rng.normal(size=n)  # ill-conditioned, where ridge matters
        Y = rng.normal(size=(n, t))
        t0 = time.perf_counter()
        ours, a_ours = fracridge(X, Y, fractions)
        t_ours = time.perf_counter() - t0
        t0 = time.perf_counter()
        theirs, a_theirs = published.fracridge(X, Y, fractions, jit=False)
        t_theirs = time.perf_counter() - t0
        theirs = np.moveaxis(theirs, 1, 0)  # (features, fractions, targets) -> ours
        ols = np.linalg.lstsq(X, Y, rcond=None)[0]
        norm = np.linalg.norm(ols, axis=0)
        err = {name: np.abs(np.linalg.norm(c, axis=1) / norm - fractions[:, None]).max()
               for name, c in (("ours", ours), ("published", theirs))}
        print(f"{n} x {p}, {t} targets: ours {t_ours:.3f} s, published {t_theirs:.3f} s; "
              f"max |coef difference| {np.abs(ours - theirs).max():.2e} (coefs up to "
              f"{np.abs(ours).max():.2e}); fraction reached within {err['ours']:.1e} (ours), "
              f"{err['published']:.1e} (published); alphas differ by up to "
              f"{np.nanmax(np.abs(a_ours - a_theirs) / np.maximum(a_ours, 1e-12)):.1%}")


if __name__ == "__main__":
    main()
