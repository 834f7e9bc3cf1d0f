"""Reproducible performance measurements of gwlab: ``python -m benchmarks.run`` (``make
bench``). See benchmarks/README.md for what each one measures and the numbers."""
