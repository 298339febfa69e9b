"""The benchmark code runs at a tiny size and produces its tables; no timing is asserted."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.__main__ import main


@pytest.fixture
def bench_paths(workdir: Path, with_real_data: Path) -> tuple[Path, Path]:
    return workdir / "results", workdir / "benchmarks.md"


def test_benchmarks_write_page(bench_paths: tuple[Path, Path]) -> None:
    results, page = bench_paths
    main(["--tiny", "--results-dir", str(results), "--page", str(page)])
    text = page.read_text()
    for title in ("Training loop", "Tracking overhead", "Latent exploration time", "Sweeps", "GPU",
                  "Result quality", "Sample quality"):
        assert f"## {title}" in text
    for name in ("training_loop", "tracking_overhead", "latent", "sweeps", "gpu", "quality", "samples"):
        assert (results / f"{name}.json").exists()
    assert "ratio to reference" in text
    assert "validation MSE" in text
    assert "`dcgan`, 1 epoch" in text


def test_unknown_benchmark_rejected(bench_paths: tuple[Path, Path]) -> None:
    results, page = bench_paths
    with pytest.raises(SystemExit) as caught:
        main(["--tiny", "--only", "nosuch", "--results-dir", str(results), "--page", str(page)])
    assert caught.value.code == 2
    assert not page.exists()
