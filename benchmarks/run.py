"""Run the benchmark suite and regenerate the benchmark table in docs/benchmarks.md (``make benchmark``).

Each benchmark runs in its own process (``python benchmarks/bench_<name>.py [--quick]``) and
writes ``benchmarks/results/<name>.json``; the table between ``<!-- benchmarks:start -->`` and
``<!-- benchmarks:end -->`` in docs/benchmarks.md is then rewritten from every JSON file there::

    python benchmarks/run.py                 # the performance suite (make benchmark; <= 30 min on 2 cores)
    python benchmarks/run.py --all           # and the method studies (projection, estimators, methods)
    python benchmarks/run.py --quick         # the suite in seconds per benchmark (indicative figures)
    python benchmarks/run.py verify retrieve # some of them, suite or study
    python benchmarks/run.py --readme-only   # only rewrite the table from the JSON files
    python benchmarks/run.py --check         # exit status 1 when the table is not current

(``--readme-only`` and ``--check`` also cover the method-comparison table that
``bench_methods.py`` writes between ``<!-- methods:start -->`` and ``<!-- methods:end -->`` in
docs/comparing-methods.md.) The registry of benchmarks and the block writer live in ``suite.py``.

The suite measures speed and memory (verification, kNN at GLR scale, ANN, DELG extraction, the
host-baseline flow, the embedding backend, bounded decoding); the studies compare methods'
accuracy through the whole pipeline (minutes each) and run with ``--all`` or by name. Each
result records its benchmark's wall time (``wall_s``: the whole process, data generation
included), and the benchmark table sums them.

Benchmarks assume an otherwise idle machine (each JSON records the load average at its start).
``bench_embedding.py`` prints its own JSON document; this script stores it in the same form.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from typing import List, Optional, Sequence

from suite import (
    BENCHMARKS,
    BENCHMARKS_DOC,
    HERE,
    METHODS_DOC,
    SUITE,
    machine_info,
    result_path,
    update_benchmark_table,
    update_methods_table,
    write_result,
)


def record_wall_time(name: str, seconds: float) -> None:
    """Add the benchmark's wall time (its whole process) to its result file."""
    path = result_path(name)
    if path.is_file():
        doc = json.loads(path.read_text(encoding="utf-8"))
        doc["wall_s"] = round(seconds, 1)
        path.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")


def run_one(name: str, quick: bool) -> int:
    bench = BENCHMARKS[name]
    cmd = [sys.executable, str(HERE / bench.script), *(bench.quick_args if quick else ())]
    print(f"== running {name}: {' '.join(cmd[1:])}", flush=True)
    t0 = time.perf_counter()
    if bench.wrap is None:
        code = subprocess.run(cmd).returncode
    else:
        started = machine_info()
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)
        code = proc.returncode
        if code == 0:
            doc = json.loads(proc.stdout)
            setup, rows = bench.wrap(doc)
            write_result(name, setup, rows, doc, quick, started=started, command=cmd[1:])
    seconds = time.perf_counter() - t0
    if code == 0:
        record_wall_time(name, seconds)
    print(f"== {name}: {'done' if code == 0 else f'FAILED (exit status {code})'} in {seconds:.1f} s", flush=True)
    return code


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", metavar="NAME",
                        help=f"benchmarks to run (default: the suite, {', '.join(SUITE)}; also: "
                             f"{', '.join(n for n in BENCHMARKS if n not in SUITE)})")
    parser.add_argument("--all", action="store_true", help="the suite and the method studies")
    parser.add_argument("--quick", action="store_true", help="small inputs and few repeats: seconds per benchmark")
    parser.add_argument("--readme-only", action="store_true",
                        help="run nothing; rewrite the tables in docs/benchmarks.md and docs/comparing-methods.md")
    parser.add_argument("--check", action="store_true", help="run nothing; exit 1 when those tables are stale")
    args = parser.parse_args(argv)
    unknown = [n for n in args.names if n not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark {unknown[0]!r}; choose from {', '.join(BENCHMARKS)}")
    failed: List[str] = []
    if not (args.readme_only or args.check):
        names = args.names or (list(BENCHMARKS) if args.all else SUITE)
        t0 = time.perf_counter()
        failed = [name for name in names if run_one(name, args.quick)]
        print(f"== {len(names)} benchmark(s) in {(time.perf_counter() - t0) / 60:.1f} min", flush=True)
    current = update_benchmark_table(check=args.check)
    current = update_methods_table(check=args.check) and current
    where = f"{BENCHMARKS_DOC.relative_to(HERE.parent)} and {METHODS_DOC.relative_to(HERE.parent)}"
    if args.check:
        state = "are current" if current else "are stale: run benchmarks/run.py --readme-only"
        print(f"{where}: tables {state}")
        return 0 if current else 1
    print(f"{where}: tables {'unchanged' if current else 'rewritten'}")
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
