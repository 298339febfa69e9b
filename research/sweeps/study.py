"""Open a sweep's Optuna study, check it still matches its file, and find its parent run."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any

from research.errors import UsageError
from research.sweeps.definition import SweepDefinition
from research.sweeps.storage import DEFAULT_HEARTBEAT_S, make_storage, redact, sqlite_file

logger = logging.getLogger(__name__)

SPACE_ATTR = "research.search_space"
METRIC_ATTR = "research.objective"
SWEEP_ATTR = "research.sweep"
PARENT_ATTR = "research.mlflow_parent_run_id"
SOURCE_ATTR = "research.source"
RUN_ATTR = "mlflow_run_id"  # trial user attribute: the trial's MLflow run
STUDY_TAG = "research.study"
TRIAL_TAG = "research.trial_number"
ROLE_TAG = "research.sweep_role"
STATE_TAG = "research.trial_state"
FINISHED_STATES = ("COMPLETE", "PRUNED")


class SearchSpaceChangedError(UsageError):
    """The sweep file's search space differs from the one the study was started with."""


@dataclass
class SweepJob:
    """Everything one worker needs to work on a study; picklable, so it crosses `spawn`."""

    definition: SweepDefinition
    storage: str
    study_name: str
    n_trials: int
    n_epochs: int
    experiment: str
    timeout_s: float | None = None
    train_size: int | None = None
    device: str = "auto"
    seed: int = 0
    data_dir: str | None = None
    heartbeat_s: int = DEFAULT_HEARTBEAT_S
    parent_run_id: str | None = None
    n_workers: int = 1
    tags: dict[str, str] = field(default_factory=dict)
    # The trained model every trial starts from (`--from`), with the overrides and
    # tags it resolves to. The study stores it, so a resume reuses it.
    source: str | None = None
    source_overrides: dict[str, Any] = field(default_factory=dict)
    checked_failures: set[int] = field(default_factory=set)  # failed trials whose runs this worker has checked

    def resolve_source(self) -> None:
        """Check the source against the sweep's model and set the overrides and tags it brings."""
        from research.models import find_model_or_raise

        model_class = find_model_or_raise(self.definition.model)
        if self.source is None:
            if model_class.needs_source:
                raise UsageError(f"model {self.definition.model!r} of sweep {self.definition.name!r} starts "
                                 "from a trained model; pass --from RUN_ID, a checkpoint path or a models:/ URI")
            return
        setup = model_class.setup_from_source(self.source)
        self.source_overrides = dict(setup.overrides)
        self.tags = {**self.tags, **setup.tags}


def build_sampler(definition: SweepDefinition, trial_number: int = 0) -> Any:
    """Build the file's sampler, seeded with its seed plus `trial_number`.

    A sampler seeded once per process would draw the same first parameters
    again in every resumed session and in every parallel worker. The storage
    makes trial numbers unique, so seeding by them gives each trial its own
    draw and keeps a study reproducible.
    """
    import optuna

    options = dict(definition.sampler)
    kind, seed = options.pop("type"), options.pop("seed") + trial_number
    if kind == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed, **options)


def build_pruner(definition: SweepDefinition) -> Any:
    import optuna

    options = dict(definition.pruner)
    kind = options.pop("type")
    if kind == "none":
        return optuna.pruners.NopPruner()
    if kind == "median":
        return optuna.pruners.MedianPruner(**options)
    if kind == "percentile":
        return optuna.pruners.PercentilePruner(options.pop("percentile", 50.0), **options)
    return optuna.pruners.HyperbandPruner(max_resource=definition.n_epochs, **options)


def open_study(job: SweepJob, *, create: bool, check: bool = True) -> Any:
    """Load the job's study, or create it when `create`; a loaded study is checked against the file.

    Nothing is written to a study that exists when its search space or
    objective changed: `SearchSpaceChangedError` names each difference.
    """
    import optuna

    definition = job.definition
    database = sqlite_file(job.storage)
    if not create and database is not None and not database.is_file():
        # Opening would create an empty database file where the user expected a study.
        raise UsageError(f"no study {job.study_name!r}: the Optuna database {database} does not exist; start it "
                         f"with `research sweep run {definition.name}`, or name the database with --storage")
    storage = make_storage(job.storage, job.heartbeat_s)
    try:
        study = optuna.load_study(study_name=job.study_name, storage=storage,
                                  sampler=build_sampler(definition), pruner=build_pruner(definition))
    except KeyError:
        if not create:
            raise UsageError(f"no study {job.study_name!r} in {redact(job.storage)}; start it with "
                             f"`research sweep run {definition.name}`") from None
        if job.source is None:
            job.resolve_source()  # a model that needs --from fails here, before the study exists
        study = optuna.create_study(study_name=job.study_name, storage=storage, direction=definition.direction,
                                    sampler=build_sampler(definition), pruner=build_pruner(definition))
        study.set_user_attr(SPACE_ATTR, definition.space_dict())
        study.set_user_attr(METRIC_ATTR, {"metric": definition.metric, "direction": definition.direction})
        study.set_user_attr(SWEEP_ATTR, definition.name)
        if job.source is not None:
            study.set_user_attr(SOURCE_ATTR, job.source)
        logger.info("Created study '%s' in %s", job.study_name, redact(job.storage))
        return study
    if check:
        check_unchanged(study, job)
    adopt_source(study, job)
    return study


def adopt_source(study: Any, job: SweepJob) -> None:
    """Give the job the study's stored source, and reject a different one because trials must compare."""
    stored = study.user_attrs.get(SOURCE_ATTR)
    if job.source is None or job.source == stored:
        job.source = stored
        return
    if stored is None:
        raise UsageError(f"study {job.study_name!r} in {redact(job.storage)} started without --from; its "
                         f"trials cannot switch to --from {job.source!r}. Start a new study with --study-name")
    raise UsageError(f"study {job.study_name!r} in {redact(job.storage)} started --from {stored!r}, not "
                     f"{job.source!r}; drop --from to continue it, or start a new study with --study-name")


def check_unchanged(study: Any, job: SweepJob) -> None:
    """Raise `SearchSpaceChangedError` when the file no longer describes the stored study."""
    definition = job.definition
    stored = study.user_attrs.get(SPACE_ATTR, {})
    current = definition.space_dict()
    changes = [f"{name}: {json.dumps(stored.get(name))} -> {json.dumps(current.get(name))}"
               for name in sorted(set(stored) | set(current)) if stored.get(name) != current.get(name)]
    objective = study.user_attrs.get(METRIC_ATTR, {})
    if objective and objective != {"metric": definition.metric, "direction": definition.direction}:
        changes.append(f"objective: {json.dumps(objective)} -> "
                       f"{json.dumps({'metric': definition.metric, 'direction': definition.direction})}")
    if not changes:
        return
    raise SearchSpaceChangedError(
        f"the search space of sweep {definition.name!r} ({definition.source}) changed since study "
        f"{job.study_name!r} started in {redact(job.storage)}:\n  " + "\n  ".join(changes) +
        f"\nStart a new study with --study-name (for example --study-name {job.study_name}-v2), "
        "or restore the file to continue this one.")


def count_states(study: Any) -> dict[str, int]:
    """Count the study's trials by state name (COMPLETE, PRUNED, FAIL, RUNNING, WAITING)."""
    counts: dict[str, int] = {}
    for trial in study.get_trials(deepcopy=False):
        counts[trial.state.name] = counts.get(trial.state.name, 0) + 1
    return counts


def n_finished(counts: dict[str, int]) -> int:
    return sum(counts.get(state, 0) for state in FINISHED_STATES)
