"""The reliability suite's bookkeeping: every case is tried, its outcome recorded, and the
whole run printed as one table (group · tried · handled · the cases not handled).

A case is a callable that attacks a real part of the kit (a live demo server over HTTP, the
cache on disk, the loaders, the CLI) and *asserts* what "handled" means for it: a clear
refusal naming the file or argument, nothing written or leaked, or — for odd but valid input —
a correct answer. An ``AssertionError`` is a case not handled; any other exception escaping
the case is one too (the kit let a raw error through). Nothing is skipped.
"""

from __future__ import annotations

import traceback
from dataclasses import dataclass, field
from typing import Callable


@dataclass
class Outcome:
    group: str
    name: str
    handled: bool
    detail: str = ""


@dataclass
class Ledger:
    outcomes: list[Outcome] = field(default_factory=list)

    def run(self, group: str, name: str, attack: Callable[[], object]) -> Outcome:
        """Try one case; record and return its outcome."""
        try:
            attack()
            outcome = Outcome(group, name, True)
        except AssertionError as e:
            outcome = Outcome(group, name, False, f"not handled: {str(e).splitlines()[0] if str(e) else 'assertion'}")
        except Exception as e:  # noqa: BLE001 - an escaping error is exactly what the suite looks for
            where = traceback.extract_tb(e.__traceback__)[-1]
            outcome = Outcome(group, name, False, f"raw {type(e).__name__}: {str(e)[:160]} "
                                                  f"({where.filename.rsplit('/', 1)[-1]}:{where.lineno})")
        self.outcomes.append(outcome)
        return outcome

    def run_all(self, group: str, cases: dict[str, Callable[[], object]]) -> list[Outcome]:
        return [self.run(group, name, attack) for name, attack in cases.items()]

    def failures(self, group: str | None = None) -> list[Outcome]:
        return [o for o in self.outcomes if not o.handled and (group is None or o.group == group)]

    def table(self) -> str:
        """Markdown: one row per group in the order first tried, then a total row."""
        groups = list(dict.fromkeys(o.group for o in self.outcomes))
        rows = ["| group | tried | handled | not handled |", "| --- | ---: | ---: | --- |"]
        for g in groups:
            mine = [o for o in self.outcomes if o.group == g]
            bad = [o.name for o in mine if not o.handled]
            rows.append(f"| {g} | {len(mine)} | {len(mine) - len(bad)} | {', '.join(bad) or '—'} |")
        bad = self.failures()
        rows.append(f"| **all** | **{len(self.outcomes)}** | **{len(self.outcomes) - len(bad)}** | "
                    f"{len(bad) or '—'} |")
        return "\n".join(rows)

    def assert_handled(self, group: str) -> None:
        bad = self.failures(group)
        assert not bad, f"{group}: {len(bad)} case(s) not handled:\n" + "\n".join(f"  {o.name}: {o.detail}" for o in bad)


LEDGER = Ledger()  # one per test session; tests/system/conftest.py prints it at the end
