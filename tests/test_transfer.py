"""The classifier fine-tuned from a real autoencoder run, the cnn baseline and `research score`."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
import torch
from click.testing import CliRunner
from mlflow.tracking import MlflowClient
from PIL import Image

from research.checkpoints import build_model_from_checkpoint, load_checkpoint
from research.cli import main
from research.data import load
from research.models.classifier import Classifier
from research.runner import log_milestones
from research.sources import run_id_of_model_uri
from research.spec import build_spec
from research.tracking import OfflineRun, Run
from research.training import Trainer
from tests.conftest import enter_store

QUICK = ["--epochs", "2", "--train-size", "2048", "--quiet", "-p", "val_fraction=0.05"]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory, real_data_dir: Path) -> dict:
    """One short real-data ae run, one classifier fine-tuned from it and one cnn run, in one store."""
    folder = tmp_path_factory.mktemp("transfer")
    patch, uri = enter_store(folder, real_data_dir)
    runner = CliRunner()
    client = MlflowClient(tracking_uri=uri)
    results = {}
    for name, arguments in (("ae", ["ae", "-p", "batch_norm=true", "-p", "lr=0.003"]), ("cnn", ["cnn"])):
        results[name] = runner.invoke(main, ["run", *arguments, *QUICK, "--no-explore"])
        assert results[name].exit_code == 0, results[name].output
    ae_run = latest_run(client, "ae")
    results["classifier"] = runner.invoke(main, ["run", "classifier", "--from", ae_run.info.run_id, *QUICK,
                                                 "--batch-size", "64", "-p", "lr=0.003"])
    yield {"client": client, "runner": runner, "results": results, "folder": folder, "uri": uri,
           "ae": ae_run, "cnn": latest_run(client, "cnn"), "classifier": latest_run(client, "classifier")}
    patch.undo()


def latest_run(client: MlflowClient, experiment: str):  # noqa: ANN201 - mlflow's Run entity
    found = client.search_runs([client.get_experiment_by_name(experiment).experiment_id],
                               order_by=["attributes.start_time DESC"])
    return found[0]


def download_checkpoint(client: MlflowClient, run_id: str, folder: Path) -> Path:
    return Path(client.download_artifacts(run_id, "checkpoints/best.pt", str(folder)))


def test_finetuned_classifier_beats_chance(store: dict) -> None:
    result = store["results"]["classifier"]
    assert result.exit_code == 0, result.output
    run = store["classifier"]
    assert run.info.status == "FINISHED"
    # Chance is 0.1.
    assert run.data.metrics["test/acc"] > 0.5


def test_classifier_links_source_run(store: dict) -> None:
    run = store["classifier"]
    assert run.data.tags["research.source_run_id"] == store["ae"].info.run_id
    assert run.data.tags["research.source_model"] == "ae"
    assert run.data.params["model.encoder_model"] == "ae"
    assert '"batch_norm": true' in run.data.params["model.encoder_config"]


@pytest.mark.parametrize("experiment", ["classifier", "cnn"])
def test_classifier_metrics_and_figures(store: dict, experiment: str, tmp_path: Path) -> None:
    run = store[experiment]
    client = store["client"]
    metrics = run.data.metrics
    for key in ("test/acc", "test/loss", "test/acc_t_shirt_top", "test/acc_ankle_boot", "val/acc", "train/loss"):
        assert key in metrics, key
    per_class = [value for key, value in metrics.items() if key.startswith("test/acc_")]
    assert len(per_class) == 10
    assert sum(per_class) / 10 == pytest.approx(metrics["test/acc"], abs=1e-6)  # the test set is balanced
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val/acc")] == [1, 2]
    local = Path(client.download_artifacts(run.info.run_id, "figures", str(tmp_path)))
    for name in ("confusion_matrix.png", "misclassified.png", "loss_curve.png"):
        with Image.open(local / name) as image:
            image.verify()


def test_milestone_reported_either_way(store: dict) -> None:
    for experiment in ("classifier", "cnn"):
        run = store[experiment]
        reached = run.data.tags["research.reached_val_acc_85"]
        assert reached in ("true", "false")
        assert ("epochs_to_val_acc_85" in run.data.metrics) == (reached == "true")


def test_milestone_logs_first_crossing(workdir: Path) -> None:
    run = Run.start("milestones")
    model = Classifier.__new__(Classifier)  # only the class attribute `milestones` is read
    history = [{"epoch": 1, "val/acc": 0.80, "epoch_time_s": 2.0}, {"epoch": 2, "val/acc": 0.86, "epoch_time_s": 3.0},
               {"epoch": 3, "val/acc": 0.90, "epoch_time_s": 4.0}]
    log_milestones(run, model, history)
    logged = run.client.get_run(run.run_id).data
    assert logged.metrics["epochs_to_val_acc_85"] == 2
    assert logged.metrics["seconds_to_val_acc_85"] == pytest.approx(5.0)
    assert logged.tags["research.reached_val_acc_85"] == "true"


def test_generative_run_has_sample_scores(store: dict) -> None:
    metrics = store["ae"].data.metrics
    assert metrics["sample/fid"] > metrics["sample/fid_floor"] >= 0.0
    assert 0.0 <= metrics["sample/class_entropy"] <= 2.303
    assert "sample/fid" not in store["cnn"].data.metrics


def test_score_command_logs_to_run(store: dict) -> None:
    run_id = store["ae"].info.run_id
    result = store["runner"].invoke(main, ["score", run_id, "--n-samples", "500"])
    assert result.exit_code == 0, result.output
    assert "sample/fid" in result.output
    history = store["client"].get_metric_history(run_id, "sample/fid")
    assert len(history) == 2
    assert store["client"].get_run(run_id).info.status == "FINISHED"


def test_score_rejects_classifier_run(store: dict) -> None:
    result = store["runner"].invoke(main, ["score", store["cnn"].info.run_id])
    assert result.exit_code == 2
    assert "cannot generate" in result.output


def test_checkpoint_reloads_without_source(store: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                           real_data_dir: Path) -> None:
    run = store["classifier"]
    path = download_checkpoint(store["client"], run.info.run_id, tmp_path)
    # An empty store: the source run cannot be reached while reloading.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'empty.db'}")
    checkpoint = torch.load(path, weights_only=True)
    model = build_model_from_checkpoint(checkpoint)
    test = load(real_data_dir).test
    probabilities = model.classify(test.float_images())
    assert probabilities.shape == (10_000, 10)
    assert torch.allclose(probabilities.sum(1), torch.ones(10_000), atol=1e-5)
    accuracy = (probabilities.argmax(1) == test.labels).float().mean().item()
    assert accuracy == pytest.approx(run.data.metrics["test/acc"], abs=1e-6)


def offline_trainer(checkpoint: Path, mode: str, tmp_path: Path, data_dir: Path) -> Trainer:
    setup = Classifier.setup_from_source(str(checkpoint))
    spec = build_spec("classifier", {**setup.overrides, "mode": mode, "n_epochs": 1, "train_size": 512,
                                     "val_fraction": 0.05})
    data = load(data_dir, val_fraction=0.05, train_size=512)
    return Trainer(spec, data, OfflineRun(), device=torch.device("cpu"), checkpoint_dir=tmp_path / mode,
                   quiet=True, upload_checkpoints=False)


@pytest.mark.parametrize("mode", ["freeze", "finetune"])
def test_encoder_weights_by_mode(store: dict, tmp_path: Path, real_data_dir: Path, mode: str) -> None:
    path = download_checkpoint(store["client"], store["ae"].info.run_id, tmp_path)
    source_state = load_checkpoint(path)["model_state"]
    result = offline_trainer(path, mode, tmp_path, real_data_dir).fit()
    encoder_state = {key.removeprefix("backbone."): value
                     for key, value in result.model.state_dict().items() if key.startswith("backbone.encoder.")}
    assert encoder_state
    changed = [key for key, value in encoder_state.items() if not torch.equal(value, source_state[key])]
    if mode == "freeze":
        assert changed == []  # weights and batch-norm statistics alike
    else:
        assert any(key.endswith("weight") for key in changed)
        assert any(key.endswith("running_mean") for key in changed)


def test_from_registered_model_version(store: dict) -> None:
    client = store["client"]
    run_id = store["ae"].info.run_id
    client.create_registered_model("ae-encoder")
    version = client.create_model_version("ae-encoder", f"runs:/{run_id}/checkpoints", run_id=run_id)
    assert run_id_of_model_uri(f"models:/ae-encoder/{version.version}") == run_id
    setup = Classifier.setup_from_source(f"models:/ae-encoder/{version.version}")
    assert setup.tags["research.source_run_id"] == run_id
    assert setup.overrides["encoder_model"] == "ae"


def test_from_unknown_run(store: dict) -> None:
    result = store["runner"].invoke(main, ["run", "classifier", "--from", "0123456789abcdef", *QUICK])
    assert result.exit_code == 2
    assert "no MLflow run '0123456789abcdef'" in result.output


def test_from_unknown_registered_model(store: dict) -> None:
    result = store["runner"].invoke(main, ["run", "classifier", "--from", "models:/nothing/1", *QUICK])
    assert result.exit_code == 2
    assert "registered model version not found" in result.output


def test_from_run_without_encoder(store: dict) -> None:
    run_id = store["cnn"].info.run_id
    result = store["runner"].invoke(main, ["run", "classifier", "--from", run_id, *QUICK])
    assert result.exit_code == 2
    assert f"run {run_id} is of model 'cnn', which has no encoder" in result.output
    assert "(ae" in result.output


def test_from_checkpoint_of_other_model(store: dict, tmp_path: Path) -> None:
    path = download_checkpoint(store["client"], store["cnn"].info.run_id, tmp_path)
    result = store["runner"].invoke(main, ["run", "classifier", "--from", str(path), *QUICK])
    assert result.exit_code == 2
    assert "is of model 'cnn', which has no encoder" in result.output


def test_from_on_scratch_model(store: dict) -> None:
    result = store["runner"].invoke(main, ["run", "cnn", "--from", store["ae"].info.run_id, *QUICK])
    assert result.exit_code == 2
    assert "takes no --from" in result.output


def test_classifier_without_source(store: dict) -> None:
    result = store["runner"].invoke(main, ["run", "classifier", *QUICK])
    assert result.exit_code == 2
    assert "needs a trained encoder" in result.output


def test_classifier_sweep_from_encoder(store: dict) -> None:
    runner, folder, ae_run_id = store["runner"], store["folder"], store["ae"].info.run_id
    storage = f"sqlite:///{folder / 'optuna-classifier.db'}"
    quick = ["--storage", storage, "--train-size", "512", "--epochs", "1", "--heartbeat", "1"]

    missing = runner.invoke(main, ["sweep", "run", "classifier-finetune", *quick, "--n-trials", "1"])
    assert missing.exit_code == 2
    assert "pass --from RUN_ID" in missing.output
    assert optuna.get_all_study_names(storage) == []

    first = runner.invoke(main, ["sweep", "run", "classifier-finetune", *quick, "--n-trials", "1",
                                 "--from", ae_run_id])
    assert first.exit_code == 0, first.output
    # A resume without --from uses the stored source; a different one is refused.
    second = runner.invoke(main, ["sweep", "run", "classifier-finetune", *quick, "--n-trials", "2"])
    assert second.exit_code == 0, second.output
    checkpoint = download_checkpoint(store["client"], ae_run_id, folder / "other-source")
    other = runner.invoke(main, ["sweep", "run", "classifier-finetune", *quick, "--n-trials", "3",
                                 "--from", str(checkpoint)])
    assert other.exit_code == 2
    assert f"started --from '{ae_run_id}'" in other.output

    study = optuna.load_study(study_name="classifier-finetune", storage=storage)
    assert [trial.state.name for trial in study.trials] == ["COMPLETE", "COMPLETE"]
    # The resumed session draws new parameters instead of repeating the first trial's.
    assert study.trials[0].params != study.trials[1].params
    client = store["client"]
    experiment = client.get_experiment_by_name("sweep-classifier-finetune")
    trial_runs = client.search_runs([experiment.experiment_id], "tags.`research.sweep_role` = 'trial'")
    assert len(trial_runs) == 2
    assert {run.data.tags["research.source_run_id"] for run in trial_runs} == {ae_run_id}
    best = runner.invoke(main, ["sweep", "best", "classifier-finetune", "--storage", storage])
    assert best.exit_code == 0, best.output
    assert best.output.startswith(f"research run classifier --from {ae_run_id} -p mode=finetune -p lr=")
