"""Peak memory of the extract step on one huge photograph (bounded decoding, ``extract.max_pixels``).

Builds a small demo dataset plus one 12000 x 12000 JPEG test image (``--quick``: 4000 x 4000,
still over the 8 MP cap), runs ``landmark-retrieval extract`` on it in a child process and
reports that process's peak RSS and wall time (median of ``--repeats`` runs), in
``benchmarks/results/memory.json``. ``--uncapped`` also runs it with ``extract.max_pixels=none``
(the behaviour without bounded decoding: needs more than 20 GB of RAM at 12000 px).

    python benchmarks/bench_memory.py [--quick] [--side 12000] [--uncapped] [--out FILE]
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from suite import machine_info, write_result


def peak_of(cmd) -> dict:
    """Run ``cmd`` in a child of a fresh probe process: its own peak RSS, not ours."""
    probe = ("import resource, subprocess, sys, time; t = time.perf_counter(); "
             "r = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL); "
             "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, time.perf_counter() - t, r.returncode)")
    out = subprocess.run([sys.executable, "-c", probe, *cmd], capture_output=True, text=True, check=True)
    rss_kb, seconds, code = out.stdout.split()
    return {"peak_rss_mb": round(int(rss_kb) / 1024, 1), "seconds": round(float(seconds), 2),
            "exit_code": int(code)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a 4000 x 4000 JPEG")
    parser.add_argument("--side", type=int, help="side of the square test JPEG (default 12000; --quick 4000)")
    parser.add_argument("--uncapped", action="store_true", help="also run without max_pixels (> 20 GB RAM)")
    parser.add_argument("--repeats", type=int, default=1, help="runs of each setting (default 1: peak RSS is stable)")
    parser.add_argument("--out", type=Path, help="JSON file (default benchmarks/results/memory.json)")
    args = parser.parse_args(argv)
    side = args.side or (4000 if args.quick else 12000)
    started = machine_info()

    import numpy as np
    from PIL import Image

    from landmark_retrieval.demo import DemoSpec, build_demo_dataset, load_photo

    with tempfile.TemporaryDirectory() as tmp:
        data = build_demo_dataset(Path(tmp) / "data", DemoSpec(train_views=1, test_views=1, distractor_views=0))
        t0 = time.perf_counter()
        big = Image.fromarray(np.asarray(load_photo("astronaut"))).resize((1500, 1500), Image.BILINEAR)
        big = big.resize((side, side), Image.BILINEAR)
        path = data / "test" / "h" / f"huge{side:012d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        big.save(path, quality=85)
        del big
        results = {"image": f"{side}x{side} JPEG", "file_mb": round(path.stat().st_size / 2**20, 1),
                   "make_image_s": round(time.perf_counter() - t0, 1), "repeats": args.repeats, "runs": {}}
        settings = ["default (8000000)"] + (["none"] if args.uncapped else [])
        for max_pixels in settings:
            runs = []
            for r in range(max(1, args.repeats)):
                work = Path(tmp) / f"work-{len(results['runs'])}-{r}"
                cmd = [sys.executable, "-m", "landmark_retrieval", "-q", "extract", "--data", str(data),
                       "--work", str(work), "--preset", "demo"]
                if max_pixels == "none":
                    cmd += ["--set", "extract.max_pixels=none"]
                runs.append(peak_of(cmd))
            results["runs"][f"max_pixels={max_pixels}"] = {
                "peak_rss_mb": statistics.median(r["peak_rss_mb"] for r in runs),
                "seconds": statistics.median(r["seconds"] for r in runs),
                "exit_code": max(r["exit_code"] for r in runs),
            }
    results["python"] = sys.version.split()[0]
    rows = [(f"extract step, one {side} x {side} JPEG, `extract.max_pixels`: {k.split('=', 1)[1]}",
             f"peak RSS {v['peak_rss_mb'] / 1024:.1f} GB, {v['seconds']:.1f} s"
             + ("" if v["exit_code"] == 0 else f" (exit status {v['exit_code']})"))
            for k, v in results["runs"].items()]
    setup = ("peak resident memory of `landmark-retrieval extract` (classical backend, `demo` preset) in a child "
             "process, on a small demo dataset plus one huge test photograph")
    write_result("memory", setup, rows, results, args.quick, args.out, started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
