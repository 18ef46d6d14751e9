"""`fasttrack bench`'s measurements: one harness, one case file per section, the report.

- harness.py  Case; the timing loop (device synchronized inside the timed call) and the memory
              method (peak allocated MB), which turn cases into rows;
- ops.py, recorder.py, detrack.py, dmtrack.py, trackers.py  each a section's
              `cases(device, quick)`;
- report.py   console / markdown / HTML tables and the chart; facts.py  what the machine is.

benchmarks/*.py are thin pytest-benchmark files over the same cases.
"""
