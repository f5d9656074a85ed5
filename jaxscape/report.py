"""Markdown reports for experiment runs: claim, setup, figures, statistics, checks.

A report is built in memory and rendered to a string (writing it is the
caller's job). Checks are fixed before running and reported whatever the
verdict: a FAIL is a result, never hidden.

Example:
  >>> r = Report("demo", claim="The origin is a minimum.", seed=0, preset="smoke")
  >>> r.check("origin is the grid minimum", 0.1 <= 0.2, "loss(0) = 0.1 <= min grid loss 0.2")
  True
  >>> r.verdict
  'PASS'
  >>> "| origin is the grid minimum | PASS |" in r.render()
  True
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import numpy as np

__all__ = ["Report", "table", "fmt"]


def fmt(x: Any, digits: int = 4) -> str:
  """Short human formatting of numbers (and passthrough of strings)."""
  if isinstance(x, (bool, np.bool_)):
    return "yes" if x else "no"
  if isinstance(x, (int, np.integer)):
    return str(int(x))
  if isinstance(x, (float, np.floating)):
    x = float(x)
    if not np.isfinite(x):
      return str(x)
    if x != 0 and (abs(x) < 1e-3 or abs(x) >= 1e5):
      return f"{x:.{digits - 1}e}"
    return f"{x:.{digits}g}"
  return str(x)


def table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
  """A Markdown table."""
  lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
  lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
  return "\n".join(lines)


@dataclasses.dataclass
class Report:
  """A run report: the claim in one sentence, setup, figures, tables, checks."""

  name: str
  claim: str
  seed: int
  preset: str
  setup: list[str] = dataclasses.field(default_factory=list)
  sections: list[tuple[str, str]] = dataclasses.field(default_factory=list)
  figures: list[tuple[str, str]] = dataclasses.field(default_factory=list)
  checks: list[tuple[str, bool, str]] = dataclasses.field(default_factory=list)
  notes: list[str] = dataclasses.field(default_factory=list)

  def check(self, name: str, passed: bool, evidence: str) -> bool:
    """Records a pass/fail criterion with the numbers that decided it."""
    self.checks.append((name, bool(passed), evidence))
    return bool(passed)

  def figure(self, path: str, caption: str) -> None:
    self.figures.append((path, caption))

  def section(self, title: str, body: str) -> None:
    self.sections.append((title, body))

  @property
  def verdict(self) -> str:
    return "PASS" if self.checks and all(p for _, p, _ in self.checks) else "FAIL"

  def render(self) -> str:
    out = [f"# {self.name}: {self.verdict}", "", f"**Claim.** {self.claim}", "",
           f"Preset `{self.preset}`, seed {self.seed}.", ""]
    if self.setup:
      out += ["## Setup", ""] + [f"- {s}" for s in self.setup] + [""]
    if self.checks:
      out += ["## Check", "", table(["criterion", "result", "numbers"],
                                    [(n, "PASS" if p else "FAIL", e) for n, p, e in self.checks]), ""]
    for title, body in self.sections:
      out += [f"## {title}", "", body, ""]
    if self.figures:
      out += ["## Figures", ""]
      for path, caption in self.figures:
        out += [f"![{caption}]({path})", "", f"*{caption}*", ""]
    if self.notes:
      out += ["## Notes", ""] + [f"- {n}" for n in self.notes] + [""]
    return "\n".join(out)
