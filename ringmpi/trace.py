"""A traced farm run as Chrome Trace JSON and a Gantt chart: see :mod:`ringmpi.farm.timeline`."""

from __future__ import annotations

from .farm.timeline import chrome_trace, draw_timeline, have_matplotlib, write_chrome_trace

__all__ = ["chrome_trace", "draw_timeline", "have_matplotlib", "write_chrome_trace"]
