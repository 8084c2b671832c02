"""The adoption table's columns: one adopted release a row, from base model to serving.

Two parts print it: the demo's closing summary (``uptake/demo/summary.py``) and the adoption
report with its index (``registry/report/render.py``, which puts a ``version`` column first).
The README quotes the table, so both print the same headers from here.
"""

from __future__ import annotations

from typing import Final

ADOPTION_COLUMNS: Final = (
    "release",
    "base all-pass",
    "base criterion",
    "post-trained all-pass",
    "post-trained criterion",
    "decision",
    "release → serving",
)
