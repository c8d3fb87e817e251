"""Peak memory of the extract step on one huge photograph (bounded decoding, ``extract.max_pixels``).

Builds a small demo dataset plus one 12000 x 12000 JPEG test image, runs
``landmark-retrieval extract`` on it in a child process and reports that process's peak RSS
and wall time, as JSON. ``--uncapped`` also runs it with ``extract.max_pixels=none`` (the
behaviour without bounded decoding: needs more than 20 GB of RAM).

    python benchmarks/bench_memory.py [--side 12000] [--uncapped] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def peak_of(cmd) -> dict:
    """Run ``cmd`` in a child of a fresh probe process: its own peak RSS, not ours."""
    probe = ("import resource, subprocess, sys, time; t = time.perf_counter(); "
             "r = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL); "
             "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, time.perf_counter() - t, r.returncode)")
    out = subprocess.run([sys.executable, "-c", probe, *cmd], capture_output=True, text=True, check=True)
    rss_kb, seconds, code = out.stdout.split()
    return {"peak_rss_mb": round(int(rss_kb) / 1024, 1), "seconds": round(float(seconds), 2),
            "exit_code": int(code)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--side", type=int, default=12000, help="side of the square test JPEG (pixels)")
    parser.add_argument("--uncapped", action="store_true", help="also run without max_pixels (> 20 GB RAM)")
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    args = parser.parse_args()

    import numpy as np
    from PIL import Image

    from landmark_retrieval.demo import DemoSpec, build_demo_dataset, load_photo

    with tempfile.TemporaryDirectory() as tmp:
        data = build_demo_dataset(Path(tmp) / "data", DemoSpec(train_views=1, test_views=1, distractor_views=0))
        t0 = time.perf_counter()
        big = Image.fromarray(np.asarray(load_photo("astronaut"))).resize((1500, 1500), Image.BILINEAR)
        big = big.resize((args.side, args.side), Image.BILINEAR)
        path = data / "test" / "h" / f"huge{args.side:012d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        big.save(path, quality=85)
        del big
        results = {"image": f"{args.side}x{args.side} JPEG", "file_mb": round(path.stat().st_size / 2**20, 1),
                   "make_image_s": round(time.perf_counter() - t0, 1), "runs": {}}
        settings = ["default (8000000)"] + (["none"] if args.uncapped else [])
        for max_pixels in settings:
            work = Path(tmp) / f"work-{len(results['runs'])}"
            cmd = [sys.executable, "-m", "landmark_retrieval", "-q", "extract", "--data", str(data),
                   "--work", str(work), "--preset", "demo"]
            if max_pixels == "none":
                cmd += ["--set", "extract.max_pixels=none"]
            results["runs"][f"max_pixels={max_pixels}"] = peak_of(cmd)
    results["python"] = sys.version.split()[0]
    text = json.dumps(results, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text)


if __name__ == "__main__":
    main()
