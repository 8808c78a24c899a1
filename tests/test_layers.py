"""The layers of docs/architecture.md name every production module, so `lint-imports` (run by
bin/test) checks each of them: a new module left out of pyproject.toml's contract would be
checked by nothing."""

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
UNLAYERED = {"tests", "migrations", "__init__"}


def _layers() -> list[set[str]]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    (contract,) = config["contracts"]
    return [{name for name in re.split(r"[\s:|]+", layer) if name} for layer in contract["layers"]]


def _production_modules(package: str) -> set[str]:
    found = set()
    for path in (ROOT / package).iterdir():
        name = path.stem if path.suffix == ".py" else path.name
        is_package = path.is_dir() and (path / "__init__.py").exists()
        if (path.suffix == ".py" or is_package) and name not in UNLAYERED:
            found.add(f"{package}.{name}")
    return found


def test_every_production_module_is_in_one_layer():
    layers = _layers()
    named = [name for layer in layers for name in layer]
    assert len(named) == len(set(named)), "a module is named in two layers"
    whole_packages = {name for name in named if "." not in name}
    for package in ("journeys", "conversions", "reporting", "config", "webhooks"):
        if package in whole_packages:
            continue
        missing = _production_modules(package) - set(named)
        assert not missing, f"not in any layer of pyproject.toml's import contract: {missing}"


def test_layers_run_from_config_down_to_journeys_core():
    layers = _layers()
    assert layers[0] == {"config"}
    assert layers[1] == {"reporting"}
    assert "journeys.views" in layers[2] and "conversions.views" in layers[2]
    assert "conversions.actions" in layers[3]
    assert {"journeys.models", "journeys.definition", "journeys.engine"} <= layers[4]
