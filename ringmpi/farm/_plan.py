"""Planning a farm: which ranks compute, and how tasks are cut into chunks.

Pure functions, apart from :func:`node_cores` and :func:`rank_facts`, which ask the node's ranks,
and :func:`plan_ranks`, which reads ``RINGMPI_CORES``.
"""

from __future__ import annotations

import math
import socket
from collections.abc import Sequence

from ..base import config
from ..base.errors import RingmpiError
from ..base.limits import usable_cpus
from ..base.memory import held


def make_chunks(
    n: int,
    workers: int,
    chunksize: int | None = None,
    costs: Sequence[float] | None = None,
) -> list[list[int]]:
    """Split task indices ``0..n-1`` into chunks to hand out.

    With ``costs``, tasks go largest first and chunk sizes shrink as the work
    left shrinks (guided scheduling), so the last chunks are small and the
    workers finish together. Without, chunks hold ``chunksize`` tasks, by
    default ``ceil(n / (4 * workers))`` as ``multiprocessing.Pool.map``.

    Args:
        n: Number of tasks.
        workers: Number of ranks computing.
        chunksize: Tasks per chunk; overrides the cost-guided sizes.
        costs: Relative cost of each task.

    Returns:
        Chunks of task indices, in the order to hand them out.
    """
    workers = max(1, workers)
    order = list(range(n))
    if costs is not None:
        order.sort(key=lambda i: -costs[i])
    if chunksize is None and costs is None:
        chunksize = max(1, math.ceil(n / (4 * workers)))
    if chunksize is not None:
        return [order[i : i + chunksize] for i in range(0, n, chunksize)]
    assert costs is not None
    total = float(sum(costs[i] for i in order))
    floor = total / (64 * workers)
    remaining = total
    chunks: list[list[int]] = []
    chunk: list[int] = []
    chunk_cost = 0.0
    target = max(remaining / (3 * workers), floor)
    for i in order:
        chunk.append(i)
        chunk_cost += costs[i]
        if chunk_cost >= target:
            chunks.append(chunk)
            remaining -= chunk_cost
            chunk, chunk_cost = [], 0.0
            target = max(remaining / (3 * workers), floor)
    if chunk:
        chunks.append(chunk)
    return chunks


def balance(n: int, bins: int, costs: Sequence[float] | None = None) -> list[list[int]]:
    """Split task indices into ``bins`` lists of about equal cost (for static).

    Largest task first into the least loaded bin; without costs, round robin.
    """
    bins = max(1, bins)
    if costs is None:
        return [list(range(b, n, bins)) for b in range(bins)]
    loads = [0.0] * bins
    out: list[list[int]] = [[] for _ in range(bins)]
    for i in sorted(range(n), key=lambda i: -costs[i]):
        b = min(range(bins), key=loads.__getitem__)
        out[b].append(i)
        loads[b] += costs[i]
    return out


def plan_workers(
    hosts: Sequence[str], cores: Sequence[int], root: int
) -> tuple[list[int], list[int], bool]:
    """Choose which ranks compute, given each rank's host and that host's cores.

    On each host at most as many ranks compute as the host has cores. The
    root only hands out tasks and sleeps while it waits, so it takes no core,
    unless its host has a core that no worker uses: then it computes too.

    Args:
        hosts: Host name of each rank.
        cores: Cores of each rank's host.
        root: The root rank.

    Returns:
        ``(active, idle, root_computes)``: worker ranks that compute, worker
        ranks that stay idle, and whether the root computes.
    """
    per_host: dict[str, list[int]] = {}
    for rank, host in enumerate(hosts):
        if rank != root:
            per_host.setdefault(host, []).append(rank)
    active: list[int] = []
    idle: list[int] = []
    for ranks in per_host.values():
        slots = cores[ranks[0]]
        active += ranks[:slots]
        idle += ranks[slots:]
    root_computes = len(per_host.get(hosts[root], [])) < cores[root]
    # Interleave hosts so that the first chunks spread over the nodes.
    active.sort(key=lambda r: (per_host[hosts[r]].index(r), r))
    return active, sorted(idle), root_computes


def node_cores(comm) -> int:
    """Cores of this rank's node: the union of its ranks' CPU affinities."""
    from mpi4py import MPI

    mine = usable_cpus()
    node = comm.Split_type(MPI.COMM_TYPE_SHARED)
    try:
        cpus = set().union(*node.allgather(mine))
    finally:
        node.Free()
    return max(1, len(cpus))


#: What each rank tells the root as a farm starts: host, cores of its node,
#: private memory it holds (None where unknown).
Facts = tuple[str, int, "int | None"]


def rank_facts(comm) -> Facts:
    """This rank's :data:`Facts`; collective over ``comm`` (its node's cores)."""
    return socket.gethostname(), node_cores(comm), held()


def computing(layout: Sequence[Facts], root: int = 0) -> list[tuple[int, int | None]]:
    """``(rank, bytes held)`` of the ranks that may compute: all but the root,
    or the root when it is alone."""
    return [
        (rank, facts[2]) for rank, facts in enumerate(layout) if rank != root or len(layout) == 1
    ]


def plan_ranks(
    layout: Sequence[Facts], cores: int | None, root: int, memory_limit: int | None
) -> tuple[list[str], list[int], list[int], bool]:
    """Which ranks compute, from what each told the root as the farm started.

    Args:
        layout: Each rank's :data:`Facts`.
        cores: Cores per node asked for (None: ``RINGMPI_CORES``, else detected).
        root: The root's rank.
        memory_limit: The farm's memory limit, if any: the root then computes
            only when no other rank does (its limit would bind the results it
            holds).

    Returns:
        ``(hosts, active, idle, root_computes)``.

    Raises:
        RingmpiError: ``RINGMPI_CORES`` is not a number of cores.
    """
    hosts = [host for host, *_ in layout]
    try:
        override = cores or config.cores()
    except ValueError as exc:
        raise RingmpiError(str(exc)) from None
    node_cores = [override or node for _, node, *_ in layout]
    active, idle, root_computes = plan_workers(hosts, node_cores, root)
    root_computes = (root_computes and memory_limit is None) or not active
    return hosts, active, idle, root_computes
