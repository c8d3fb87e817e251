"""The benchmark suite's one registry and one block writer: machine description, medians, JSON
results, and the generated blocks of README.md and docs/.

Every benchmark script (``bench_*.py``) measures, then calls :func:`write_result`, which writes
``benchmarks/results/<name>.json``: the figures, a few summary rows for the benchmark table, the
command that produced them and the machine (CPU model and cores, versions of numpy, OpenCV,
pydegensac, faiss, TensorFlow). :data:`BENCHMARKS` lists them (``python benchmarks/run.py`` runs
them). Generated text lives between HTML comment markers, written only through
:func:`update_block`; nothing in those blocks is typed by hand:

* ``docs/benchmarks.md``, ``<!-- benchmarks:start -->`` ... ``<!-- benchmarks:end -->``: every
  result's summary rows (:func:`update_benchmark_table`; ``python benchmarks/run.py --readme-only``);
* ``docs/comparing-methods.md``, ``<!-- methods:start -->`` ... ``<!-- methods:end -->``: the
  method comparison from ``results/methods.json`` (:func:`update_methods_table`;
  ``python benchmarks/bench_methods.py --readme-only``);
* ``README.md``, ``<!-- demo-numbers:start -->`` ...: the demo's scores (``benchmarks/readme_numbers.py``);
* ``docs/presets.md``, ``<!-- presets:start -->`` ...: the presets (``benchmarks/docs_presets.py``).

This module imports no other benchmarks module, so the scripts never import in a circle.
"""
from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, NamedTuple, Optional, Sequence, Tuple

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RESULTS = HERE / "results"
README = REPO / "README.md"
DOCS = REPO / "docs"
#: the benchmark table (every result's summary rows)
BENCHMARKS_DOC = DOCS / "benchmarks.md"
START, END = "<!-- benchmarks:start -->", "<!-- benchmarks:end -->"
#: the method comparison (results/methods.json)
METHODS_DOC = DOCS / "comparing-methods.md"
METHODS_MARKERS = ("<!-- methods:start -->", "<!-- methods:end -->")


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


#: name -> benchmark, in the order of the benchmark table (``run.py`` runs them)
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
    "methods": Benchmark("bench_methods.py", study=True),  # also writes the method table (its own block)
    "learned": Benchmark("bench_learned.py", study=True),  # learned local features + LightGlue: ~40 min
    "global": Benchmark("bench_global.py", study=True),  # global descriptors, recall@k: ~30 min
}
#: the performance suite (``make benchmark``); the others are method studies
SUITE = [name for name, bench in BENCHMARKS.items() if not bench.study]

#: the packages whose versions a result records: label -> distributions that provide it
PACKAGES: Dict[str, Tuple[str, ...]] = {
    "numpy": ("numpy",),
    "OpenCV": ("opencv-python-headless", "opencv-python", "opencv-contrib-python-headless", "opencv-contrib-python"),
    "pydegensac": ("pydegensac",),
    "faiss": ("faiss-cpu", "faiss-gpu", "faiss"),
    "TensorFlow": ("tensorflow-cpu", "tensorflow", "tensorflow-intel"),
    "h5py": ("h5py",),
}


def cpu_model() -> str:
    """The CPU model name (``/proc/cpuinfo`` on Linux, else what :mod:`platform` knows)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def usable_cores() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def package_version(label: str) -> Optional[str]:
    """Installed version of one of :data:`PACKAGES` (None when not installed); no import."""
    for dist in PACKAGES[label]:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return None


def cpu_snapshot() -> Dict[str, float]:
    """CPU seconds used so far by the whole machine (``/proc/stat``, Linux; else 0) and by this
    process with its finished children, and the wall clock."""
    busy = 0.0
    try:
        fields = [float(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        busy = (sum(fields[:8]) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")  # all but idle, iowait
    except (OSError, ValueError, IndexError):
        pass
    t = os.times()
    return {"machine_busy_s": busy, "own_s": t.user + t.system + t.children_user + t.children_system,
            "wall_s": time.time()}


def other_cpu_share(start: Mapping[str, float]) -> Optional[float]:
    """The share of the machine's CPU time used by other processes since ``start`` (a
    :func:`cpu_snapshot`): ~0 on an idle machine; the figures are slower the larger it is."""
    end = cpu_snapshot()
    wall = end["wall_s"] - start["wall_s"]
    if not start.get("machine_busy_s") or wall <= 0:
        return None
    other = (end["machine_busy_s"] - start["machine_busy_s"]) - (end["own_s"] - start["own_s"])
    return round(max(0.0, other) / (wall * (os.cpu_count() or 1)), 3)


def machine_info() -> Dict[str, Any]:
    """What the figures were measured on, the load average when measuring started and a CPU
    snapshot (:func:`write_result` turns it into the share of the CPU other processes took:
    the figures assume an otherwise idle machine)."""
    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        load = None
    return {
        "cpu": cpu_model(),
        "cores": usable_cores(),
        "python": platform.python_version(),
        "platform": f"{platform.system()} {platform.machine()}",
        "versions": {label: package_version(label) for label in PACKAGES},
        "load_average": load,
        "cpu_snapshot": cpu_snapshot(),
    }


#: a timed run during which other processes took more than this share of the CPU is repeated
MAX_OTHER_SHARE = 0.05
#: seconds a benchmark process may spend in all waiting for the machine to become idle
#: (``set_patience``); then contended runs are kept, and flagged in the result
_patience = {"left": 600.0}
#: timed runs made, runs discarded as contended, timings that had to keep contended runs
CONTENTION = {"runs": 0, "discarded": 0, "contended_timings": 0}


def set_patience(seconds: float) -> None:
    """How long (in all) this process may wait for an idle machine (``--quick``: a few seconds)."""
    _patience["left"] = float(seconds)


def wait_for_idle(window: float = 0.25) -> Optional[float]:
    """Wait (within the patience left) until other processes leave the CPU idle for ``window``
    seconds; returns the last share they took (None where /proc/stat is not available)."""
    share = None
    while True:
        snap = cpu_snapshot()
        time.sleep(window)
        share = other_cpu_share(snap)
        if share is None or share < MAX_OTHER_SHARE or _patience["left"] <= 0:
            return share
        _patience["left"] -= window + 1.0
        time.sleep(1.0)


def clean_runs(fn: Callable[[], Any], repeats: int, max_attempts: Optional[int] = None
               ) -> List[Tuple[float, float, Any]]:
    """``repeats`` timed calls of ``fn`` while the machine is otherwise idle: ``(seconds, share of
    the CPU other processes took meanwhile, return value)``.

    A call during which other processes took more than :data:`MAX_OTHER_SHARE` of the CPU is
    repeated (waiting for an idle machine first), up to ``max_attempts`` calls (default
    4 x ``repeats``); then the least contended calls are kept and :data:`CONTENTION` counts it.
    """
    runs: List[Tuple[float, float, Any]] = []
    for _ in range(max_attempts or 4 * repeats):
        if not runs or runs[-1][1] >= MAX_OTHER_SHARE:  # first, or after a contended run
            wait_for_idle()
        snap = cpu_snapshot()
        t0 = time.perf_counter()
        value = fn()
        seconds = time.perf_counter() - t0
        runs.append((seconds, other_cpu_share(snap) or 0.0, value))
        if sum(1 for r in runs if r[1] < MAX_OTHER_SHARE) >= repeats:
            break
    clean = [r for r in runs if r[1] < MAX_OTHER_SHARE]
    chosen = clean[:repeats] if len(clean) >= repeats else sorted(runs, key=lambda r: r[1])[:repeats]
    CONTENTION["runs"] += len(runs)
    CONTENTION["discarded"] += len(runs) - len(chosen)
    CONTENTION["contended_timings"] += len(clean) < repeats
    return chosen


def median_time(fn: Callable[[], Any], repeats: int, warmup: int = 0) -> Tuple[float, List[float]]:
    """Median wall time (s) of ``repeats`` calls of ``fn`` (after ``warmup`` untimed ones) on an
    otherwise idle machine (:func:`clean_runs`), and the times."""
    for _ in range(warmup):
        fn()
    times = [r[0] for r in clean_runs(fn, repeats)]
    return statistics.median(times), times


def result_path(name: str) -> Path:
    return RESULTS / f"{name}.json"


def write_result(name: str, setup: str, rows: Sequence[Tuple[str, str]], figures: Mapping[str, Any],
                 quick: bool, out: Optional[Path] = None, started: Optional[Dict[str, Any]] = None,
                 command: Optional[Sequence[str]] = None) -> Path:
    """Write one benchmark's JSON result (see the module docstring) and print its summary rows.

    Args:
        name: the benchmark's name (``verify``, ``retrieve``, ...): ``results/<name>.json``.
        setup: one sentence: what is measured, on what data.
        rows: ``(measurement, result)`` pairs for the benchmark table.
        figures: every figure measured (nested JSON).
        quick: measured with ``--quick`` (smaller, fewer repeats: indicative only).
        out: another path for the JSON file.
        started: :func:`machine_info` taken when measuring started (default: now).
        command: the benchmark's script and arguments (default: this process's).
    """
    script, *rest = command or sys.argv
    machine = dict(started or machine_info())
    snapshot = machine.pop("cpu_snapshot", None)
    machine["other_processes_cpu_share"] = other_cpu_share(snapshot) if snapshot else None
    machine["timed_runs"] = dict(CONTENTION)
    doc = {
        "name": name,
        "command": " ".join(["python", f"benchmarks/{Path(script).name}", *rest]),
        "quick": quick,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "machine": machine,
        "setup": setup,
        "summary": [{"measurement": m, "result": r} for m, r in rows],
        "figures": figures,
    }
    path = Path(out) if out else result_path(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2, default=_jsonable) + "\n", encoding="utf-8")
    width = max((len(m) for m, _ in rows), default=0)
    print(f"== {name}: {setup}")
    for measurement, result in rows:
        print(f"  {measurement:<{width}}  {result}")
    print(f"  -> {path}")
    return path


def _jsonable(value: Any) -> Any:
    if hasattr(value, "tolist"):  # numpy scalars and arrays
        return value.tolist()
    return str(value)


def load_results(directory: Path = RESULTS) -> Dict[str, Dict[str, Any]]:
    """Every ``<name>.json`` of ``directory``, by name."""
    out = {}
    for path in sorted(Path(directory).glob("*.json")):
        doc = json.loads(path.read_text(encoding="utf-8"))
        out[doc.get("name", path.stem)] = doc
    return out


def describe_machine(machine: Mapping[str, Any]) -> str:
    """``AMD EPYC, 2 cores, Python 3.11.7; numpy 2.4.6, OpenCV 5.0.0, ...``."""
    versions = ", ".join(f"{k} {v}" for k, v in machine.get("versions", {}).items() if v)
    return f"{machine.get('cpu')}, {machine.get('cores')} cores, Python {machine.get('python')}; {versions}"


def wall_times_line(results: Mapping[str, Mapping[str, Any]], names: Sequence[str], suite: Sequence[str]) -> str:
    """``Wall time of each benchmark ...: `verify` 3.1 min, ...; the suite 27.5 min`` (from the
    ``wall_s`` that ``run.py`` records), or "" when none is recorded."""
    timed = [n for n in names if results[n].get("wall_s") is not None and not results[n].get("quick")]
    if not timed:
        return ""
    parts = ", ".join(f"`{n}` {results[n]['wall_s'] / 60:.1f} min" for n in timed)
    line = f"Wall time of each benchmark's last full run (its whole process, data generation included): {parts}."
    in_suite = [n for n in suite if n in results]
    if in_suite and all(n in timed for n in in_suite):
        total = sum(results[n]["wall_s"] for n in in_suite)
        listed = ", ".join(f"`{n}`" for n in in_suite)
        line += f" The suite (`make benchmark`: {listed}) sums to **{total / 60:.1f} min**."
    return line


def render_table(results: Mapping[str, Mapping[str, Any]], order: Sequence[str] = (),
                 suite: Sequence[str] = ()) -> str:
    """The benchmark block: machine line(s), one table of every benchmark's summary rows, setups,
    wall times."""
    names = [n for n in order if n in results] + sorted(n for n in results if n not in order)
    machines = {n: describe_machine(results[n].get("machine", {})) for n in names}
    lines = []
    if len(set(machines.values())) == 1:
        lines.append(f"Measured on {next(iter(machines.values()))}.")
    else:
        lines += [f"`{n}` measured on {m}." for n, m in machines.items()]
    quick = [n for n in names if results[n].get("quick")]
    if quick:
        lines.append("Quick runs (`--quick`: smaller inputs, fewer repeats, indicative only): "
                     + ", ".join(f"`{n}`" for n in quick) + ".")
    lines += ["", "| benchmark | measurement | result |", "|---|---|---|"]
    for n in names:
        for i, row in enumerate(results[n].get("summary", [])):
            lines.append(f"| {f'`{n}`' if i == 0 else ''} | {row['measurement']} | {row['result']} |")
    lines.append("")
    for n in names:
        machine = results[n].get("machine", {})
        contended = machine.get("timed_runs", {}).get("contended_timings", 0)
        share = machine.get("other_processes_cpu_share")
        busy = (f" (**{contended} timings measured while other processes were busy**: other processes took "
                f"{share or 0:.0%} of the CPU during the run)") if contended else ""
        lines.append(f"* `{n}` (`{results[n].get('command', '')}`): {results[n].get('setup', '')}{busy}")
    wall = wall_times_line(results, names, suite)
    if wall:
        lines += ["", wall]
    return "\n".join(lines)


def read_block(text: str, markers: Tuple[str, str] = (START, END), name: str = "the file") -> str:
    """The content between ``markers`` (the benchmark table's by default), without them."""
    first, last = markers
    start, end = text.find(first), text.find(last)
    if start < 0 or end < start:
        raise ValueError(f"{name} has no {first} ... {last} block")
    return text[start + len(first):end].strip("\n")


def replace_block(text: str, content: str, markers: Tuple[str, str] = (START, END)) -> str:
    """``text`` with the content between ``markers`` replaced (the rest untouched)."""
    read_block(text, markers)
    start, end = text.find(markers[0]) + len(markers[0]), text.find(markers[1])
    return f"{text[:start]}\n{content}\n{text[end:]}"


def update_block(path: Path, markers: Tuple[str, str], block: str, check: bool = False) -> bool:
    """Write ``block`` between ``markers`` in ``path`` (README.md or a docs/ file), the rest of
    the file untouched: the one writer of every generated block.

    Returns:
        True when the block was already current; with ``check``, nothing is written.

    Raises:
        ValueError: ``path`` has no such block.
    """
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    if read_block(text, markers, path.name) == block:
        return True
    if not check:
        path.write_text(replace_block(text, block, markers), encoding="utf-8")
    return False


def pair_ap(inliers: Sequence[int], positive: Sequence[bool]) -> float:
    """Average precision of the positive pairs when all pairs are ranked by inliers (stable)."""
    import numpy as np

    order = np.argsort(-np.asarray(inliers), kind="stable")
    rel = np.asarray(positive, bool)[order]
    if not rel.any():
        return 0.0
    hits = np.cumsum(rel)
    return float(np.mean(hits[rel] / (np.flatnonzero(rel) + 1)))


def update_benchmark_table(check: bool = False, doc: Path = BENCHMARKS_DOC, results_dir: Path = RESULTS,
                           order: Optional[Sequence[str]] = None, suite: Optional[Sequence[str]] = None) -> bool:
    """Rewrite the benchmark block of ``docs/benchmarks.md`` from ``results/*.json`` (rows in
    the order of :data:`BENCHMARKS`, the wall times of :data:`SUITE` summed).

    Returns:
        True when the block was already current; with ``check``, nothing is written.
    """
    block = render_table(load_results(results_dir), list(BENCHMARKS) if order is None else order,
                         SUITE if suite is None else suite)
    return update_block(doc, (START, END), block, check)


def render_methods(doc: Mapping[str, Any]) -> str:
    """The method-comparison block from a ``methods.json`` document (``bench_methods.py``)."""
    from landmark_retrieval.compare import Row, format_table

    figures = doc["figures"]
    rows = [Row(**r) for r in figures["rows"]]
    machine = doc.get("machine", {})
    share = machine.get("other_processes_cpu_share")
    busy = (f"; other processes took {share:.0%} of the CPU meanwhile, so the times are inflated"
            if share and share > 0.05 else "")
    earlier = figures.get("earlier", [])
    runs = "; ".join((f"`{e['command']}`, " if e.get("command") else "") + str(e.get("created") or "")[:10]
                     for e in earlier)
    merged = (f"; the rows of the methods not named in that command are from earlier runs ({runs}; `--merge`; "
              "an empty cell: not measured then)" if earlier else "")
    lines = [format_table(rows, figures["datasets"]), "",
             f"*`{doc['command']}`{' (quick: demo only, fewer methods)' if doc.get('quick') else ''}, "
             f"{doc['created'][:10]}, {machine.get('cores')} cores{busy}{merged}. GAP and mAP@100: global-only → "
             "verified (one value: global only). ms / image: the extract step per database + test image "
             "(codebook / vocabulary / GMM fitting included, model loading excluded). bytes / image: global "
             "descriptor + local descriptors, as stored (float32 RootSIFT, 32-byte ORB; ASMK*: its index per "
             "database image).*"]
    return "\n".join(lines)


def update_methods_table(check: bool = False, doc: Path = METHODS_DOC, result: Optional[Path] = None) -> bool:
    """Rewrite the method block of ``docs/comparing-methods.md`` from ``results/methods.json``;
    True when already current (or when there is no result yet). With ``check`` nothing is written."""
    path = result or result_path("methods")
    if not path.is_file():
        return True
    block = render_methods(json.loads(path.read_text(encoding="utf-8")))
    return update_block(doc, METHODS_MARKERS, block, check)
