from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from registry import DuplicateNameError, Registry, UnknownNameError
from research.models import MODELS


def test_register_and_lookup() -> None:
    things: Registry[type] = Registry("thing")

    @things.register("alpha", colour="red")
    class Alpha:
        pass

    assert things.get("alpha") is Alpha
    assert things.find_or_raise("alpha").metadata == {"colour": "red"}
    assert things.names() == ["alpha"]
    assert "alpha" in things


def test_unknown_name_lists_registered_names() -> None:
    things: Registry[int] = Registry("thing")
    things.add("one", 1)
    things.add("two", 2)
    with pytest.raises(UnknownNameError) as caught:
        things.get("three")
    assert "unknown thing 'three'" in str(caught.value)
    assert "one, two" in str(caught.value)


def test_duplicate_name_rejected() -> None:
    things: Registry[int] = Registry("thing")
    things.add("one", 1)
    with pytest.raises(DuplicateNameError, match="already registered"):
        things.add("one", 2)


def test_builtin_model_registered() -> None:
    assert "ae" in MODELS.names()


PROJECT_ROOT = Path(__file__).resolve().parents[1]


def make_plugin_distribution(root: Path) -> Path:
    """Write an installed-looking distribution that declares a model entry point."""
    package = root / "tinyplugin"
    package.mkdir()
    (package / "__init__.py").write_text(textwrap.dedent('''
        from dataclasses import dataclass

        import torch
        import torch.nn.functional as F

        from research.config import Config, param
        from research.models import Model, register_model


        @dataclass(frozen=True)
        class TinyConfig(Config):
            width: int = param(4, "hidden units", min=1)


        @register_model("tiny")
        class Tiny(Model):
            """A one-layer autoencoder shipped by a plugin."""

            Config = TinyConfig

            def __init__(self, config):
                super().__init__(config)
                self.net = torch.nn.Linear(784, 784)

            def loss_terms(self, batch):
                images, _ = batch
                flat = images.flatten(1)
                return {"loss": F.mse_loss(torch.sigmoid(self.net(flat)), flat)}
    '''))
    dist_info = root / "tinyplugin-0.1.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: tinyplugin\nVersion: 0.1\n")
    (dist_info / "entry_points.txt").write_text("[research.models]\ntiny = tinyplugin:Tiny\n")
    return root


def test_entry_point_plugin_discovered(tmp_path: Path) -> None:
    plugin_root = make_plugin_distribution(tmp_path)
    result = subprocess.run(
        [sys.executable, "-c", "from research.models import MODELS; e = MODELS.find_or_raise('tiny'); "
                               "print(e.component.__name__, e.component.name)"],
        env={"PYTHONPATH": f"{plugin_root}:{PROJECT_ROOT}", "PATH": ""}, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["Tiny", "tiny"]


def test_plugin_model_listed_by_cli(tmp_path: Path) -> None:
    plugin_root = make_plugin_distribution(tmp_path)
    result = subprocess.run([sys.executable, "-m", "research.cli", "models"],
                            env={"PYTHONPATH": f"{plugin_root}:{PROJECT_ROOT}", "PATH": ""},
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert "tiny" in result.stdout
    assert "model.width" in result.stdout
