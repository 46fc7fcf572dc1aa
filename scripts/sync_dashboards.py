"""Copy the Grafana dashboards (infra/grafana/dashboards, the source of truth) into the Helm chart.

The chart ships them as ConfigMaps from ``charts/corral/dashboards/``; a test fails when the
copies drift. Usage::

    python scripts/sync_dashboards.py          # copy (and delete copies whose source is gone)
    python scripts/sync_dashboards.py --check  # exit 1 and list the drift, change nothing
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SOURCE = REPO / "infra" / "grafana" / "dashboards"
TARGET = REPO / "charts" / "corral" / "dashboards"


def drift(source: Path = SOURCE, target: Path = TARGET) -> list[str]:
    """One line per dashboard that is missing, stale or unexpected in ``target``."""
    problems = []
    wanted = {p.name: p for p in sorted(source.glob("*.json"))}
    present = {p.name: p for p in sorted(target.glob("*.json"))} if target.is_dir() else {}
    for name, path in wanted.items():
        if name not in present:
            problems.append(f"missing: {name}")
        elif present[name].read_bytes() != path.read_bytes():
            problems.append(f"stale: {name}")
    problems.extend(f"unexpected: {name}" for name in present if name not in wanted)
    return problems


def sync(source: Path = SOURCE, target: Path = TARGET) -> list[str]:
    """Make ``target`` an exact copy of ``source``'s dashboards; returns what changed."""
    changed = drift(source, target)
    target.mkdir(parents=True, exist_ok=True)
    for path in sorted(source.glob("*.json")):
        shutil.copyfile(path, target / path.name)
    for path in sorted(target.glob("*.json")):
        if not (source / path.name).exists():
            path.unlink()
    return changed


def main(argv: list[str] | None = None) -> int:
    """Run the command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report drift (exit 1 when there is some)")
    args = parser.parse_args(argv)
    if args.check:
        problems = drift()
        for line in problems:
            print(line)
        return 1 if problems else 0
    for line in sync():
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
