from __future__ import annotations

import pytest
from click.testing import CliRunner
from mlflow.tracking import MlflowClient

from research.cli import main


def invoke(*args: str):
    return CliRunner().invoke(main, list(args))


def test_help_lists_commands() -> None:
    result = invoke("--help")
    assert result.exit_code == 0
    for command in ("run", "models", "data"):
        assert command in result.output


def test_models_lists_hyperparameters() -> None:
    result = invoke("models")
    assert result.exit_code == 0
    assert "ae" in result.output
    assert "model.latent_dim" in result.output
    assert "default 9" in result.output
    assert "train.lr" in result.output


@pytest.mark.parametrize("args,words", [
    (["run", "nosuchmodel"], ["unknown model 'nosuchmodel'", "ae"]),
    (["run", "ae", "-p", "depth=3"], ["depth", "unknown hyperparameter 'depth' for model 'ae'", "latent_dim"]),
    (["run", "ae", "-p", "latent_dim=0"], ["latent_dim", "must be >= 1"]),
    (["run", "ae", "-p", "latent_dim=two"], ["latent_dim", "must be an integer"]),
    (["run", "ae", "-p", "lr=-0.1"], ["lr", "must be > 0.0"]),
    (["run", "ae", "-p", "optimizer=lbfgs"], ["optimizer", "adam, adamw, rmsprop, sgd"]),
    (["run", "ae", "-p", "latent_dim"], ["name=value"]),
    (["run", "ae", "-p", "model.lr=0.1"], ["model.lr", "unknown hyperparameter"]),
    (["run", "ae", "--device", "cuda:7"], ["cuda"]),
])
def test_usage_errors_exit_2_without_traceback(workdir, args: list[str], words: list[str]) -> None:
    result = invoke(*args)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    for word in words:
        assert word in result.output


def test_usage_error_starts_no_run(workdir) -> None:
    invoke("run", "ae", "-p", "latent_dim=0")
    client = MlflowClient()
    assert client.search_experiments(filter_string="name = 'ae'") == []


def test_missing_dataset_is_runtime_error(workdir, tmp_path, monkeypatch) -> None:
    from research import data

    monkeypatch.setattr(data, "DEBIAN_DIR", tmp_path / "nowhere")
    empty = tmp_path / "empty"
    empty.mkdir()
    result = invoke("run", "ae", "--data-dir", str(empty))
    assert result.exit_code == 1
    assert "FashionMNIST not found" in result.output
    assert "Traceback" not in result.output


def test_data_command_prints_source_and_sizes(with_real_data) -> None:
    result = invoke("data")
    assert result.exit_code == 0, result.output
    assert str(with_real_data) in result.output
    assert "48000" in result.output
    assert "12000" in result.output
    assert "10000" in result.output
