"""Regenerate docs/presets.md and the README's list of presets from their one source,
``PRESETS`` (``make docs``).

Every preset is ``Preset(summary, description, settings)``; this script writes, between
``<!-- presets:start -->`` and ``<!-- presets:end -->`` in docs/presets.md, each preset's name, its
description and the settings it applies over the defaults, as the ``--set`` arguments that would
do the same (``key=value``, one a line), and between the same markers in README.md one line per
preset with its summary::

    python benchmarks/docs_presets.py            # or: make docs
    python benchmarks/docs_presets.py --check    # exit status 1 when either file is stale

``tests/test_readme.py`` checks that both blocks are current.
"""
from __future__ import annotations

import argparse
import sys
from typing import Any, Mapping, Optional, Sequence

from suite import DOCS, README, update_block

from landmark_retrieval.overrides import flatten, format_value
from landmark_retrieval.presets import PRESETS

PRESETS_DOC = DOCS / "presets.md"
START, END = "<!-- presets:start -->", "<!-- presets:end -->"


def render(presets: Mapping[str, Any]) -> str:
    """The block: one section per preset, in the order of ``PRESETS``."""
    lines = [f"{len(presets)} presets: " + ", ".join(f"[`{name}`](#{name})" for name in presets) + "."]
    for name, preset in presets.items():
        settings = flatten(preset.settings)
        lines += ["", f"### {name}", "", "> " + preset.description + ".", ""]
        if settings:
            lines += ["```", *(f"{key}={format_value(value)}" for key, value in settings.items()), "```"]
        else:
            lines.append("Changes no setting: the defaults.")
    return "\n".join(lines)


def render_list(presets: Mapping[str, Any]) -> str:
    """The README's block: one line per preset, ``* `name`: summary;`` (the last ends with ``.``)."""
    lines = [f"* `{name}`: {preset.summary};" for name, preset in presets.items()]
    return "\n".join(lines)[:-1] + "." if lines else ""


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description="Rewrite the presets in docs/presets.md from PRESETS.")
    parser.add_argument("--check", action="store_true", help="only compare; exit status 1 when the file is stale")
    args = parser.parse_args(argv)
    stale = []
    for path, block in ((PRESETS_DOC, render(PRESETS)), (README, render_list(PRESETS))):
        current = update_block(path, (START, END), block, check=args.check)
        state = "is current" if current else ("is stale: run `make docs`" if args.check else "rewritten")
        print(f"{path.name}: presets {state}", file=sys.stderr if args.check and not current else sys.stdout)
        stale += [] if current else [path]
    return 1 if args.check and stale else 0


if __name__ == "__main__":
    sys.exit(main())
