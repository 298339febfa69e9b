"""Timing helpers and the result format shared by the benchmarks."""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

RESULTS_DIR = Path(__file__).resolve().parent / "results"


@dataclass
class Size:
    """The size of a benchmark run: `full` for the published page, `quick` for minutes, `tiny` for tests."""

    name: str
    train_size: int | None  # None: all 48,000 training images
    repeats: int
    n_epochs: int
    n_codes: int  # latent points for exploration timings
    val_fraction: float = 0.2  # share of the training images held out; 0.2 is the models' default
    n_samples: int = 10_000  # generated and test images behind each sample score


SIZES = {
    "full": Size("full", None, 3, 5, 10_000),
    "quick": Size("quick", 8_192, 3, 1, 2_000),
    # Validation and sample scores on 10,000 images would dominate the seconds of a tiny run.
    "tiny": Size("tiny", 512, 1, 1, 200, val_fraction=0.02, n_samples=500),
}


@dataclass
class Timing:
    """The median and spread of repeated measurements, in seconds."""

    median: float
    low: float
    high: float
    n: int

    @classmethod
    def of(cls, samples: list[float]) -> Timing:
        return cls(statistics.median(samples), min(samples), max(samples), len(samples))

    def text(self, unit: str = "s") -> str:
        return f"{self.median:.2f} {unit} ({self.low:.2f}–{self.high:.2f}, n={self.n})"


@dataclass
class Result:
    """One benchmark's table, notes and the conditions it ran under."""

    name: str
    title: str
    columns: list[str]
    rows: list[list[str]]
    notes: list[str] = field(default_factory=list)
    size: str = "full"
    machine: dict[str, Any] = field(default_factory=dict)
    measured_at: str = ""

    def save(self, directory: Path = RESULTS_DIR) -> Path:
        directory.mkdir(parents=True, exist_ok=True)
        self.machine = self.machine or machine_description()
        self.measured_at = self.measured_at or time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        path = directory / f"{self.name}.json"
        path.write_text(json.dumps(asdict(self), indent=2) + "\n")
        return path

    @classmethod
    def load(cls, path: Path) -> Result:
        return cls(**json.loads(path.read_text()))

    def markdown(self) -> str:
        lines = [f"## {self.title}", "",
                 f"Measured {self.measured_at} at size `{self.size}` on {describe_machine(self.machine)}.", ""]
        lines.append("| " + " | ".join(self.columns) + " |")
        lines.append("| " + " | ".join("---" for _ in self.columns) + " |")
        lines.extend("| " + " | ".join(row) + " |" for row in self.rows)
        if self.notes:
            lines.append("")
            lines.extend(self.notes)
        return "\n".join(lines) + "\n"


def machine_description() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "python": platform.python_version(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def describe_machine(machine: dict[str, Any]) -> str:
    text = (f"{machine.get('cpu', '?')}, {machine.get('cores', '?')} cores, "
            f"{machine.get('torch_threads', '?')} torch threads, torch {machine.get('torch', '?')}")
    if machine.get("cuda"):
        text += f", GPU {machine['cuda']}"
    return text


def timed(function: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    value = function()
    return time.perf_counter() - started, value


def interleaved(functions: dict[str, Callable[[], Any]], repeats: int) -> dict[str, list[float]]:
    """Time each function `repeats` times, alternating them so machine noise hits all alike."""
    samples: dict[str, list[float]] = {name: [] for name in functions}
    for _ in range(repeats):
        for name, function in functions.items():
            seconds, _ = timed(function)
            samples[name].append(seconds)
    return samples


def ratio_text(numerator: list[float], denominator: list[float]) -> str:
    """Format the median of per-repeat ratios with their range, because pairs measured together share the noise."""
    ratios = [a / b for a, b in zip(numerator, denominator)]
    return f"{statistics.median(ratios):.3f} ({min(ratios):.3f}–{max(ratios):.3f})"


def median_ratio(numerator: list[float], denominator: list[float]) -> float:
    return statistics.median(a / b for a, b in zip(numerator, denominator))
