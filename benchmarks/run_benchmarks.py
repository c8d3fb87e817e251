"""Run every benchmark with its default settings (``make benchmark``)."""
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent

for script in ("bench_verify.py", "bench_retrieve.py", "bench_delg_extract.py", "bench_embedding.py",
               "bench_memory.py"):
    path = HERE / script
    if path.is_file():
        print(f"== {script}", flush=True)
        subprocess.run([sys.executable, str(path)], check=True)
