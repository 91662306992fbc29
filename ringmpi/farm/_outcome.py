"""What a farm hands back: tags and modes, task errors, farm errors and stats."""

from __future__ import annotations

import enum
import pickle
import re
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..base.errors import RingmpiError, format_exception

#: One task's outcome as it travels: ``(index, value, error)``.
Outcome = tuple[int, Any, "TaskError | None"]

#: What pickling or unpickling a task or a result may raise and the farm
#: survives: anything an object's ``__reduce__``/``__setstate__`` raises,
#: ``sys.exit`` included; a Ctrl-C still stops the run.
PICKLING_ERRORS: tuple[type[BaseException], ...] = (Exception, SystemExit, GeneratorExit)
#: What unpickling a message the farm received may raise and the farm
#: survives: anything, ``KeyboardInterrupt`` included, for while a farm runs
#: its signal handler takes Ctrl-C, so only the user's ``__setstate__`` or
#: ``__reduce__`` can raise it there.
UNPICKLING_ERRORS: tuple[type[BaseException], ...] = (BaseException,)


class Batch(list):
    """A chunk's outcomes, with where and when they were computed.

    A list of ``(index, value, error)`` that also carries ``rank``, ``host``,
    ``start`` (wall-clock time the first task began) and ``ends`` (when each
    task ended; tasks ran back to back), for the journal and the trace. A
    worker's report also says which task it is running now (``running``) and
    which tasks it gave back unstarted (``returned``, the answer to
    ``Tag.TAKE``). On the root, ``retried`` holds the indices that failed and
    will run again.
    """

    rank: int | None = None
    host: str | None = None
    start: float | None = None
    ends: list[float] | None = None
    running: int | None = None
    returned: Sequence[int] = ()
    #: the answer to an empty ``Tag.TAKE``: every outcome before it was reported
    pong: bool = False
    #: the answer to one ``Tag.TAKE`` (each gets exactly one): the root waits
    #: for every answer before the farm ends, so that no message is left
    #: unread on a communicator it frees (MPICH hands a freed communicator's
    #: context to the next one, with what was left unread on it)
    answer: bool = False
    #: why the worker could not unpickle the chunk it received as number ``seq``
    #: (counted from 0): ``(seq, summary, traceback)``
    unreadable: tuple[int, str, str] | None = None
    retried: frozenset[int] = frozenset()

    @classmethod
    def like(cls, outcomes: list[Outcome], items: list[Outcome] | None = None) -> Batch:
        """Return a ``Batch`` of ``items`` (default ``outcomes``) with the
        metadata of ``outcomes``."""
        batch = cls(outcomes if items is None else items)
        batch.__dict__.update(getattr(outcomes, "__dict__", {}))
        return batch


class Tag(enum.IntEnum):
    """Message tags of the farm protocol."""

    SETUP = 101
    TASK = 102
    RESULT = 103
    START = 104
    CLOCK = 105
    STOP = 106
    #: ``R -> W``: task indices to give back if they have not started.
    TAKE = 107
    #: The parts of a large message, after its header (see ``_wire``).
    BULK = 121
    #: ``R -> W``: the farm's shared data (see ``_shared``).
    SHARED = 122
    #: On the caller's communicator, while the farm starts: high, to keep
    #: clear of the caller's own tags.
    JOIN = 32701
    GO = 32702


class Schedule(str, enum.Enum):
    """How tasks reach the workers."""

    DYNAMIC = "dynamic"
    STATIC = "static"


class Errors(str, enum.Enum):
    """What the farm does when a task fails."""

    RAISE = "raise"
    COLLECT = "collect"


class RemoteTraceback(Exception):
    """The traceback of an exception raised on another rank, as text."""

    def __init__(self, text: str):
        super().__init__(text)
        self.text = text

    @property
    def tb(self) -> str:
        """The traceback text (the name ``concurrent.futures`` gives it)."""
        return self.text

    def __str__(self) -> str:
        return self.text


class TaskError(Exception):
    """A task raised on a worker; carries the remote traceback.

    Attributes:
        index: Position of the task in the input.
        task: ``repr`` of the task.
        rank: The rank that ran it.
        host: The host that rank ran on.
        summary: ``Type: message`` of the exception.
        remote_traceback: The traceback text from the worker.
        exception: The original exception when it could be pickled (else
            None), with the remote traceback as its ``__cause__``.
        unsendable: For a result that could not be pickled on its way back,
            its ``repr`` (cut short); else None. ``exception`` is then why.
    """

    def __init__(self, index: int, task: str, rank: int, host: str, summary: str, remote_tb: str):
        super().__init__(index, task, rank, host, summary, remote_tb)
        self.index = index
        self.task = task
        self.rank = rank
        self.host = host
        self.summary = summary
        self.remote_traceback = remote_tb
        self.exception: BaseException | None = None
        self.unsendable: str | None = None

    def __setstate__(self, state: dict[str, Any] | None) -> None:
        self.unsendable = None  # absent from what older versions sent
        self.__dict__.update(state or {})
        if self.exception is not None and self.exception.__cause__ is None:
            self.exception.__cause__ = RemoteTraceback(self.remote_traceback)

    def __str__(self) -> str:
        where = f"rank {self.rank}@{self.host}"
        return f"task {self.index} ({self.task}) failed on {where}: {self.summary}"


class InitializerError(RuntimeError):
    """A rank's initializer failed: every task of that rank fails with this
    (an executor or a pool then breaks, as ``concurrent.futures`` does)."""


class FarmError(RingmpiError):
    """A task failed and the farm stopped; raised on the root.

    The error raised is also an instance of the failed task's exception type
    when that type allows it, so ``except KeyError`` catches a task's
    ``KeyError``; the original exception is its ``__cause__``.

    Attributes:
        errors: The task errors that arrived before the farm stopped.
    """

    def __init__(self, errors: list[TaskError]):
        first = errors[0]
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        self.message = f"{first}{more}"
        super().__init__(self.message)
        self.errors = errors

    def __str__(self) -> str:
        return self.message

    @classmethod
    def of(cls, errors: list[TaskError]) -> FarmError:
        """Return the ``FarmError`` to raise for ``errors``, typed as the first."""
        original = errors[0].exception
        kind: type[FarmError] = cls
        if isinstance(original, Exception) and not isinstance(original, RingmpiError):
            kind = _typed(cls, type(original))
        error = kind(errors)
        error.__cause__ = original
        return error


_TYPED: dict[tuple[type, type], type] = {}


def _typed(base: type[FarmError], other: type[Exception]) -> type[FarmError]:
    """A subclass of both ``base`` and ``other``, or ``base`` if none can be."""
    key = (base, other)
    if key not in _TYPED:
        try:
            _TYPED[key] = type(f"{base.__name__}[{other.__name__}]", (base, other), {})
        except TypeError:  # incompatible layouts (e.g. OSError)
            _TYPED[key] = base
    return _TYPED[key]


class FarmStartError(RingmpiError):
    """A rank was lost before the farm began; raised on every survivor."""

    collective = True


class FarmTimeout(RingmpiError):
    """A task ran past its time limit; raised on the root.

    The worker running it cannot be interrupted: the caller should end the
    job (``launch`` aborts it).
    """


@dataclass
class TaskSpan:
    """One task as the trace saw it; times in seconds since the farm began.

    Attributes:
        index: The task's position in the input.
        rank: The rank that ran it.
        host: That rank's host.
        start: When the task began, on the root's clock.
        end: When it ended.
        chunk: Which chunk it travelled in (numbered as handed out).
        dispatched: When the root handed out that chunk.
        received: When the root had the chunk's outcomes.
    """

    index: int
    rank: int
    host: str
    start: float
    end: float
    chunk: int
    dispatched: float
    received: float


@dataclass
class WorkerStats:
    """What one rank did in the farm; ``busy`` is in seconds."""

    rank: int
    host: str
    tasks: int = 0
    busy: float = 0.0


@dataclass
class LostWorker:
    """A worker that died during a fault-tolerant run, and what it had."""

    rank: int
    host: str
    requeued: list[int]


@dataclass
class FarmStats:
    """What the farm did, known on the root after the run."""

    elapsed: float = 0.0
    workers: list[WorkerStats] = field(default_factory=list)
    idle_ranks: list[int] = field(default_factory=list)
    root_computes: bool = False
    chunks: int = 0
    errors: list[TaskError] = field(default_factory=list)
    lost: list[LostWorker] = field(default_factory=list)
    hosts: list[str] = field(default_factory=list)
    #: With ``trace=True``: one ``TaskSpan`` per task, in arrival order.
    trace: list[TaskSpan] = field(default_factory=list)

    def worker(self, rank: int) -> WorkerStats:
        """Return the stats of ``rank``, counting it as computing from now on."""
        for stats in self.workers:
            if stats.rank == rank:
                return stats
        stats = WorkerStats(rank, self.hosts[rank] if self.hosts else "?")
        self.workers.append(stats)
        return stats


#: ``running`` is True on a thread while it runs a task of a farm.
_task = threading.local()


def in_task() -> bool:
    """Return whether this thread is running a farm's task now."""
    return getattr(_task, "running", False)


def check_not_in_task(comm) -> None:
    """Refuse a farm over more than one rank started from inside a task.

    The other ranks are busy in the farm that runs the task, so its
    collectives would wait for ever.

    Raises:
        RingmpiError: This thread runs a task and ``comm`` has other ranks.
    """
    if in_task() and comm.Get_size() > 1:
        raise RingmpiError(
            f"a task cannot start a farm over {comm.Get_size()} ranks: the other ranks "
            "are running the farm that runs this task, so it would wait for ever "
            "(use MPI.COMM_SELF inside a task, or no MPI at all)"
        )


def call(fn: Callable[[Any], Any], task: Any) -> tuple[Any, BaseException | None]:
    """Run ``fn(task)`` and return ``(result, None)`` or ``(None, exc)``.

    Any exception fails the task, ``sys.exit`` and ``KeyboardInterrupt``
    included: a worker that left the farm, or a root thread that died, would
    leave results missing.
    """
    _task.running = True
    try:
        return fn(task), None
    except BaseException as exc:
        return None, exc
    finally:
        _task.running = False


def describe_error(
    exc: BaseException, index: int, task: Any, rank: int, host: str, tb: str | None = None
) -> TaskError:
    """Wrap an exception from a task as a picklable ``TaskError``."""
    if tb is None:
        tb = format_exception(exc)
    summary = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    error = TaskError(index, short_repr(task), rank, host, summary, tb)
    if _pickles(exc):
        error.exception = exc
        if exc.__cause__ is None:  # as it will be after travelling
            exc.__cause__ = RemoteTraceback(tb)
    return error


def _pickles(obj: Any) -> bool:
    try:
        pickle.loads(pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL))
    except PICKLING_ERRORS:
        return False
    return True


def unpickling_summary(exc: BaseException, what: str) -> str:
    """Say why ``what`` (``"the task"``, ``"the result"``) could not be
    unpickled here, with the fix for a function or class missing here."""
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    summary = f"{what} could not be unpickled on this rank: {text}"
    match = re.search(r"Can't get attribute '([^']+)' on <module '([^']+)'", str(exc))
    if match:
        name, module = match.groups()
        summary += (
            f"; {module}.{name} does not exist here: define {name} at module level, "
            "before the farm, executor or pool starts (not after pool.wait()), "
            "in a module every rank imports"
        )
    elif isinstance(exc, ImportError) and getattr(exc, "name", None):
        summary += f"; make the module {exc.name} importable on every rank"
    return summary


def short_repr(obj: Any, limit: int = 80) -> str:
    """Return ``repr(obj)``, cut to ``limit`` characters; an executor's call
    ``(fn, args, kwargs)`` as ``fn(arg, key=value)``."""
    text = _call_repr(obj) if type(obj) is tuple and len(obj) == 3 else None
    if text is None:
        text = repr(obj)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _call_repr(call: tuple[Any, Any, Any]) -> str | None:
    fn, args, kwargs = call
    if not (callable(fn) and type(args) is tuple and type(kwargs) is dict):
        return None
    over = getattr(fn, "applies", None)  # a pool's chunk: (fn, items)
    if over is not None and len(args) == 2 and not kwargs:
        inner, items = args
        name = getattr(inner, "__qualname__", repr(inner))
        if over == "star" and len(items) == 1:
            return f"{name}{tuple(items[0])!r}"
        if len(items) == 1:
            return f"{name}({items[0]!r})"
        return f"{name} over {items!r}"
    name = getattr(fn, "__qualname__", repr(fn))
    words = [repr(a) for a in args] + [f"{k}={v!r}" for k, v in kwargs.items()]
    return f"{name}({', '.join(words)})"


class _Sink:
    def write(self, data: Any) -> int:
        return len(data)


def _no(_buffer: Any) -> bool:
    return False


def sendable(outcome: Outcome, task: Any, rank: int, host: str) -> Outcome:
    """Return ``outcome`` of ``task``, or a ``TaskError`` in its place if it
    cannot be pickled."""
    index, value, error = outcome
    try:
        # Into a sink, buffers out-of-band: no copy of a large result.
        pickle.Pickler(_Sink(), pickle.HIGHEST_PROTOCOL, buffer_callback=_no).dump((value, error))
        return outcome
    except PICKLING_ERRORS as exc:
        what = "result" if error is None else "error"
        summary = f"the {what} could not be pickled: {type(exc).__name__}: {exc}"
        if error is not None:
            return (index, None, TaskError(index, short_repr(task), rank, host, summary, ""))
        # As concurrent.futures does, the future raises why (a TypeError, a
        # PicklingError...), and a pool says MaybeEncodingError.
        failed = TaskError(index, short_repr(task), rank, host, summary, format_exception(exc))
        failed.unsendable = short_repr(value)
        reason = exc if isinstance(exc, Exception) and _pickles(exc) else None
        failed.exception = reason or pickle.PicklingError(f"{type(exc).__name__}: {exc}")
        return (index, None, failed)


def sendable_batch(
    outcomes: list[Outcome], chunk: Sequence[tuple[int, Any]], rank: int, host: str
) -> Batch:
    """Return the outcomes of ``chunk`` (one per ``(index, task)``, in order),
    each made :func:`sendable`."""
    sent = [sendable(o, task, rank, host) for o, (_, task) in zip(outcomes, chunk)]
    return Batch.like(outcomes, sent)
