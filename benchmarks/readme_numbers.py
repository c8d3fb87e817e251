"""Regenerate the demo scores in README.md from a run of the demo.

The README shows them between ``<!-- demo-numbers:start -->`` and ``<!-- demo-numbers:end -->``;
this script runs the demo (the same as ``landmark-retrieval demo``: preset ``demo`` on the
embedded demo dataset, deterministic) in a temporary folder and rewrites that block::

    python benchmarks/readme_numbers.py            # or: make readme-numbers
    python benchmarks/readme_numbers.py --check    # exit status 1 when the README is stale

``tests/test_readme.py`` checks that the block matches what the demo produces. The block stays in
README.md (the newcomer's first numbers); ``suite.update_block`` writes it, as every generated block.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Dict, Optional, Sequence

import suite
from suite import README

START, END = "<!-- demo-numbers:start -->", "<!-- demo-numbers:end -->"


def render(metrics: Dict[str, float]) -> str:
    """The block's content: the demo's GAP and mAP@100, global-only and verified."""
    return "\n".join([
        "| `make demo` | global descriptor only | re-ranked by DEGENSAC |",
        "|---|---|---|",
        f"| GAP | {metrics['global_gap']:.4f} | {metrics['verified_gap']:.4f} |",
        f"| mAP@100 | {metrics['global_map100']:.4f} | {metrics['verified_map100']:.4f} |",
    ])


def read_block(text: str) -> str:
    """The content between the markers (without them)."""
    return suite.read_block(text, (START, END), "README.md")


def replace_block(text: str, content: str) -> str:
    """``text`` with the content between the markers replaced."""
    return suite.replace_block(text, content, (START, END))


def demo_metrics(data: Optional[Path] = None, work: Optional[Path] = None) -> Dict[str, float]:
    """Run the demo (in a temporary folder unless ``data``/``work`` are given) and score it."""
    from landmark_retrieval.demo import run_demo

    with tempfile.TemporaryDirectory(prefix="readme_numbers_") as tmp:
        result = run_demo(data or Path(tmp) / "data", work or Path(tmp) / "work", Path(tmp) / "submission.csv")
    if not result.metrics:
        raise RuntimeError(f"The demo run was not scored: {result.score_error}")
    return result.metrics


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description="Rewrite the demo scores in README.md from a run of the demo.")
    parser.add_argument("--check", action="store_true", help="only compare; exit status 1 when README.md is stale")
    parser.add_argument("--data", type=Path, help="demo dataset folder to reuse (default: a temporary one)")
    parser.add_argument("--work", type=Path, help="work directory to reuse (default: a temporary one)")
    args = parser.parse_args(argv)
    block = render(demo_metrics(args.data, args.work))
    current = suite.update_block(README, (START, END), block, check=args.check)
    if current:
        print(f"{README.name} is up to date:\n{block}")
        return 0
    if args.check:
        print(f"{README.name} is stale; the demo gives:\n{block}", file=sys.stderr)
        return 1
    print(f"Updated {README}:\n{block}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
