"""Kept for old commands: the same as ``python benchmarks/run.py`` (the benchmark suite, ``make benchmark``)."""
import sys

from run import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
