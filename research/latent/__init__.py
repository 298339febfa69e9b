"""Latent-space exploration of models with an encoder.

`explore` encodes the test set, logs PCA, t-SNE and UMAP views, linear and
k-NN probes, and images decoded from sampled and interpolated codes to the
model's MLflow run under `latent/`. Computation lives in `embedding`,
`probes` and `generation`; figures in `plots`.
"""

from research.latent.embedding import METHODS, embed
from research.latent.explore import ExploreOptions, explore, explore_finisher

__all__ = ["METHODS", "ExploreOptions", "embed", "explore", "explore_finisher"]
