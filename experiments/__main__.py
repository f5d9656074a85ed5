"""``python -m experiments <name> [flags]``: runs one experiment (what ``make experiment NAME=...`` calls).

An unknown name, or none, is a one-line error that lists the experiments
that exist (exit code 2); the flags are those of
:func:`jaxscape.experiment.run` (``--preset``, ``--seed``,
``--data-dir``, ``--out``), and an unknown preset lists the presets.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
from typing import Sequence

import experiments
from jaxscape import experiment, plot


def names() -> list[str]:
  """The experiments that exist: the public modules of this package."""
  return sorted(m.name for m in pkgutil.iter_modules(experiments.__path__) if not m.name.startswith("_"))


def main(argv: Sequence[str] | None = None) -> int:
  argv = list(sys.argv[1:] if argv is None else argv)
  available = names()
  if not argv or argv[0].startswith("-"):
    print("usage: python -m experiments <name> [--preset smoke|cpu|full] [--seed N] [--data-dir DIR] [--out DIR]; "
          f"experiments: {', '.join(available)}", file=sys.stderr)
    return 2
  name, rest = argv[0], argv[1:]
  if name not in available:
    print(f"unknown experiment {name!r}: expected one of {', '.join(available)}", file=sys.stderr)
    return 2
  return experiment.run(importlib.import_module(f"experiments.{name}"), rest, html_views=plot.html_views)


if __name__ == "__main__":
  sys.exit(main())
