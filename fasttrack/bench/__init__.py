"""`fasttrack bench`'s measurements: one harness, one case file per section, the report.

- harness.py  the timing loop (device synchronized inside the timed call) and the memory method;
- ops.py, recorder.py, detrack.py, trackers.py  the sections' cases and rows;
- report.py   markdown / HTML tables and the chart; facts.py  what the machine is.

benchmarks/*.py are thin pytest-benchmark files over the same cases.
"""
