"""Ablation of NuoNuo's recall mechanisms on the quality benchmark.

Runs the quality benchmark's default NuoNuo system once as configured and once
with each mechanism switched off (or, for the settle, on), all from one shared
embedding cache, and prints one row per variant with its effect on every
LoCoMo category and both MuSiQue depths.

Run: ``python -m benchmarks.ablation --data ../shared/data [--cache FILE]``
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from benchmarks import quality
from benchmarks.common import default_data_dir, machine_description

# Each variant: its label and the --set overrides that produce it.
VARIANTS: list[tuple[str, list[str]]] = [
    ("default", []),
    ("single-hop (hops=1)", ["hops=1"]),
    ("no lexical cues (lexical_weight=0)", ["lexical_weight=0"]),
    ("no boost for a subject the query names (subject_factor=1)", ["subject_factor=1"]),
    ("named subject kept in the query vector (subject_projection=0)", ["subject_projection=0"]),
    ("20 direct hits ranked instead of 40 (direct_candidates=20)", ["direct_candidates=20"]),
    ("no sentence cues (sentence_cues=false)", ["sentence_cues=false"]),
    ("sentence cues ranked half way to the best cue (sentence_cue_weight=0.5)", ["sentence_cue_weight=0.5"]),
    ("no session links (links.session=0)", ["links.session=0"]),
    ("no name links (links.entity=0)", ["links.entity=0"]),
    ("rare-word links on (links.word=0.5)", ["links.word=0.5"]),
    ("hops not steered by the query (hop_gate=0)", ["hop_gate=0"]),
    ("all link kinds share one pool (spread_by_kind=false)", ["spread_by_kind=false"]),
    ("name links not steered by the query (bridge_names=false)", ["bridge_names=false"]),
    ("common nouns link as names (link_common_nouns=true)", ["link_common_nouns=true"]),
    ("settle to the fixed point (settle_weight=0.5)", ["settle_weight=0.5"]),
    ("settle only (settle_weight=1)", ["settle_weight=1"]),
]

COLUMNS = [
    ("locomo", "all@10", "LoCoMo all"),
    ("locomo", "multi-hop@10", "multi-hop"),
    ("locomo", "temporal@10", "temporal"),
    ("locomo", "open-domain@10", "open-domain"),
    ("locomo", "single-hop@10", "single-hop"),
    ("musique", "multi-hop@2", "MuSiQue @2"),
    ("musique", "multi-hop@5", "MuSiQue @5"),
]


def run_variant(data: str, cache: str, overrides: list[str]) -> dict[str, dict[str, float]]:
    """Run the default NuoNuo system with ``overrides``; returns task -> metric -> value."""
    with tempfile.TemporaryDirectory() as out:
        argv = ["--data", data, "--out", out, "--systems", "nuonuo", "--cache", cache]
        for override in overrides:
            argv += ["--set", override]
        code = quality.main(argv)
        if code != 0:
            raise SystemExit(f"the quality benchmark failed for {overrides}")
        summary = json.loads((Path(out) / "results.json").read_text(encoding="utf-8"))
    tasks = summary["results"]
    return {task: next(iter(systems.values())) for task, systems in tasks.items()}


def lookup(values: dict[str, dict[str, float]], task: str, key: str) -> float | None:
    for name, metrics in values.items():
        if name.lower().startswith(task):
            return metrics.get(key)
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(default_data_dir()), help="data folder (default: %(default)s)")
    parser.add_argument("--cache", default="benchmarks/out/quality-cache.npz", help="embedding cache (default: %(default)s)")
    parser.add_argument("--out", default="benchmarks/out/ablation.md", help="Markdown table to write (default: %(default)s)")
    args = parser.parse_args(argv)

    started = time.perf_counter()
    Path(args.cache).parent.mkdir(parents=True, exist_ok=True)
    rows = []
    for label, overrides in VARIANTS:
        print(f"== {label}", file=sys.stderr, flush=True)
        rows.append((label, run_variant(args.data, args.cache, overrides)))

    default = rows[0][1]
    header = "| variant | " + " | ".join(title for _, _, title in COLUMNS) + " |"
    lines = [header, "|:---|" + "---:|" * len(COLUMNS)]
    for label, values in rows:
        cells = []
        for task, key, _ in COLUMNS:
            value = lookup(values, task, key)
            base = lookup(default, task, key)
            if value is None:
                cells.append("-")
            elif label == "default" or base is None:
                cells.append(f"{value:.3f}")
            else:
                cells.append(f"{value:.3f} ({value - base:+.3f})")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    text = "\n".join(lines) + f"\n\n{time.perf_counter() - started:.0f} s on {machine_description()}\n"
    print(text)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
