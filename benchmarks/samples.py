"""Sample quality of every generative model at its defaults: Fréchet distance and class entropy.

Scores use the reference classifier of docs/sample-quality.md, so they compare
only with each other. GAN and DCGAN train for the same number of epochs.
"""

from __future__ import annotations

import math

from benchmarks.common import SIZES, Result, Size
from benchmarks.quality import epochs, fit
from research.data import FashionMNIST, load
from research.scoring import ReferenceConfig, reference_classifier, score_samples

GENERATIVE_EPOCHS = {"full": 10, "quick": 1, "tiny": 1}  # vae, gan and dcgan, per benchmark size


def sample_rows(size: Size, data: FashionMNIST) -> list[list[str]]:
    classifier = reference_classifier(ReferenceConfig.from_environment(), data.source)
    n_samples = min(size.n_samples, len(data.test.images))
    n_epochs = GENERATIVE_EPOCHS[size.name]
    autoencoder = fit("ae", size, data, n_epochs=size.n_epochs).fit.model
    models = {f"`ae`, {epochs(size.n_epochs)} (Gaussian fitted to the training codes)": autoencoder}
    for name in ("vae", "gan", "dcgan"):
        models[f"`{name}`, {epochs(n_epochs)}"] = fit(name, size, data, n_epochs=n_epochs).fit.model
    rows = []
    for label, model in models.items():
        scores = score_samples(model, data, classifier, n_samples)
        rows.append([label,
                     f"{scores['sample/fid']:.2f} / {abs(scores['sample/class_entropy']):.3f}",
                     f"real-data floor {scores['sample/fid_floor']:.2f} / uniform {math.log(10):.3f}",
                     "`dcgan` ≤ half of `gan`" if "gan" in label else ""])
    return rows


def run(size_name: str = "full") -> Result:
    size = SIZES[size_name]
    rows = sample_rows(size, load(train_size=size.train_size, val_fraction=size.val_fraction))
    training = "all 48,000" if size.train_size is None else f"the first {size.train_size:,}"
    return Result(name="samples", title="Sample quality of the generative models",
                  columns=["model", "`sample/fid` / `sample/class_entropy`", "baseline", "target"], rows=rows,
                  size=size_name,
                  notes=[f"Each model trains at its defaults on {training} training images; {size.n_samples:,} "
                         f"samples against as many test images, on the features of the reference classifier of "
                         "[sample-quality.md](sample-quality.md). Lower distances are better; an entropy near "
                         "ln 10 means the samples cover the classes evenly."])
