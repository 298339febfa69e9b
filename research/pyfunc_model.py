"""The MLflow pyfunc face of a research model, for `mlflow.pyfunc.load_model(uri).predict(...)`.

A registered version stores no pickled Python object: its MLmodel names
`research/pyfunc_entry.py` as the model code, and `load_context` rebuilds the
model from the version's checkpoint with `research.checkpoints`, which reads
weights and config as plain data (`torch.load(..., weights_only=True)`).

What `predict` takes and returns depends on the model:

- a model with a `classify` method: images in, class probabilities (N, n_classes) out;
- an autoencoder (`has_encoder` and a `decode` method): images in, reconstructions
  (N, 1, 28, 28) out;
- a model that only generates (`can_generate`): the number of samples in, images
  (n, 1, 28, 28) out.

Images are a float32 numpy array (N, 1, 28, 28) with values in [0, 1]. The
version's signature declares that tensor, so MLflow rejects other dtypes and
shapes (DataFrames too) before `predict` runs. A sample count is an int, a
one-element int array, or a DataFrame with a column `n`. An optional column
`seed` (or the `seed` param) fixes the noise.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from mlflow.pyfunc import PythonModel

from research.errors import UsageError

IMAGE_SHAPE = (1, 28, 28)
CHECKPOINT_ARTIFACT = "checkpoint"  # key of the checkpoint in the pyfunc `artifacts` mapping


def prediction_kind(model: Any) -> str:
    """Return what `predict` does for `model`: `classify`, `reconstruct` or `sample`."""
    if callable(getattr(model, "classify", None)):
        return "classify"
    if getattr(model, "has_encoder", False) and callable(getattr(model, "decode", None)):
        return "reconstruct"
    if getattr(model, "can_generate", False):
        return "sample"
    raise UsageError(f"model {getattr(model, 'name', type(model).__name__)!r} neither classifies, "
                     "reconstructs nor generates images, so it has no pyfunc prediction")


def to_image_batch(model_input: Any) -> torch.Tensor:
    """Convert images (N, 1, 28, 28), (N, 28, 28) or (N, 784) to a float tensor (N, 1, 28, 28).

    Through MLflow only (N, 1, 28, 28) arrives (the signature enforces it); the
    other shapes serve callers of `predict_with`.
    """
    array = model_input.to_numpy() if hasattr(model_input, "to_numpy") else np.asarray(model_input)
    if array.dtype == object or not np.issubdtype(array.dtype, np.number):
        raise UsageError(f"pyfunc input must be numeric images, got dtype {array.dtype}")
    n_pixels = int(np.prod(IMAGE_SHAPE))
    if array.ndim < 2 or int(np.prod(array.shape[1:])) != n_pixels:
        raise UsageError(f"pyfunc input has shape {array.shape}; pass float32 images in [0, 1] of "
                         "shape (N, 1, 28, 28), (N, 28, 28) or (N, 784)")
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32)).reshape(-1, *IMAGE_SHAPE)


def sample_request(model_input: Any, params: dict[str, Any] | None) -> tuple[int, int | None]:
    """Read the sample count and the optional seed from pyfunc input and params."""
    seed = (params or {}).get("seed")
    if hasattr(model_input, "columns"):  # a pandas DataFrame
        if "n" not in model_input.columns:
            raise UsageError("a DataFrame input to a generator needs a column 'n' (number of samples)")
        if "seed" in model_input.columns:
            seed = model_input["seed"].iloc[0]
        model_input = model_input["n"].iloc[0]
    values = np.asarray(model_input).reshape(-1)
    if values.size != 1 or not np.issubdtype(values.dtype, np.integer) or int(values[0]) < 1:
        raise UsageError(f"a generator takes the number of samples (a positive int), got {model_input!r}")
    return int(values[0]), None if seed is None else int(seed)


def predict_with(model: Any, model_input: Any, params: dict[str, Any] | None = None) -> np.ndarray:
    """Run the prediction that `prediction_kind(model)` names and return a numpy array."""
    kind = prediction_kind(model)
    with torch.no_grad():
        if kind == "sample":
            n, seed = sample_request(model_input, params)
            generator = torch.Generator().manual_seed(seed) if seed is not None else None
            output = model.sample(n, generator=generator)
        else:
            images = to_image_batch(model_input).to(model.device)
            output = model.classify(images) if kind == "classify" else model.decode(model.encode(images))
    return output.detach().cpu().numpy()


class ResearchPythonModel(PythonModel):
    """A research model behind MLflow's pyfunc interface; see the module docstring."""

    def load_context(self, context: Any) -> None:
        from research.checkpoints import load_model_checkpoint

        self.model = load_model_checkpoint(context.artifacts[CHECKPOINT_ARTIFACT], device="cpu")

    # The annotation is np.ndarray because MLflow 3.17 skips its type-hint validation for
    # that type and warns when there is no annotation; DataFrames and ints work as well.
    def predict(self, context: Any, model_input: np.ndarray, params: dict[str, Any] | None = None) -> np.ndarray:
        return predict_with(self.model, model_input, params)
