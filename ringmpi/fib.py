"""The deliberately slow recursive Fibonacci, and exact tools around it."""

from __future__ import annotations

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


def estimate_seconds(ns: list[int]) -> float:
    """Return a rough single-core time for ``fib`` of each of ``ns``."""
    return sum(calls(n) for n in ns) / CALLS_PER_SECOND
