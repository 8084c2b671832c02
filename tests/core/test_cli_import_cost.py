"""Every ``uptake`` command builds the whole command line first (each package registers its
commands), so what those modules import at the top is paid by ``uptake status`` and by every
one-line config error. The heavy libraries are imported by the commands that use them."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ("mlflow", "torch", "transformers", "trl", "sqlalchemy", "pandas")

PROBE = """
import json, sys
from uptake.cli import build_app
build_app()
print(json.dumps(sorted(m for m in {heavy!r} if m in sys.modules)))
"""


def test_building_the_command_line_imports_no_heavy_library() -> None:
    out = subprocess.run(
        [sys.executable, "-c", PROBE.format(heavy=HEAVY)],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []
