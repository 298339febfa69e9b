"""Start a sweep: prepare the study and its parent run, then run one or several workers."""

from __future__ import annotations

import logging
import multiprocessing
import os
from typing import Any

from research.errors import ResearchError
from research.sweeps.parent import ParentReporter
from research.sweeps.study import SweepJob, count_states, n_finished
from research.sweeps.worker import prepare, run_worker

logger = logging.getLogger(__name__)


def run_sweep(job: SweepJob) -> dict[str, int]:
    """Run `job` until its study has `job.n_trials` finished trials; return the trial counts by state.

    The parent run ends FINISHED when the target is reached, and KILLED when
    the timeout or an interrupt stopped the sweep first. Either way its table,
    best values and plots are refreshed last.
    """
    study, parent = prepare(job)
    counts = count_states(study)
    logger.info("Study '%s': %d of %d trials finished; %d worker(s), %d epochs a trial", job.study_name,
                n_finished(counts), job.n_trials, job.n_workers, job.n_epochs)
    finished = False
    try:
        if job.n_workers == 1:
            run_worker(job)
        else:
            run_worker_processes(job)
        counts = count_states(study)
        finished = n_finished(counts) >= job.n_trials
    finally:
        ParentReporter(parent).refresh(study, figures=True)
        parent.set_tags({"research.sweep_state": "complete" if finished else "incomplete"})
        parent.end("FINISHED" if finished else "KILLED")
    return counts


def run_worker_processes(job: SweepJob) -> None:
    """Run `job.n_workers` spawned worker processes on the study and wait for them."""
    context = multiprocessing.get_context("spawn")
    processes = [context.Process(target=worker_main, args=(job, logging.getLogger("research").level),
                                 name=f"sweep-worker-{index}") for index in range(job.n_workers)]
    for process in processes:
        process.start()
    try:
        for process in processes:
            process.join()
    except KeyboardInterrupt:
        # The terminal sent SIGINT to the workers too; each ends its trial KILLED.
        for process in processes:
            process.join()
        raise
    failed = [f"{process.name} (exit code {process.exitcode})" for process in processes if process.exitcode]
    if failed:
        raise ResearchError(f"sweep workers failed: {', '.join(failed)}; their errors are in the log above. "
                            "Run the same command again to resume the study")


def worker_main(job: SweepJob, log_level: int) -> None:
    """Entry point of a spawned worker: set up logging and threads, then work on the study."""
    import torch

    from research.cli import configure_logging

    configure_logging(verbose=log_level <= logging.DEBUG, quiet=log_level >= logging.WARNING)
    # Workers share the cores; without this each would start one thread per core.
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // job.n_workers))
    run_worker(job)


def study_overview(study: Any) -> dict[str, Any]:
    """Summarise a study for `research sweep status`: counts, best trial and running trials."""
    from research.sweeps.parent import best_trial

    trials = study.get_trials(deepcopy=False)
    return {"counts": count_states(study), "best": best_trial(study),
            "running": [trial for trial in trials if trial.state.name == "RUNNING"]}
