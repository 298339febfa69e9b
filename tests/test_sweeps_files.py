"""Sweep files: validation messages, lookup by name, and the changed-search-space check."""

from __future__ import annotations

from importlib.metadata import EntryPoint
from pathlib import Path

import optuna
import pytest
import yaml
from click.testing import CliRunner
from mlflow.tracking import MlflowClient

from registry import UnknownNameError
from research.cli import main
from research.sweeps import (
    SWEEPS,
    SweepFileError,
    find_sweep_or_raise,
    load_sweep_file,
    register_sweep_folders,
    sweep_folders,
)
from research.sweeps.storage import redact, storage_url
from research.sweeps.study import SweepJob
from research.sweeps.worker import prepare
from tests.sweep_helpers import TINY_SWEEP, write_sweep

REPOSITORY = Path(__file__).resolve().parents[1]


def load_error(path: Path) -> SweepFileError:
    with pytest.raises(SweepFileError) as caught:
        load_sweep_file(path).check_model()
    return caught.value


def test_missing_key_named(tmp_path: Path) -> None:
    values = {key: value for key, value in TINY_SWEEP.items() if key != "n_epochs"}
    path = tmp_path / "no-epochs.yaml"
    path.write_text(yaml.safe_dump(values))
    error = load_error(path)
    assert str(path) in str(error)
    assert error.key == "n_epochs"
    assert "missing required key" in str(error)


def test_unknown_hyperparameter_named(tmp_path: Path) -> None:
    space = {**TINY_SWEEP["search_space"], "n_layers": {"type": "int", "low": 1, "high": 3}}
    path = write_sweep(tmp_path, "typo", search_space=space)
    error = load_error(path)
    assert str(path) in str(error)
    assert error.key == "search_space.n_layers"
    assert "not a hyperparameter of model 'ae'" in str(error)
    assert "latent_dim" in str(error)  # the valid names are listed


def test_low_above_high_named(tmp_path: Path) -> None:
    space = {**TINY_SWEEP["search_space"], "latent_dim": {"type": "int", "low": 9, "high": 3}}
    path = write_sweep(tmp_path, "reversed", search_space=space)
    error = load_error(path)
    assert str(path) in str(error)
    assert error.key == "search_space.latent_dim"
    assert "low (9) > high (3)" in str(error)


def test_unknown_pruner_named(tmp_path: Path) -> None:
    path = write_sweep(tmp_path, "asha", pruner={"type": "asha"})
    error = load_error(path)
    assert str(path) in str(error)
    assert error.key == "pruner.type"
    assert "unknown pruner 'asha'" in str(error)
    assert "median, percentile, hyperband" in str(error)


def test_log_range_needs_positive_low(tmp_path: Path) -> None:
    space = {**TINY_SWEEP["search_space"], "lr": {"type": "float", "low": 0.0, "high": 0.1, "log": True}}
    error = load_error(write_sweep(tmp_path, "log0", search_space=space))
    assert error.key == "search_space.lr.low"


def test_unregistered_model_fails_only_on_use(tmp_path: Path) -> None:
    path = write_sweep(tmp_path, "plugin", model="not-installed")
    definition = load_sweep_file(path)
    assert definition.model == "not-installed"
    with pytest.raises(SweepFileError, match="'not-installed' is not a registered model"):
        definition.check_model()


def test_shipped_sweeps_parse() -> None:
    for name in ("ae-reference", "vae-beta", "gan-lr"):
        definition = load_sweep_file(REPOSITORY / "sweeps" / f"{name}.yaml")
        assert definition.name == name
    reference = load_sweep_file(REPOSITORY / "sweeps" / "ae-reference.yaml")
    reference.check_model()
    space = reference.space_dict()
    assert space["n_channels"] == {"type": "int", "low": 4, "high": 12, "log": False}
    assert space["latent_dim"] == {"type": "int", "low": 2, "high": 10, "log": False}
    assert space["optimizer"]["choices"] == ["adam", "rmsprop", "sgd"]
    assert space["lr"] == {"type": "float", "low": 1e-5, "high": 0.1, "log": True}
    assert space["weight_decay"] == {"type": "float", "low": 1e-5, "high": 1.0, "log": True}
    assert (reference.n_epochs, reference.n_trials, reference.pruner["type"]) == (5, 100, "percentile")


def test_folders_include_checkout_and_cwd(workdir: Path) -> None:
    folders = [folder.resolve() for folder in sweep_folders()]
    assert REPOSITORY / "sweeps" in folders
    assert workdir.resolve() / "sweeps" in folders


def test_lookup_from_env_folder(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_sweep(workdir / "extra", "from-env")
    monkeypatch.setenv("RESEARCH_SWEEPS_DIR", str(workdir / "extra"))
    register_sweep_folders()
    assert find_sweep_or_raise("from-env").model == "ae"
    assert SWEEPS.find_or_raise("ae-reference").source.endswith("sweeps")


def test_lookup_from_entry_point() -> None:
    entry_point = EntryPoint(name="plugin-tiny", value="tests.sweep_helpers:PLUGIN_SWEEP", group="research.sweeps")
    SWEEPS.load_entry_point(entry_point)
    definition = find_sweep_or_raise("plugin-tiny")
    assert definition.n_trials == 7
    assert definition.source == "entry point 'plugin-tiny'"
    SWEEPS.remove("plugin-tiny")


def test_unknown_sweep_lists_names(workdir: Path) -> None:
    register_sweep_folders()
    with pytest.raises(UnknownNameError, match="ae-reference"):
        find_sweep_or_raise("no-such-sweep")


def test_list_shows_sweeps(workdir: Path) -> None:
    write_sweep(workdir / "extra", "listed")
    write_sweep(workdir / "extra", "broken", pruner={"type": "asha"})
    result = CliRunner().invoke(main, ["sweep", "list", "--sweeps-dir", str(workdir / "extra")])
    assert result.exit_code == 0, result.output
    assert "ae-reference" in result.output
    listed = next(line for line in result.output.splitlines() if line.startswith("listed"))
    assert "minimize val/loss" in listed
    assert "unknown pruner 'asha'" in result.output


def test_changed_space_rejected(workdir: Path) -> None:
    folder = workdir / "extra"
    definition = load_sweep_file(write_sweep(folder))
    storage = f"sqlite:///{workdir / 'optuna.db'}"
    job = SweepJob(definition=definition, storage=storage, study_name="tiny", n_trials=4, n_epochs=2,
                   experiment="sweep-tiny")
    prepare(job)  # the study and its parent run exist, as after a first start

    space = {**TINY_SWEEP["search_space"], "latent_dim": {"type": "int", "low": 2, "high": 8},
             "optimizer": {"type": "categorical", "choices": ["adam", "rmsprop"]}}
    write_sweep(folder, search_space=space)
    result = CliRunner().invoke(main, ["sweep", "run", "tiny", "--sweeps-dir", str(folder), "--storage", storage])

    assert result.exit_code == 2, result.output
    assert 'latent_dim: {"type": "int", "low": 2, "high": 4, "log": false} -> ' \
           '{"type": "int", "low": 2, "high": 8, "log": false}' in result.output
    assert 'optimizer: {"type": "categorical", "choices": ["adam", "sgd"]} -> ' \
           '{"type": "categorical", "choices": ["adam", "rmsprop"]}' in result.output
    assert "lr:" not in result.output
    assert "--study-name" in result.output
    study = optuna.load_study(study_name="tiny", storage=storage)
    assert study.trials == []
    assert study.user_attrs["research.search_space"]["latent_dim"]["high"] == 4
    client = MlflowClient()
    runs = client.search_runs([client.get_experiment_by_name("sweep-tiny").experiment_id])
    assert len(runs) == 1  # the parent only; no trial run was started


def test_status_of_missing_study(workdir: Path) -> None:
    folder = workdir / "extra"
    write_sweep(folder)
    result = CliRunner().invoke(main, ["sweep", "status", "tiny", "--sweeps-dir", str(folder)])
    assert result.exit_code == 2
    assert "no study 'tiny'" in result.output
    assert not (workdir / "optuna.db").exists()


def test_best_of_study_missing_from_existing_database(workdir: Path) -> None:
    folder = workdir / "extra"
    write_sweep(folder)
    optuna.create_study(study_name="other", storage=f"sqlite:///{workdir / 'optuna.db'}")
    result = CliRunner().invoke(main, ["sweep", "best", "tiny", "--sweeps-dir", str(folder)])
    assert result.exit_code == 2
    assert "no study 'tiny'" in result.output


def test_storage_password_redacted() -> None:
    assert redact("postgresql://research:secret@db-host:5432/optuna") == "postgresql://research:***@db-host:5432/optuna"
    assert redact("sqlite:///optuna.db") == "sqlite:///optuna.db"


def test_storage_url_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RESEARCH_OPTUNA_STORAGE", "sqlite:///elsewhere.db")
    assert storage_url() == "sqlite:///elsewhere.db"
    assert storage_url("sqlite:///given.db") == "sqlite:///given.db"
    monkeypatch.delenv("RESEARCH_OPTUNA_STORAGE")
    assert storage_url() == "sqlite:///optuna.db"
