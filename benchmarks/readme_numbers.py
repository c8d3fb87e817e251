"""Regenerate the demo scores in README.md from a run of the demo.

The README shows them between ``<!-- demo-numbers:start -->`` and ``<!-- demo-numbers:end -->``;
this script runs the demo (the same as ``landmark-retrieval demo``: preset ``demo`` on the
embedded demo dataset, deterministic) in a temporary folder and rewrites that block::

    python benchmarks/readme_numbers.py            # or: make readme-numbers
    python benchmarks/readme_numbers.py --check    # exit status 1 when the README is stale

``tests/test_readme.py`` checks that the block matches what the demo produces.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Dict, Optional, Sequence

README = Path(__file__).resolve().parents[1] / "README.md"
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
    start, end = text.find(START), text.find(END)
    if start < 0 or end < start:
        raise ValueError(f"README.md has no {START} ... {END} block")
    return text[start + len(START):end].strip("\n")


def replace_block(text: str, content: str) -> str:
    """``text`` with the content between the markers replaced."""
    read_block(text)  # raises without the markers
    start, end = text.find(START) + len(START), text.find(END)
    return f"{text[:start]}\n{content}\n{text[end:]}"


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
    text = README.read_text(encoding="utf-8")
    if read_block(text) == block:
        print(f"{README.name} is up to date:\n{block}")
        return 0
    if args.check:
        print(f"{README.name} is stale; the demo gives:\n{block}", file=sys.stderr)
        return 1
    README.write_text(replace_block(text, block), encoding="utf-8")
    print(f"Updated {README}:\n{block}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
