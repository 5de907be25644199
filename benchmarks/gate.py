"""The evaluation gate: run the quality benchmarks and fail when a figure drops below its floor.

As trafilatura does in its CI, quality is checked, not just code: each check in
``benchmarks/baseline.json`` names a benchmark script, its arguments (``{data}`` is the shared
data folder) and, per figure, a JSON path into that script's results and the floor it must
reach: a little under the figure measured when the floor was set, so noise passes and a real
regression does not. ``.ci/run`` runs it where ``../shared/data`` is beside the clone::

    python benchmarks/gate.py --data ../shared/data [--only stories] [--results DIR]

Exit 0 when every figure holds, 1 when one dropped, 2 when a benchmark could not run.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
BASELINE = HERE / "baseline.json"


def figure(results: dict[str, Any], path: list[str]) -> float:
    """The number at ``path`` (a list of keys) in a results file."""
    node: Any = results
    for key in path:
        if not isinstance(node, dict) or key not in node:
            raise KeyError(f"no {'/'.join(path)} in the results (missing {key!r})")
        node = node[key]
    if not isinstance(node, int | float):
        raise TypeError(f"{'/'.join(path)} is not a number: {node!r}")
    return float(node)


def run_check(check: dict[str, Any], data: Path, results_dir: Path) -> list[dict[str, Any]]:
    """Run one benchmark and compare its figures with their floors."""
    out = results_dir / f"{check['name']}.json"
    args = [a.replace("{data}", str(data)) for a in check["args"]]
    command = [sys.executable, str(HERE / check["script"]), *args, "--json", str(out)]
    started = time.monotonic()
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["(no output)"]
        raise RuntimeError(f"{check['name']}: {check['script']} exited {done.returncode}: "
                           f"{tail[0]}")
    results = json.loads(out.read_text(encoding="utf-8"))
    rows = []
    for metric in check["metrics"]:
        value = figure(results, metric["path"])
        rows.append({"check": check["name"], "figure": metric["label"], "value": value,
                     "floor": metric["floor"], "ok": value >= metric["floor"],
                     "seconds": round(time.monotonic() - started, 1)})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="the shared data folder")
    parser.add_argument("--baseline", type=Path, default=BASELINE)
    parser.add_argument("--only", help="run only checks whose name contains this")
    parser.add_argument("--results", type=Path,
                        help="keep each benchmark's results JSON here (default: a temp dir)")
    args = parser.parse_args(argv)
    if not args.data.is_dir():
        print(f"gate: no data folder at {args.data}", file=sys.stderr)
        return 2
    checks = json.loads(args.baseline.read_text(encoding="utf-8"))["checks"]
    checks = [c for c in checks if not args.only or args.only in c["name"]]
    with tempfile.TemporaryDirectory() as scratch:
        results_dir = args.results or Path(scratch)
        results_dir.mkdir(parents=True, exist_ok=True)
        rows: list[dict[str, Any]] = []
        for check in checks:
            print(f"gate: {check['name']} …", flush=True)
            try:
                rows += run_check(check, args.data, results_dir)
            except (RuntimeError, KeyError, TypeError, ValueError) as exc:
                print(f"gate: {exc}", file=sys.stderr)
                return 2
    width = max(len(f"{r['check']}: {r['figure']}") for r in rows) if rows else 10
    for r in rows:
        mark = "ok  " if r["ok"] else "DROP"
        print(f"{mark} {r['check'] + ': ' + r['figure']:<{width}}  {r['value']:.4f}  "
              f"(floor {r['floor']:.4f})")
    dropped = [r for r in rows if not r["ok"]]
    if dropped:
        print(f"gate: {len(dropped)} figure(s) below the floor in {args.baseline.name}",
              file=sys.stderr)
        return 1
    print(f"gate: all {len(rows)} figures at or above their floors")
    return 0


if __name__ == "__main__":
    sys.exit(main())
