"""Registered models: a real tiny `ae` run, registered, promoted and loaded back by URI."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from click.testing import CliRunner
from mlflow.tracking import MlflowClient
from PIL import Image

from research.checkpoints import load_model_checkpoint, save_checkpoint
from research.cli import main
from research.model_registry import MODEL_TAG, promote, register_run
from tests.conftest import enter_store

REPO_ROOT = Path(__file__).resolve().parents[1]

# Reconstructions and seeded samples of a model, written by a fresh interpreter.
FRESH_PROCESS_SCRIPT = textwrap.dedent("""
    import sys
    import torch
    import research

    inputs = torch.load(sys.argv[1])
    outputs = {}
    for uri in sys.argv[3:]:
        model = research.load_model(uri)
        with torch.no_grad():
            outputs[uri] = {"class": type(model).__name__, "reconstructions": model(inputs),
                            "samples": model.sample(4, generator=torch.Generator().manual_seed(1))}
    torch.save(outputs, sys.argv[2])
""")


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory, real_data_dir: Path) -> dict:
    """One finished `research run ae --register` on 512 real images, in its own MLflow store."""
    folder = tmp_path_factory.mktemp("registry")
    patch, uri = enter_store(folder, real_data_dir)
    result = CliRunner().invoke(main, ["run", "ae", "--epochs", "1", "--train-size", "512", "--quiet",
                                       "-p", "n_channels=4", "--register", "--no-explore"])
    client = MlflowClient(tracking_uri=uri)
    run = client.search_runs([client.get_experiment_by_name("ae").experiment_id])[0]
    best = Path(client.download_artifacts(run.info.run_id, "checkpoints/best.pt", str(folder)))
    yield {"result": result, "client": client, "run": run, "folder": folder, "best": best,
           "env": {**os.environ, "PYTHONPATH": str(REPO_ROOT)}}
    patch.undo()


def invoke(*args: str):
    return CliRunner().invoke(main, list(args))


def run_cli(store: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "research.cli", *args], cwd=store["folder"], env=store["env"],
                          capture_output=True, text=True, check=False)


def fixed_images() -> torch.Tensor:
    return torch.rand(6, 1, 28, 28, generator=torch.Generator().manual_seed(0))


def test_run_register_creates_version(store: dict) -> None:
    result = store["result"]
    run = store["run"]
    client = store["client"]
    assert result.exit_code == 0, result.output
    assert store["client"].get_run(run.info.run_id).info.status == "FINISHED"
    version = client.get_model_version("ae", "1")
    assert version.run_id == run.info.run_id
    assert version.tags[MODEL_TAG] == "ae"
    assert version.tags["research.checkpoint"] == "best"
    assert client.get_registered_model("ae").tags[MODEL_TAG] == "ae"
    assert "Registered 'ae' version 1" in result.output


def test_version_files_hold_no_pickled_code(store: dict, tmp_path: Path) -> None:
    client = store["client"]
    version = register_run(store["run"].info.run_id, "ae-files", client=client)
    location = client.get_model_version_download_uri("ae-files", version.version)
    import mlflow.artifacts

    folder = Path(mlflow.artifacts.download_artifacts(artifact_uri=location, dst_path=str(tmp_path),
                                                       tracking_uri=client.tracking_uri))
    flavor = yaml.safe_load((folder / "MLmodel").read_text())["flavors"]["python_function"]
    assert flavor["loader_module"] == "mlflow.pyfunc.loaders.code_model"
    assert flavor["model_code_path"].endswith("pyfunc_entry.py")
    assert "python_model" not in flavor
    assert not list(folder.rglob("*.pkl"))
    assert (folder / flavor["artifacts"]["checkpoint"]["path"]).is_file()
    requirements = (folder / "requirements.txt").read_text()
    assert f"torch=={torch.__version__.split('+')[0]}" in requirements
    # The checkpoint reads with weights_only and keeps no optimizer state.
    data = torch.load(folder / flavor["artifacts"]["checkpoint"]["path"], weights_only=True)
    assert data["model_name"] == "ae"
    assert "optimizer_states" not in data


def test_load_by_stage_and_alias_in_fresh_process(store: dict, tmp_path: Path) -> None:
    client = store["client"]
    version = register_run(store["run"].info.run_id, "ae-fresh", client=client)
    promote("ae-fresh", version.version, "production", client=client)
    inputs_path = tmp_path / "inputs.pt"
    outputs_path = tmp_path / "outputs.pt"
    torch.save(fixed_images(), inputs_path)
    uris = ["models:/ae-fresh/Production", "models:/ae-fresh@production", f"models:/ae-fresh/{version.version}",
            f"runs:/{store['run'].info.run_id}/checkpoints/best.pt"]
    completed = subprocess.run([sys.executable, "-c", FRESH_PROCESS_SCRIPT, str(inputs_path), str(outputs_path),
                                *uris], cwd=store["folder"], env=store["env"], capture_output=True, text=True)
    assert completed.returncode == 0, completed.stderr

    source = load_model_checkpoint(store["best"])
    with torch.no_grad():
        expected_reconstructions = source(fixed_images())
        expected_samples = source.sample(4, generator=torch.Generator().manual_seed(1))
    outputs = torch.load(outputs_path)
    # Another process may pick other CPU kernels (thread count, instruction set), which
    # changes the last bits. A wrong or untrained model would differ by far more.
    for uri in uris:
        assert outputs[uri]["class"] == "Autoencoder", uri
        assert torch.allclose(outputs[uri]["reconstructions"], expected_reconstructions, rtol=0, atol=1e-5), uri
        assert torch.allclose(outputs[uri]["samples"], expected_samples, rtol=0, atol=1e-5), uri


def test_second_promotion_archives_first(store: dict) -> None:
    client = store["client"]
    run_id = store["run"].info.run_id
    first = register_run(run_id, "ae-promote", client=client)
    second = register_run(run_id, "ae-promote", checkpoint="last", client=client)
    promote("ae-promote", first.version, "production", client=client)
    promote("ae-promote", second.version, "production", client=client)
    assert client.get_model_version("ae-promote", first.version).current_stage == "Archived"
    assert client.get_model_version("ae-promote", second.version).current_stage == "Production"
    aliases = client.get_registered_model("ae-promote").aliases
    assert {alias: str(version) for alias, version in aliases.items()} == {"production": str(second.version)}
    assert str(client.get_model_version_by_alias("ae-promote", "production").version) == str(second.version)


def test_staging_alias_stays_when_production_moves(store: dict) -> None:
    client = store["client"]
    run_id = store["run"].info.run_id
    first = register_run(run_id, "ae-aliases", client=client)
    second = register_run(run_id, "ae-aliases", client=client)
    promote("ae-aliases", first.version, "staging", client=client)
    promote("ae-aliases", second.version, "production", client=client)
    aliases = {alias: str(version) for alias, version in client.get_registered_model("ae-aliases").aliases.items()}
    assert aliases == {"staging": str(first.version), "production": str(second.version)}
    assert client.get_model_version("ae-aliases", first.version).current_stage == "Staging"


def test_promote_shows_no_deprecation_warning(store: dict) -> None:
    register_run(store["run"].info.run_id, "ae-quiet", client=store["client"])
    completed = run_cli(store, "promote", "ae-quiet", "1", "--stage", "production")
    assert completed.returncode == 0, completed.stderr
    assert "is now in stage Production with alias @production" in completed.stdout
    assert "Warning" not in completed.stderr
    assert "deprecat" not in completed.stderr.lower()
    assert "deprecat" not in completed.stdout.lower()


def test_pyfunc_predict_reconstructs(store: dict) -> None:
    import mlflow.pyfunc

    client = store["client"]
    version = register_run(store["run"].info.run_id, "ae-pyfunc", client=client)
    images = fixed_images().numpy()
    predicted = mlflow.pyfunc.load_model(f"models:/ae-pyfunc/{version.version}").predict(images)
    with torch.no_grad():
        expected = load_model_checkpoint(store["best"])(fixed_images()).numpy()
    assert predicted.shape == (6, 1, 28, 28)
    assert np.array_equal(predicted, expected)


def test_models_versions_lists_stage_alias_run_metrics(store: dict) -> None:
    client = store["client"]
    register_run(store["run"].info.run_id, "ae-listed", client=client)
    promote("ae-listed", 1, "staging", client=client)
    result = invoke("models", "versions", "ae-listed")
    assert result.exit_code == 0, result.output
    row = result.output.splitlines()[1].split()
    assert row[:3] == ["1", "Staging", "@staging"]
    assert store["run"].info.run_id in row
    assert "test/mse" in result.output
    assert "model.latent_dim" in invoke("models").output


def test_sample_writes_grid(store: dict, tmp_path: Path) -> None:
    output = tmp_path / "grid.png"
    result = invoke("sample", "models:/ae/1", "--n", "16", "-o", str(output))
    assert result.exit_code == 0, result.output
    with Image.open(output) as grid:
        assert grid.size == (2 * (4 * 30 + 2), 2 * (4 * 30 + 2))


def test_reconstruct_writes_figure(store: dict, tmp_path: Path) -> None:
    output = tmp_path / "reconstructions.png"
    result = invoke("reconstruct", f"runs:/{store['run'].info.run_id}/model", "-o", str(output))
    assert result.exit_code == 0, result.output
    with Image.open(output) as figure:
        assert figure.width > 100


def test_evaluate_prints_and_logs_test_metrics(store: dict) -> None:
    client = store["client"]
    target = client.create_run(store["run"].info.experiment_id, run_name="evaluation").info.run_id
    result = invoke("evaluate", "models:/ae/1", "--log-to", target, "--device", "cpu")
    assert result.exit_code == 0, result.output
    expected_mse = store["run"].data.metrics["test/mse"]
    logged = client.get_run(target).data
    assert logged.metrics["test/mse"] == pytest.approx(expected_mse, rel=1e-5)
    assert logged.tags["research.evaluated_model"] == "models:/ae/1"
    assert "test/mse" in result.output


# --- bad input ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def foreign_model(store: dict) -> str:
    """A registered model that MLflow's own API made, without research's tag."""
    client = store["client"]
    client.create_registered_model("foreign")
    client.create_model_version("foreign", source=str(store["folder"]), run_id=store["run"].info.run_id)
    return "foreign"


def assert_usage_error(result, *words: str) -> None:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    for word in words:
        assert word in result.output


def test_unknown_registered_model_lists_existing(store: dict) -> None:
    assert_usage_error(invoke("sample", "models:/nosuch/1"), "'nosuch' not found", "ae")


def test_unknown_version_lists_versions(store: dict) -> None:
    assert_usage_error(invoke("sample", "models:/ae/99"), "no version '99'", "1 (")


def test_unknown_stage_lists_stages(store: dict) -> None:
    assert_usage_error(invoke("sample", "models:/ae/Prod"), "unknown stage 'Prod'", "production")


def test_empty_stage_says_so(store: dict) -> None:
    register_run(store["run"].info.run_id, "ae-unstaged", client=store["client"])
    assert_usage_error(invoke("sample", "models:/ae-unstaged/Staging"),
                       "no version of registered model 'ae-unstaged' is in stage Staging", "research promote")


def test_unknown_alias_lists_aliases(store: dict) -> None:
    register_run(store["run"].info.run_id, "ae-alias-list", client=store["client"])
    promote("ae-alias-list", 1, "staging", client=store["client"])
    assert_usage_error(invoke("sample", "models:/ae-alias-list@champion"), "no alias 'champion'",
                       "@staging (version 1)")


def test_uri_without_version_names_forms(store: dict) -> None:
    assert_usage_error(invoke("sample", "models:/ae"), "models:/ae/VERSION", "models:/ae@production")


def test_unknown_run_path_lists_contents(store: dict) -> None:
    run_id = store["run"].info.run_id
    assert_usage_error(invoke("sample", f"runs:/{run_id}/nothing"), "no checkpoint or logged model at 'nothing'",
                       f"runs:/{run_id}/checkpoints/best.pt", f"runs:/{run_id}/model")


def test_unknown_run_is_rejected(store: dict) -> None:
    assert_usage_error(invoke("register", "0123456789abcdef"), "run '0123456789abcdef' not found")


@pytest.mark.parametrize("args", [
    ["evaluate", "models:/foreign/1"],
    ["promote", "foreign", "1", "--stage", "production"],
    ["models", "versions", "foreign"],
])
def test_foreign_registered_model_is_refused(store: dict, foreign_model: str, args: list[str]) -> None:
    assert_usage_error(invoke(*args), "'foreign' was not made by research")


def test_register_into_foreign_model_is_refused(store: dict, foreign_model: str) -> None:
    result = invoke("register", store["run"].info.run_id, "--name", "foreign")
    assert_usage_error(result, "'foreign' was not made by research", "--name")
    assert len(store["client"].search_model_versions("name = 'foreign'")) == 1


def test_bad_stage_is_usage_error(store: dict) -> None:
    assert_usage_error(invoke("promote", "ae", "1", "--stage", "live"), "staging", "production")


@pytest.fixture
def encoder_only_checkpoint(tmp_path: Path):
    """A checkpoint of a registered autoencoder variant that cannot generate."""
    from research.models import MODELS, register_model
    from research.models.ae import AEConfig, Autoencoder

    @register_model("ae-no-sampling")
    class NonGeneratingAutoencoder(Autoencoder):
        """The autoencoder without sampling."""

        can_generate = False

    model = NonGeneratingAutoencoder(AEConfig(n_channels=4))
    path = save_checkpoint({"model_name": "ae-no-sampling", "config": model.config.to_dict(),
                            "model_state": model.state_dict()}, tmp_path / "encoder-only.pt")
    yield path
    MODELS.remove("ae-no-sampling")


def test_sample_on_non_generator_names_generators(store: dict, encoder_only_checkpoint: Path,
                                                  tmp_path: Path) -> None:
    result = invoke("sample", str(encoder_only_checkpoint), "-o", str(tmp_path / "grid.png"))
    assert_usage_error(result, "'ae-no-sampling' model, which cannot generate", "models that can: ae")
    assert not (tmp_path / "grid.png").exists()


def test_import_research_stays_light() -> None:
    code = "import sys, research; print('torch' in sys.modules, 'mlflow' in sys.modules)"
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                               env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    assert completed.stdout.split() == ["False", "False"]


@pytest.fixture
def generator_only_model():
    """A registered autoencoder variant without an encoder, so that pyfunc treats it as a generator."""
    from research.models import MODELS, register_model
    from research.models.ae import AEConfig, Autoencoder

    @register_model("ae-generator-only")
    class GeneratorOnlyAutoencoder(Autoencoder):
        """The autoencoder used only to generate."""

        has_encoder = False

    torch.manual_seed(0)
    yield GeneratorOnlyAutoencoder(AEConfig(n_channels=4)).eval()
    MODELS.remove("ae-generator-only")


def test_pyfunc_generator_takes_sample_count(generator_only_model) -> None:
    import pandas as pd

    from research.pyfunc_model import predict_with

    with torch.no_grad():
        expected = generator_only_model.sample(5, generator=torch.Generator().manual_seed(3)).numpy()
    from_int = predict_with(generator_only_model, 5, {"seed": 3})
    from_frame = predict_with(generator_only_model, pd.DataFrame({"n": [5], "seed": [3]}))
    assert from_int.shape == (5, 1, 28, 28)
    assert np.array_equal(from_int, expected)
    assert np.array_equal(from_frame, expected)


def test_pyfunc_generator_rejects_images(generator_only_model) -> None:
    from research.errors import UsageError
    from research.pyfunc_model import predict_with

    with pytest.raises(UsageError, match="number of samples"):
        predict_with(generator_only_model, fixed_images().numpy())
