"""Benchmarks for tufwaves: ``python -m bench --help``.

The orchestrator (:mod:`bench.run`) starts one fresh worker process
(:mod:`bench._worker`) per measurement that needs clean memory or a cold
state, so that peak RSS and cold timings belong to that measurement alone.
:mod:`bench._baseline` is the comparison: the same wave with its ripple as one
flat python-tuf targets role, checked by python-tuf's unmodified ngclient.
"""
