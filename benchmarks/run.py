"""Run the benchmark suite and regenerate the benchmark table in README.md (``make benchmark``).

Each benchmark runs in its own process (``python benchmarks/bench_<name>.py [--quick]``) and
writes ``benchmarks/results/<name>.json``; the table between ``<!-- benchmarks:start -->`` and
``<!-- benchmarks:end -->`` in README.md is then rewritten from every JSON file there::

    python benchmarks/run.py                 # the performance suite (make benchmark; <= 30 min on 2 cores)
    python benchmarks/run.py --all           # and the method studies (projection, estimators, methods)
    python benchmarks/run.py --quick         # the suite in seconds per benchmark (indicative figures)
    python benchmarks/run.py verify retrieve # some of them, suite or study
    python benchmarks/run.py --readme-only   # only rewrite the table from the JSON files
    python benchmarks/run.py --check         # exit status 1 when the table is not current

(``--readme-only`` and ``--check`` also cover the method-comparison table that
``bench_methods.py`` writes between ``<!-- methods:start -->`` and ``<!-- methods:end -->``.)

The suite measures speed and memory (verification, kNN at GLR scale, ANN, DELG extraction, the
host-baseline flow, the embedding backend, bounded decoding); the studies compare methods'
accuracy through the whole pipeline (minutes each) and run with ``--all`` or by name. Each
result records its benchmark's wall time (``wall_s``: the whole process, data generation
included), and the README table sums them.

Benchmarks assume an otherwise idle machine (each JSON records the load average at its start).
``bench_embedding.py`` prints its own JSON document; this script stores it in the same form.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple

from suite import HERE, README, machine_info, result_path, update_readme, write_result


class Benchmark(NamedTuple):
    script: str
    quick_args: Tuple[str, ...] = ("--quick",)
    #: for a script that prints one JSON document instead of writing its result: (setup, rows)
    wrap: Optional[Callable[[Dict[str, Any]], Tuple[str, List[Tuple[str, str]]]]] = None
    #: a method study (accuracy through the pipeline): run with --all or by name, not by default
    study: bool = False


def _embedding(doc: Dict[str, Any]) -> Tuple[str, List[Tuple[str, str]]]:
    setup = (f"the `embedding` backend with {doc['model']} (random weights), {doc['images']} images after warm-up "
             "calls; median ms per image")
    rows = [(f"`EmbeddingBackend.extract`, {doc['input']} input", f"{doc['extract_ms_per_image']['median']:.0f} ms per "
             f"image ({doc['images_per_s']:.1f} images/s), of which {doc['model_call_ms']['median']:.0f} ms in the "
             "model call")]
    return setup, rows


#: name -> benchmark, in the order of the README table
BENCHMARKS: Dict[str, Benchmark] = {
    "verify": Benchmark("bench_verify.py"),
    "retrieve": Benchmark("bench_retrieve.py", study=True),  # extrapolated from 200k rows: knn_scale measures GLR scale
    "knn_scale": Benchmark("bench_knn_scale.py"),  # GLR2020 scale: ~11 min, ~8 GB of scratch files
    "ann": Benchmark("bench_ann.py"),
    "delg_extract": Benchmark("bench_delg_extract.py"),  # ResNet-50-sized DELG: ~4 min
    "host_flow": Benchmark("bench_host_flow.py"),  # host-baseline flow vs run, ResNet-50-sized DELG: ~5 min
    "embedding": Benchmark("bench_embedding.py", ("--size", "224", "--images", "3", "--warmup", "1"), _embedding),
    "memory": Benchmark("bench_memory.py"),
    "projection": Benchmark("bench_projection.py", study=True),  # ~18 min
    "estimators": Benchmark("bench_estimators.py", study=True),
    "methods": Benchmark("bench_methods.py", study=True),  # also writes README's method table (its own block)
}
SUITE = [name for name, bench in BENCHMARKS.items() if not bench.study]


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
    parser.add_argument("--readme-only", action="store_true", help="run nothing; rewrite the README table")
    parser.add_argument("--check", action="store_true", help="run nothing; exit 1 when the README table is stale")
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
    current = update_readme(order=list(BENCHMARKS), check=args.check, suite=SUITE)
    from bench_methods import update_readme as update_methods_table  # README's method comparison block

    current = update_methods_table(check=args.check) and current
    if args.check:
        state = "is current" if current else "is stale: run benchmarks/run.py --readme-only"
        print(f"{README.name}: benchmark table {state}")
        return 0 if current else 1
    print(f"{README.name}: benchmark table {'unchanged' if current else 'rewritten'}")
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
