"""Every ``RINGMPI_*`` environment variable, read in one place."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping

from .errors import quoted

#: ``1``: run even when the launcher and MPI disagree on the number of ranks.
SKIP_LAUNCHER_CHECK = "RINGMPI_SKIP_LAUNCHER_CHECK"
#: Cores available to each node's workers, overriding detection (default: detected).
CORES = "RINGMPI_CORES"
#: Longest sleep, in seconds, between polls while a rank waits for a message
#: (default 0.001).
POLL_MAX_SLEEP = "RINGMPI_POLL_MAX_SLEEP"

#: Seconds every rank of a farm may take to join it (default 300; 0: for ever).
JOIN_TIMEOUT = "RINGMPI_JOIN_TIMEOUT"

#: Seconds a rank waits for MPI to start before giving up (default 60; 0: for ever).
INIT_TIMEOUT = "RINGMPI_INIT_TIMEOUT"

#: The longest wait one may ask for: a week.
MAX_WAIT = 7 * 86400.0

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"", "0", "false", "no", "off"}


def _env(environ: Mapping[str, str] | None) -> Mapping[str, str]:
    return os.environ if environ is None else environ


def skip_launcher_check(environ: Mapping[str, str] | None = None) -> bool:
    """Return whether the launcher check is switched off.

    Raises:
        ValueError: The variable is set to something that is not yes or no.
    """
    value = _env(environ).get(SKIP_LAUNCHER_CHECK, "")
    if value.strip().lower() in _TRUE:
        return True
    if value.strip().lower() in _FALSE:
        return False
    raise ValueError(
        f"{SKIP_LAUNCHER_CHECK} must be 1 or 0 (or yes/no, true/false), not {quoted(value)}"
    )


def cores(environ: Mapping[str, str] | None = None) -> int | None:
    """Return the cores per node set by the user, or None to detect them.

    Raises:
        ValueError: The variable is set but is not a positive integer.
    """
    value = _env(environ).get(CORES, "").strip()
    if not value:
        return None
    if not value.isdigit() or len(value) > 9 or int(value) < 1:
        raise ValueError(f"{CORES} must be a positive integer, not {quoted(value)}")
    return int(value)


def poll_max_sleep(environ: Mapping[str, str] | None = None) -> float:
    """Return the longest sleep between polls, in seconds (default 1 ms)."""
    value = _env(environ).get(POLL_MAX_SLEEP, "").strip()
    if not value:
        return 1e-3
    try:
        seconds = float(value)
    except ValueError:
        raise ValueError(
            f"{POLL_MAX_SLEEP} must be a number of seconds, not {quoted(value)}"
        ) from None
    if not 0 <= seconds <= 1:
        raise ValueError(f"{POLL_MAX_SLEEP} must be between 0 and 1 second, not {quoted(value)}")
    return seconds


def ulfm_enabled(environ: Mapping[str, str] | None = None) -> bool:
    """Return whether Open MPI runs this job with ULFM fault tolerance.

    ``mpiexec --with-ft ulfm`` sets ``OMPI_MCA_mpi_ft_enable=1`` for the ranks.
    """
    return _env(environ).get("OMPI_MCA_mpi_ft_enable", "").strip().lower() in _TRUE


def init_timeout(environ: Mapping[str, str] | None = None) -> float:
    """Return how long a rank may wait for MPI to start (default 60 s; 0: for ever).

    Raises:
        ValueError: The variable is set but is not a number of seconds from 0
            to a week.
    """
    return _seconds(INIT_TIMEOUT, _env(environ).get(INIT_TIMEOUT, "").strip(), 60.0)


def join_timeout(environ: Mapping[str, str] | None = None) -> float | None:
    """Return how long a farm waits for all its ranks (default 300 s; None: for ever).

    Raises:
        ValueError: The variable is set but is not a number of seconds from 0
            to a week.
    """
    value = _env(environ).get(JOIN_TIMEOUT, "").strip()
    seconds = _seconds(JOIN_TIMEOUT, value, 300.0)
    return seconds or None


def _seconds(name: str, value: str, default: float) -> float:
    if not value:
        return default
    try:
        seconds = float(value)
    except ValueError:
        seconds = math.nan
    if not 0 <= seconds <= MAX_WAIT:
        raise ValueError(
            f"{name} must be a number of seconds from 0 (wait for ever) "
            f"to {MAX_WAIT:g}, not {quoted(value)}"
        )
    return seconds


def check(environ: Mapping[str, str] | None = None) -> None:
    """Read every variable once, so that a bad value is reported at start-up.

    Raises:
        ValueError: A variable holds a value it cannot take.
    """
    skip_launcher_check(environ)
    cores(environ)
    poll_max_sleep(environ)
    init_timeout(environ)
    join_timeout(environ)
