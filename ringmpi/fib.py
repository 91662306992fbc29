"""The deliberately slow recursive Fibonacci, and exact tools around it."""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable

#: Calls of ``fib`` per second of one core, for estimates (CPython 3.11 here).
#: A call of the article's kernel costs what one of the textbook kernel
#: (``n if n < 2 else ...``) did, within 2% (best of 12, interleaved); the
#: article's kernel makes fewer calls, which ``calls`` counts.
CALLS_PER_SECOND = 4.4e7


# The article's function, verbatim (its spacing too); only the docstring is ours.
# fmt: off
def fib(n):
    """Return the n-th Fibonacci number the slow way: naive recursion.

    Base case ``n <= 2``, so ``fib(n)`` makes ``2 * fib(n) - 1`` calls; ``n``
    must be at least 1 (``fib(0)`` gives 1, not 0).
    """
    if n <= 2:
        return 1
    return fib(n-1) + fib(n-2)
# fmt: on


def fib_exact(n: int) -> int:
    """Return the n-th Fibonacci number, iteratively (exact for any n)."""
    a, b = 0, 1
    for _ in range(n):
        a, b = b, a + b
    return a


def calls(n: int) -> int:
    """Return how many calls ``fib(n)`` makes, for ``n >= 1``: ``2 * fib(n) - 1``."""
    return 2 * fib_exact(n) - 1


def split(n: int, depth: int) -> list[int]:
    """Unfold ``fib(n)`` ``depth`` levels into the sub-calls of its recursion.

    ``fib(n) = fib(n-1) + fib(n-2)``, applied ``depth`` times, gives up to
    ``2**depth`` arguments whose ``fib`` values sum to ``fib(n)`` exactly;
    branches that reach the base case ``n <= 2`` stop early. The total work is
    the same, in smaller pieces.

    Args:
        n: The argument to unfold.
        depth: Levels of the recursion tree to unfold (0 keeps ``[n]``).

    Returns:
        The sub-call arguments, largest first.
    """
    level = [n]
    for _ in range(depth):
        level = [m for k in level for m in ((k - 1, k - 2) if k > 2 else (k,))]
    return sorted(level, reverse=True)


def largest_split(n: int, depth: int) -> int:
    """Return ``max(split(n, depth))`` without building the list.

    The branch that always takes ``n - 1`` stays largest; it stops at the
    base case ``n <= 2``.
    """
    return max(n - depth, min(n, 2))


def stack_depth(n: int) -> int:
    """Return how many calls of ``fib`` are nested at the deepest point of ``fib(n)``.

    ``fib(n)`` calls ``fib(n-1)``, and so on down to ``fib(2)``: ``n - 1``
    nested calls, one frame each.
    """
    return max(n - 1, 1)


#: log10 of the golden ratio, and of sqrt(5), for Binet's formula.
_LOG10_PHI = math.log10((1 + math.sqrt(5)) / 2)
_LOG10_SQRT5 = math.log10(5) / 2
#: Up to this n, ``calls(n)`` is computed exactly; above, by Binet's formula.
_EXACT_UP_TO = 90


def log10_calls(n: int) -> float:
    """Return ``log10(calls(n))`` for any ``n >= 1``, at once and without big ints.

    Above ``n = 90`` Binet's formula, ``fib(n) = round(phi**n / sqrt(5))``, in
    logarithms (relative error below 1e-15); ``math.inf`` for an ``n`` too
    large for a float.
    """
    if n <= _EXACT_UP_TO:
        return math.log10(calls(n))
    try:
        return float(n) * _LOG10_PHI - _LOG10_SQRT5 + math.log10(2)
    except OverflowError:
        return math.inf


def log10_estimate_seconds(ns: Iterable[int]) -> float:
    """Return ``log10`` of a rough single-core time for ``fib`` of each of ``ns``.

    Summed in logarithms, so any ``n`` gives an answer at once (``math.inf``
    past a float).
    """
    logs = [log10_calls(n) for n in ns]
    top = max(logs)
    if math.isinf(top):
        return top
    total = top + math.log10(sum(10 ** (x - top) for x in logs))
    return total - math.log10(CALLS_PER_SECOND)


def estimate_seconds(ns: Iterable[int]) -> float:
    """Return a rough single-core time for ``fib`` of each of ``ns`` (``inf`` past a float)."""
    log = log10_estimate_seconds(ns)
    return 10**log if log < 300 else math.inf


@functools.lru_cache(maxsize=4096)
def split_count(n: int, depth: int) -> int:
    """Return ``len(split(n, depth))`` without building the list.

    Every branch unfolds while above the base case, so for ``n > 2 * depth``
    the count is ``2**depth``; below, the count is summed over the (small) tree.
    """
    if depth <= 0 or n <= 2:
        return 1
    if n > 2 * depth:
        return 2**depth
    return split_count(n - 1, depth - 1) + split_count(n - 2, depth - 1)
