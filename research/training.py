"""The one training loop that every model plugs into.

The loop owns epochs, the device, shuffling, progress, per-epoch metrics,
learning-rate schedules, early stopping, checkpoints, epoch callbacks (Optuna
pruning) and SIGINT/SIGTERM. A model owns its step (`Model.training_step`).
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from research.checkpoints import save_checkpoint
from research.data import FashionMNIST, Split
from research.errors import NonFiniteLossError, TrainingInterrupted, UsageError
from research.models import Model, TrainConfig
from research.signals import StopRequest
from research.spec import RunSpec
from research.tracking import Run

logger = logging.getLogger(__name__)

EpochCallback = Callable[[int, Mapping[str, float]], None]


def resolve_device(name: str) -> torch.device:
    """Map `auto`, `cpu` or `cuda[:N]` to a device; `cuda` without a GPU is a usage error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError(f"--device {name} requested but CUDA is not available on this machine; "
                         "use --device cpu or --device auto")
    try:
        return torch.device(name)
    except RuntimeError:
        raise UsageError(f"invalid --device {name!r}; use auto, cpu or cuda") from None


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def check_batch_size(spec: RunSpec, data: FashionMNIST) -> None:
    if spec.train.batch_size > len(data.train):
        raise UsageError(f"batch_size {spec.train.batch_size} is larger than the {len(data.train)} "
                         "training images; lower -p batch_size or raise --train-size")


def estimate_training_bytes(spec: RunSpec) -> int:
    """Estimate the memory that training `spec` needs, in bytes.

    Counts float32 weights, gradients and two optimizer moments, plus every
    layer output of one batch three times (kept for the backward pass, its
    gradient and a temporary). The model is built on the meta device, so
    nothing is allocated. NOTE: an estimate; it ignores allocator overhead and
    returns the weights part only for a model whose `loss_terms` cannot run
    on meta tensors.
    """
    with torch.device("meta"):
        model = spec.model_class(spec.model)
        n_params = sum(parameter.numel() for parameter in model.parameters())
        output_sizes: list[int] = []

        def record(module: torch.nn.Module, inputs: Any, output: Any) -> None:
            if isinstance(output, torch.Tensor):
                output_sizes.append(output.numel())

        hooks = [module.register_forward_hook(record) for module in model.modules()
                 if not list(module.children())]
        try:
            model.loss_terms((torch.zeros(1, 1, 28, 28), torch.zeros(1, dtype=torch.long)))
        except Exception as error:  # noqa: BLE001 - the estimate is a courtesy; the weights still count
            logger.debug("Cannot estimate activation memory of %s: %s", spec.model_name, error)
            output_sizes.clear()
        for hook in hooks:
            hook.remove()
    return 4 * (4 * n_params + 3 * spec.train.batch_size * sum(output_sizes))


def available_memory_bytes(device: torch.device) -> int | None:
    """Return the memory free for tensors on `device`, or None when unknown."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def check_fits_in_memory(spec: RunSpec, device: torch.device) -> None:
    """Raise `UsageError` before training when the estimated memory exceeds what `device` has free."""
    needed = estimate_training_bytes(spec)
    available = available_memory_bytes(device)
    if available is not None and needed > available:
        gib = 2 ** 30
        raise UsageError(f"training {spec.model_name} ({', '.join(f'{k}={v}' for k, v in spec.model.to_dict().items())}) "
                         f"with batch_size {spec.train.batch_size} needs an estimated {needed / gib:.1f} GiB, "
                         f"but {device} has {available / gib:.1f} GiB free; lower the channel count, "
                         "the batch size or the model size")


@dataclass
class LoopState:
    """Progress of the loop, saved in every checkpoint so that a run can resume."""

    epoch: int = 0  # last completed epoch
    step_in_epoch: int = 0  # batches done in the epoch after `epoch`, when stopped mid-epoch
    partial_sums: dict[str, float] = field(default_factory=dict)
    partial_count: int = 0
    partial_seconds: float = 0.0
    global_step: int = 0
    best_value: float | None = None
    best_epoch: int = 0
    bad_epochs: int = 0
    stopped_early: bool = False
    history: list[dict[str, float]] = field(default_factory=list)


@dataclass
class FitResult:
    """The result of `Trainer.fit`: the model at its best epoch, the loop state and the training time."""

    model: Model
    state: LoopState
    train_seconds: float

    @property
    def history(self) -> list[dict[str, float]]:
        return self.state.history


def build_schedulers(optimizers: Mapping[str, torch.optim.Optimizer], train: TrainConfig,
                     steps_per_epoch: int, monitor_mode: str = "min") -> dict[str, Any]:
    schedulers: dict[str, Any] = {}
    for name, optimizer in optimizers.items():
        if train.scheduler == "cosine":
            schedulers[name] = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=train.n_epochs)
        elif train.scheduler == "plateau":
            schedulers[name] = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode=monitor_mode, factor=0.5,
                                                                          patience=1)
        elif train.scheduler == "onecycle":
            schedulers[name] = torch.optim.lr_scheduler.OneCycleLR(
                optimizer, max_lr=[group["lr"] for group in optimizer.param_groups],
                total_steps=train.n_epochs * steps_per_epoch)
    return schedulers


class Trainer:
    """Train one model of a `RunSpec` on in-memory data, logging to a `Run`."""

    def __init__(self, spec: RunSpec, data: FashionMNIST, run: Run, *, device: torch.device,
                 checkpoint_dir: Path, callbacks: Iterable[EpochCallback] = (), quiet: bool = False,
                 upload_checkpoints: bool = True) -> None:
        self.spec = spec
        self.train_config = spec.train
        self.data = data
        self.run = run
        self.device = device
        self.checkpoint_dir = Path(checkpoint_dir)
        self.callbacks = list(callbacks)
        self.quiet = quiet
        self.upload_checkpoints = upload_checkpoints
        check_batch_size(spec, data)

        seed_everything(spec.seed)
        self.model = spec.model_class(spec.model).to(device)
        self.optimizers = self.model.configure_optimizers(spec.train)
        self.steps_per_epoch = data.train.n_batches(spec.train.batch_size)
        self.schedulers = build_schedulers(self.optimizers, spec.train, self.steps_per_epoch, self.model.monitor_mode)
        self.shuffle = torch.Generator().manual_seed(spec.seed)
        self.epoch_shuffle_state = self.shuffle.get_state()
        self.state = LoopState()
        self.best_weights: dict[str, torch.Tensor] | None = None

    # --- the loop ------------------------------------------------------------------

    def fit(self) -> FitResult:
        """Train until the last epoch or early stopping; return the model at its best epoch."""
        started = time.perf_counter()
        if self.state.global_step == 0:
            self.model.on_fit_start()
        with StopRequest() as stop:
            while self.state.epoch < self.train_config.n_epochs and not self.state.stopped_early:
                if stop.requested:  # the signal came between epochs, after last.pt was written
                    raise TrainingInterrupted(stop.signal_name, self.state.epoch + 1)
                record = self.run_epoch(self.state.epoch + 1, stop)
                self.end_epoch(record)
            if stop.requested:
                raise TrainingInterrupted(stop.signal_name, self.state.epoch)
        if self.best_weights is not None:
            self.model.load_state_dict(self.best_weights)
        self.model.eval()
        self.model.on_fit_end(self.data)
        self.write_final_checkpoint()
        return FitResult(self.model, self.state, time.perf_counter() - started)

    def run_epoch(self, epoch: int, stop: StopRequest) -> dict[str, float]:
        state = self.state
        if state.step_in_epoch == 0:
            self.epoch_shuffle_state = self.shuffle.get_state()
        else:  # resuming mid-epoch: draw the same order again and skip the batches already done
            self.shuffle.set_state(self.epoch_shuffle_state)
        order = torch.randperm(len(self.data.train), generator=self.shuffle)
        sums = {key: torch.tensor(value, dtype=torch.float64) for key, value in state.partial_sums.items()}
        count, epoch_started = state.partial_count, time.perf_counter() - state.partial_seconds

        self.model.train()
        progress = self.progress_bar(epoch, initial=state.step_in_epoch)
        for step in range(state.step_in_epoch, self.steps_per_epoch):
            batch = self.batch(self.data.train, order, step)
            metrics = self.model.training_step(batch, self.optimizers, self.train_config.grad_clip)
            self.check_finite(metrics, epoch, step + 1)
            size = len(batch[1])
            for key, value in metrics.items():
                sums[key] = sums.get(key, torch.zeros((), dtype=torch.float64)) + value.double() * size
            count += size
            state.global_step += 1
            self.step_schedulers_per_batch()
            progress.update(1)
            if step % 10 == 0:
                progress.set_postfix(loss=f"{metrics[next(iter(metrics))].item():.4f}")
            if stop.requested:
                progress.close()
                self.save_interrupted(epoch, step + 1, sums, count, time.perf_counter() - epoch_started)
                raise TrainingInterrupted(stop.signal_name, epoch)
        progress.close()

        record: dict[str, float] = {"epoch": epoch}
        record.update({f"train/{key}": (value / count).item() for key, value in sums.items()})
        record.update({f"val/{key}": value for key, value in self.evaluate(self.data.val).items()})
        record["lr"] = next(iter(self.optimizers.values())).param_groups[0]["lr"]
        record["epoch_time_s"] = time.perf_counter() - epoch_started
        return record

    def end_epoch(self, record: dict[str, float]) -> None:
        state = self.state
        epoch = int(record["epoch"])
        state.epoch, state.step_in_epoch = epoch, 0
        state.partial_sums, state.partial_count, state.partial_seconds = {}, 0, 0.0
        state.history.append(record)
        self.step_schedulers_per_epoch(record)
        improved = self.update_best(record)

        self.run.log_metrics({key: value for key, value in record.items() if key != "epoch"}, step=epoch)
        self.log_epoch(record)
        # Before the checkpoints, so that state the model keeps per epoch (a GAN's
        # sample grids) is in the checkpoint of that epoch.
        self.model.on_epoch_end(self.run, epoch, self.data)
        self.model.train()
        self.write_checkpoints(improved)
        for callback in self.callbacks:
            callback(epoch, record)

    # --- pieces of an epoch --------------------------------------------------------------

    def batch(self, split: Split, order: torch.Tensor, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        size = self.train_config.batch_size
        index = order[step * size:(step + 1) * size]
        images = split.images[index].to(self.device, non_blocking=True)
        labels = split.labels[index].to(self.device, non_blocking=True)
        return images.unsqueeze(1).float().div_(255.0), labels

    @torch.no_grad()
    def evaluate(self, split: Split) -> dict[str, float]:
        """Return the size-weighted mean of the model's validation metrics on `split`."""
        if len(split) == 0:
            return {}
        self.model.eval()
        sums: dict[str, float] = {}
        for images, labels in split.batches(max(self.train_config.batch_size, 512), device=self.device):
            for key, value in self.model.validation_step((images, labels)).items():
                sums[key] = sums.get(key, 0.0) + value.item() * len(labels)
        self.model.train()
        return {key: value / len(split) for key, value in sums.items()}

    def check_finite(self, metrics: Mapping[str, torch.Tensor], epoch: int, step: int) -> None:
        values = torch.stack([value.float() for value in metrics.values()])
        if bool(torch.isfinite(values).all()):
            return
        for key, value in metrics.items():
            if not math.isfinite(value.item()):
                raise NonFiniteLossError(f"train/{key}", value.item(), epoch, step)

    def step_schedulers_per_batch(self) -> None:
        for scheduler in self.schedulers.values():
            if isinstance(scheduler, torch.optim.lr_scheduler.OneCycleLR):
                scheduler.step()

    def step_schedulers_per_epoch(self, record: Mapping[str, float]) -> None:
        for scheduler in self.schedulers.values():
            if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                scheduler.step(record.get(self.monitor_key(), record.get("train/loss", 0.0)))
            elif isinstance(scheduler, torch.optim.lr_scheduler.CosineAnnealingLR):
                scheduler.step()

    def monitor_key(self) -> str:
        return f"val/{self.model.monitor}" if self.model.monitor else ""

    def update_best(self, record: Mapping[str, float]) -> bool:
        """Track the best epoch and early stopping; return whether this epoch is the best so far."""
        state = self.state
        value = record.get(self.monitor_key())
        if value is None:  # no validation loss: the last epoch counts as the best
            state.best_epoch = int(record["epoch"])
            return True
        if state.best_value is None:
            better = True
        elif self.model.monitor_mode == "max":
            better = value > state.best_value
        else:
            better = value < state.best_value
        if better:
            state.best_value, state.best_epoch, state.bad_epochs = value, int(record["epoch"]), 0
            self.best_weights = {key: tensor.detach().clone() for key, tensor in self.model.state_dict().items()}
            return True
        state.bad_epochs += 1
        patience = self.train_config.patience
        if patience and state.bad_epochs >= patience:
            state.stopped_early = True
            logger.info("Stopping early: %s has not improved for %d epochs (best %.5g at epoch %d)",
                        self.monitor_key(), patience, state.best_value, state.best_epoch)
        return False

    # --- reporting -------------------------------------------------------------------------

    def progress_bar(self, epoch: int, initial: int) -> Any:
        from tqdm.auto import tqdm

        return tqdm(total=self.steps_per_epoch, initial=initial, leave=False, disable=self.quiet,
                    desc=f"epoch {epoch}/{self.train_config.n_epochs}", unit="batch", dynamic_ncols=True)

    def log_epoch(self, record: Mapping[str, float]) -> None:
        shown = "  ".join(f"{key} {value:.4g}" for key, value in record.items()
                          if key not in ("epoch", "epoch_time_s"))
        logger.info("epoch %d/%d  %s  (%.1f s)", record["epoch"], self.train_config.n_epochs, shown,
                    record["epoch_time_s"])

    # --- checkpoints ---------------------------------------------------------------------------

    def checkpoint_payload(self) -> dict[str, Any]:
        """Return everything needed to rebuild the model and resume training, as plain data."""
        return {
            "model_name": self.spec.model_name,
            "config": self.spec.model.to_dict(),
            "run_spec": self.spec.to_dict(),
            "model_state": {key: tensor.detach().cpu() for key, tensor in self.model.state_dict().items()},
            "extra_state": self.model.extra_state(),
            "optimizer_states": {name: opt.state_dict() for name, opt in self.optimizers.items()},
            "scheduler_states": {name: sched.state_dict() for name, sched in self.schedulers.items()},
            "loop_state": asdict(self.state),
            "best_weights": ({key: tensor.cpu() for key, tensor in self.best_weights.items()}
                             if self.best_weights is not None else None),
            "rng": {"torch": torch.get_rng_state(), "shuffle": self.shuffle.get_state(),
                    "epoch_shuffle": self.epoch_shuffle_state,
                    "numpy": torch.from_numpy(np.random.get_state()[1].astype(np.int64)),
                    "numpy_pos": int(np.random.get_state()[2]),
                    "python": list(random.getstate()[1])},
            "epoch": self.state.epoch,
            "run_id": self.run.run_id,
        }

    def write_checkpoints(self, improved: bool) -> None:
        payload = self.checkpoint_payload()
        paths = [save_checkpoint(payload, self.checkpoint_dir / "last.pt")]
        if improved:
            best = dict(payload, model_state=payload["best_weights"] or payload["model_state"])
            paths.append(save_checkpoint(best, self.checkpoint_dir / "best.pt"))
        if self.upload_checkpoints:
            for path in paths:
                self.run.log_file(path, "checkpoints")

    def write_final_checkpoint(self) -> None:
        """Rewrite best.pt from the model as `fit` returns it, with what `on_fit_end` added."""
        payload = self.checkpoint_payload()
        payload["model_state"] = {key: tensor.detach().cpu() for key, tensor in self.model.state_dict().items()}
        path = save_checkpoint(payload, self.checkpoint_dir / "best.pt")
        if self.upload_checkpoints:
            self.run.log_file(path, "checkpoints")

    def save_interrupted(self, epoch: int, steps_done: int, sums: Mapping[str, torch.Tensor], count: int,
                         seconds: float) -> None:
        self.state.step_in_epoch = steps_done
        self.state.partial_sums = {key: value.item() for key, value in sums.items()}
        self.state.partial_count = count
        self.state.partial_seconds = seconds
        path = save_checkpoint(self.checkpoint_payload(), self.checkpoint_dir / "last.pt")
        logger.info("Saved checkpoint %s at epoch %d, step %d", path, epoch, steps_done)
        if self.upload_checkpoints:
            self.run.log_file(path, "checkpoints")

    def restore(self, checkpoint: Mapping[str, Any]) -> None:
        """Continue from a checkpoint that `checkpoint_payload` wrote."""
        self.model.load_state_dict(checkpoint["model_state"])
        self.model.load_extra_state(checkpoint.get("extra_state", {}))
        for name, optimizer in self.optimizers.items():
            optimizer.load_state_dict(checkpoint["optimizer_states"][name])
        for name, scheduler in self.schedulers.items():
            if name in checkpoint["scheduler_states"]:
                scheduler.load_state_dict(checkpoint["scheduler_states"][name])
            if isinstance(scheduler, torch.optim.lr_scheduler.CosineAnnealingLR):
                # A run resumed with more epochs stretches the cosine decay to the new end;
                # the chained form continues from the current rate, so the rate does not jump.
                scheduler.T_max = self.train_config.n_epochs
        self.state = LoopState(**checkpoint["loop_state"])
        if checkpoint.get("best_weights") is not None:
            self.best_weights = {key: tensor.to(self.device) for key, tensor in checkpoint["best_weights"].items()}
        rng = checkpoint["rng"]
        torch.set_rng_state(rng["torch"])
        self.shuffle.set_state(rng["shuffle"])
        self.epoch_shuffle_state = rng["epoch_shuffle"]
        np.random.set_state(("MT19937", rng["numpy"].numpy().astype(np.uint32), rng["numpy_pos"], 0, 0.0))
        random.setstate((3, tuple(rng["python"]), None))

