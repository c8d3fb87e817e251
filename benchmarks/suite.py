"""Shared helpers of the benchmark suite: machine description, medians, JSON results, README table.

Every benchmark script (``bench_*.py``) measures, then calls :func:`write_result`, which writes
``benchmarks/results/<name>.json``: the figures, a few summary rows for the README, the
command that produced them and the machine (CPU model and cores, versions of numpy, OpenCV,
pydegensac, faiss, TensorFlow). ``python benchmarks/run.py`` runs them and rewrites the table in
README.md between ``<!-- benchmarks:start -->`` and ``<!-- benchmarks:end -->`` from those files
(:func:`update_readme`); nothing in that block is typed by hand.
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
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RESULTS = HERE / "results"
README = REPO / "README.md"
START, END = "<!-- benchmarks:start -->", "<!-- benchmarks:end -->"

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
        rows: ``(measurement, result)`` pairs for the README table.
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
    """The README block: machine line(s), one table of every benchmark's summary rows, setups,
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


def read_block(text: str, markers: Tuple[str, str] = (START, END)) -> str:
    """The README content between ``markers`` (the benchmark table's by default), without them."""
    first, last = markers
    start, end = text.find(first), text.find(last)
    if start < 0 or end < start:
        raise ValueError(f"README.md has no {first} ... {last} block")
    return text[start + len(first):end].strip("\n")


def replace_block(text: str, content: str, markers: Tuple[str, str] = (START, END)) -> str:
    """``text`` with the content between ``markers`` replaced (the rest untouched)."""
    read_block(text, markers)
    start, end = text.find(markers[0]) + len(markers[0]), text.find(markers[1])
    return f"{text[:start]}\n{content}\n{text[end:]}"


def pair_ap(inliers: Sequence[int], positive: Sequence[bool]) -> float:
    """Average precision of the positive pairs when all pairs are ranked by inliers (stable)."""
    import numpy as np

    order = np.argsort(-np.asarray(inliers), kind="stable")
    rel = np.asarray(positive, bool)[order]
    if not rel.any():
        return 0.0
    hits = np.cumsum(rel)
    return float(np.mean(hits[rel] / (np.flatnonzero(rel) + 1)))


def update_readme(order: Sequence[str] = (), check: bool = False, readme: Path = README,
                  results_dir: Path = RESULTS, suite: Sequence[str] = ()) -> bool:
    """Rewrite README.md's benchmark block from ``results/*.json``.

    Returns:
        True when the block was already current; with ``check``, nothing is written.
    """
    text = readme.read_text(encoding="utf-8")
    block = render_table(load_results(results_dir), order, suite)
    if read_block(text) == block:
        return True
    if not check:
        readme.write_text(replace_block(text, block), encoding="utf-8")
    return False
