"""The runner process: `python -m runners.harness.main JOB.json ...` runs jobs through the
toolchains' handlers, and measures (compares outputs, times calls) alike for all of them."""
