"""The torch floor that pyproject.toml and environment.yml declare: no lower than the first release
with every torch API the package calls, so that pip or conda never keeps a torch the package fails
on halfway through a run."""
from __future__ import annotations

import re
from functools import reduce
from pathlib import Path

import pytest
import torch
from packaging.version import Version

tomllib = pytest.importorskip("tomllib")

REPO = Path(__file__).resolve().parent.parent

# The newest torch APIs the package calls -> the first torch release that has them.
NEWEST_APIS = {
    "torch.nn.attention.flex_attention": "2.5",  # Transformer-XL's attention on CUDA
    "torch.compiler.is_exporting": "2.6",  # every NCGRU step
    "torch.get_autocast_dtype": "2.4",  # the RNN cells under autocast
    "torch.amp.is_autocast_available": "2.4",
    "torch.compiler.is_compiling": "2.3",
    "torch.nn.Module.compile": "2.2",  # run.compile
}


def declared_floors() -> dict[str, str]:
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    pip = next(re.fullmatch(r"torch>=([0-9.]+)", d).group(1) for d in deps if d.startswith("torch"))
    conda = re.search(r"^\s*- pytorch>=([0-9.]+)\b", (REPO / "environment.yml").read_text(), re.M).group(1)
    return {"pyproject.toml": pip, "environment.yml": conda}


def test_the_torch_floor_has_every_api_the_package_calls():
    need = max(map(Version, NEWEST_APIS.values()))
    for where, floor in declared_floors().items():
        assert Version(floor) >= need, f"{where}: torch>={floor}, but the package calls APIs of torch {need}"


@pytest.mark.parametrize("api", NEWEST_APIS)
def test_the_listed_apis_are_called_by_the_package_and_exist(api):
    source = "\n".join(p.read_text() for p in (REPO / "crt_repro").rglob("*.py"))
    name = api.rsplit(".", 1)[1]
    assert re.search(rf"\b{re.escape(name)}\b", source), f"{api} is no longer called: drop it from the list"
    module, attrs = ("torch.nn.attention.flex_attention", []) if "flex_attention" in api else ("torch", api.split(".")[1:])
    __import__(module)
    reduce(getattr, attrs, torch)
