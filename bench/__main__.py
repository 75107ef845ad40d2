"""`python -m bench all [--quick] [--provider cpu|cuda] [--procs N]`: the benchmark suite (not run by pytest).

Parts: `ort` (in-process ceiling, batch 1..256), `inproc` (the goals' in-process references at
batch 64: ONNX Runtime alone, and the whole work of a reply), `service` (closed loop, default
settings, PNG and raw replies), `open` (knee and overload), `naive` (the tutorial baselines: sync
handler with 1 ORT thread, and with ORT's default threads), `host` (the host ceiling: a
near-free model served and in process), `configs` (settings sweep). `all` runs every part and
writes docs/bench/results.json, docs/bench/*.png and the tables in docs/BENCHMARKS.md. `report`
re-renders the doc and plots from an existing results.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from . import report, suite

PARTS = suite.PARTS


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    ap.add_argument("parts", nargs="+", choices=(*PARTS, "all", "report"))
    ap.add_argument("--quick", action="store_true", help="short points, one repeat (~3 min)")
    ap.add_argument("--provider", choices=("cpu", "cuda"), default="cpu")
    ap.add_argument("--models", type=Path, default=suite.ROOT / "models")
    ap.add_argument("--out", type=Path, default=None, help="default docs/bench (docs/bench/gpu for cuda)")
    ap.add_argument("--doc", type=Path, default=None, help="default docs/BENCHMARKS.md")
    ap.add_argument("--duration", type=float, help="seconds per closed-loop point")
    ap.add_argument("--repeats", type=int)
    ap.add_argument(
        "--procs", type=int, help="load-generator processes (default: one per 4 cores, at most 4)"
    )
    args = ap.parse_args(argv)
    out = args.out or suite.ROOT / ("docs/bench/gpu" if args.provider == "cuda" else "docs/bench")
    doc = args.doc or suite.ROOT / (
        "docs/BENCHMARKS_GPU.md" if args.provider == "cuda" else "docs/BENCHMARKS.md"
    )
    command = "python -m bench " + " ".join(argv if argv is not None else sys.argv[1:])
    if args.parts == ["report"]:
        report.write(json.loads((out / "results.json").read_text()), out, doc, command)
        return
    plan = dataclasses.replace(suite.QUICK) if args.quick else suite.Plan()
    if args.duration:
        plan.duration = args.duration
    if args.repeats:
        plan.repeats = args.repeats
    if args.procs:
        plan.procs = args.procs
    parts = set(PARTS) if "all" in args.parts else set(args.parts)
    results = suite.run_all(plan, out, args.provider, args.models, parts)
    results["command"] = command
    old = out / "results.json"
    if parts != set(PARTS) and old.exists():  # a partial run updates the parts it ran
        merged = json.loads(old.read_text())
        keep = ("machine", "elapsed_s", "command", "plan")  # those of the full run
        merged.update({k: v for k, v in results.items() if k not in keep})
        merged.setdefault("partial_runs", []).append({"parts": sorted(parts), "machine": results["machine"]})
        results = merged
    report.write(results, out, doc, command)
    (out / "results.partial.json").unlink(missing_ok=True)
    suite.log(f"wrote {out}/results.json, plots and {doc}")
    for name, ok, txt in report.targets(results):
        verdict = "NOT MEASURED" if ok is None else ("MET" if ok else "MISSED")
        suite.log(f"goal {verdict}: {name}: {txt}")


if __name__ == "__main__":
    main()
