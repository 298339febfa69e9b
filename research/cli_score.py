"""`research score RUN_ID`: sample-quality scores for an existing generative run."""

from __future__ import annotations

import math

import click

from research.cli import main


@main.command("score")
@click.argument("run_id")
@click.option("--n-samples", type=click.IntRange(min=2), default=10_000, show_default=True,
              help="Images generated, and real images compared, per score.")
@click.option("--reference", "reference_overrides", metavar="NAME=VALUE,…",
              help="Train the reference classifier differently, e.g. n_epochs=1,train_size=1024 "
                   "(default: RESEARCH_REFERENCE_CLASSIFIER, else 2 epochs on 54,000 images).")
@click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda[:N].")
@click.option("--data-dir", envvar="RESEARCH_DATA_DIR", type=click.Path(file_okay=False),
              help="Folder holding the FashionMNIST idx files.")
def score_command(run_id: str, n_samples: int, reference_overrides: str | None, device: str,
                  data_dir: str | None) -> None:
    """Log sample/fid, sample/fid_floor and sample/class_entropy to the finished run RUN_ID.

    The Fréchet distance uses the features of a FashionMNIST classifier, not
    Inception, so it compares only with other scores of this command.
    """
    from research.checkpoints import build_model_from_checkpoint
    from research.errors import UsageError
    from research.runner import load_data
    from research.scoring import ReferenceConfig, reference_classifier, score_samples
    from research.sources import CHECKPOINT_ARTIFACT, load_run_checkpoint
    from research.spec import RunSpec
    from research.tracking import Run, make_client
    from research.training import resolve_device

    found = load_run_checkpoint(run_id, run_id, None, option="RUN_ID")
    model = build_model_from_checkpoint(found.checkpoint, f"{CHECKPOINT_ARTIFACT} of run {run_id}")
    if not model.can_generate:
        raise UsageError(f"run {run_id} trained model {found.model_name!r}, which cannot generate images; "
                         "score a run of a generative model (ae, vae, gan, dcgan)")
    if reference_overrides:
        reference = ReferenceConfig.from_text(reference_overrides)
    else:
        reference = ReferenceConfig.from_environment()
    torch_device = resolve_device(device)
    spec = RunSpec.from_dict(found.checkpoint["run_spec"])
    data = load_data(spec, data_dir)
    classifier = reference_classifier(reference, data.source, torch_device)
    scores = score_samples(model.to(torch_device), data, classifier, n_samples)

    client = make_client()
    run = Run(client, run_id, client.get_run(run_id).info.experiment_id)
    run.log_metrics(scores, step=int(found.checkpoint.get("epoch", 0)))
    run.set_tags({"research.score_reference": reference.key()})
    click.echo(f"sample/fid {scores['sample/fid']:.4f}  sample/fid_floor {scores['sample/fid_floor']:.4f}  "
               f"sample/class_entropy {scores['sample/class_entropy']:.4f} (max {math.log(10):.4f})")
