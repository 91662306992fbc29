"""Functions the pool tests run both in ``FarmPool`` and in ``multiprocessing.Pool``."""

from __future__ import annotations

import numpy as np

#: Method name -> (function name, arguments) for both pools.
CALLS = {
    "map": ("square", (list(range(-50, 50)),)),
    "map_chunk7": ("square", (list(range(100)), 7)),
    "map_empty": ("square", ([],)),
    "starmap": ("power", ([(i, i % 4) for i in range(30)],)),
    "imap": ("square", (list(range(25)),)),
    "imap_unordered": ("square", (list(range(25)),)),
    "apply": ("power", ((3, 4),)),
    "map_async": ("square", (list(range(40)),)),
    "starmap_async": ("power", ([(2, i) for i in range(20)],)),
    "apply_async": ("power", ((2, 16),)),
}


def square(x):
    return x * x


def power(x, y):
    return x**y


def run_calls(pool) -> dict[str, object]:
    """Every method of ``CALLS`` on ``pool``; results as lists (unordered ones sorted)."""
    out: dict[str, object] = {}
    for name, (fn, args) in CALLS.items():
        method = name.split("_chunk")[0].replace("_empty", "")
        value = getattr(pool, method)(globals()[fn], *args)
        if method.endswith("_async"):
            value = value.get(timeout=60)
        if method in ("imap", "imap_unordered"):
            value = list(value)
        if method == "imap_unordered":
            value = sorted(value)
        out[name] = value
    return out


def log_prob(theta):
    """A Gaussian log-probability that takes a little time."""
    x = np.asarray(theta)
    for _ in range(20):
        np.sum(np.sin(x) ** 2)
    return -0.5 * float(np.sum(x**2 / np.arange(1.0, len(x) + 1)))


def emcee_chain(pool, nwalkers=16, ndim=4, steps=30, seed=7):
    import emcee

    rng = np.random.default_rng(seed)
    p0 = rng.normal(size=(nwalkers, ndim))
    np.random.seed(seed)
    sampler = emcee.EnsembleSampler(nwalkers, ndim, log_prob, pool=pool)
    sampler.run_mcmc(p0, steps, progress=False)
    return sampler.get_chain(), sampler.get_log_prob()
