"""Run the benchmarks and rewrite docs/benchmarks.md from every stored result."""

from __future__ import annotations

import argparse
import importlib
import logging
from pathlib import Path

from benchmarks.common import RESULTS_DIR, Result

BENCHMARKS = ("training_loop", "tracking_overhead", "latent", "sweeps", "gpu", "quality", "samples")
PAGE = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"

INTRO = """# Benchmarks

Speed and result quality of `research` against the reference notebook workflow, on
this project's development machine. Regenerate this page with

    python -m benchmarks            # every benchmark, full size (about an hour on 2 CPU cores)
    python -m benchmarks --quick    # every benchmark at a reduced size, a few minutes
    python -m benchmarks --only training_loop --quick

Each timing is the median of several repeats with the range in brackets; ratios are
the median of per-repeat ratios of runs measured alternately in one process, so
machine noise hits both sides alike.
"""


def write_page(results_dir: Path = RESULTS_DIR, page: Path = PAGE) -> Path:
    sections = [INTRO]
    for name in BENCHMARKS:
        path = results_dir / f"{name}.json"
        if path.exists():
            sections.append(Result.load(path).markdown())
    extra = page.parent / "benchmarks-notes.md"
    if extra.exists():
        sections.append(extra.read_text())
    page.parent.mkdir(parents=True, exist_ok=True)
    page.write_text("\n".join(sections))
    return page


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--only", help="comma-separated benchmarks to run: " + ", ".join(BENCHMARKS))
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_const", const="quick", dest="size", help="a few minutes")
    size.add_argument("--tiny", action="store_const", const="tiny", dest="size", help="seconds; for tests")
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR, help="where results are stored")
    parser.add_argument("--page", type=Path, default=PAGE, help="the Markdown page to rewrite")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    names = args.only.split(",") if args.only else list(BENCHMARKS)
    unknown = sorted(set(names) - set(BENCHMARKS))
    if unknown:
        parser.error(f"unknown benchmark {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}")
    for name in names:
        logging.info("Running benchmark %s (%s)", name, args.size or "full")
        result = importlib.import_module(f"benchmarks.{name}").run(args.size or "full")
        result.save(args.results_dir)
        print(result.markdown())
    print(f"Wrote {write_page(args.results_dir, args.page)}")


if __name__ == "__main__":
    main()
