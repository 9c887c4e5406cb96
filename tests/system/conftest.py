"""The reliability suite (``make reliability``; part of ``make test``): prints its table at the end."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # ledger.py and the suite's helpers

from ledger import LEDGER  # noqa: E402


def pytest_terminal_summary(terminalreporter):
    if not LEDGER.outcomes:
        return
    terminalreporter.section("reliability suite (tests/system): cases tried / handled")
    terminalreporter.write_line(LEDGER.table())
    for o in LEDGER.failures():
        terminalreporter.write_line(f"NOT HANDLED {o.group} / {o.name}: {o.detail}")
