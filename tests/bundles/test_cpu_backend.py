"""The backend setting of every bundle's inference.json: ``"auto"``, which runs the bundle's measured fastest CPU
backend (``auto_cpu_backend``, see each bundle's docs "CPU deployment") on the CPU and torch on CUDA, passed on to
the inference workflow."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from monai.bundle import ConfigParser

from networks.runtime import BACKENDS, resolve_backend

BUNDLES = Path(__file__).resolve().parents[2] / "bundles"
#: the CPU backend each bundle's benchmark measured fastest (its docs' table)
AUTO_CPU_BACKEND = {
    "carotid_plaque_ultrasound": "openvino",
    "angioma_ultrasound_segmentation": "openvino",
    "retinal_oct_edema_segmentation": "openvino",
    "fetal_cervix_ultrasound_segmentation": "openvino",
    "cervical_spine_ct_fracture": "torch",
}
WITH_BACKEND = sorted(
    path.parents[1].name
    for path in BUNDLES.glob("*/configs/inference.json")
    if "backend" in json.loads(path.read_text(encoding="utf-8"))
)


def test_the_bundles_with_a_measured_cpu_backend_have_the_setting():
    assert set(AUTO_CPU_BACKEND) <= set(WITH_BACKEND)


@pytest.mark.parametrize("bundle", WITH_BACKEND)
def test_backend_auto_resolves_to_the_bundles_cpu_choice_and_reaches_the_workflow(bundle):
    parser = ConfigParser()
    parser.read_config(str(BUNDLES / bundle / "configs" / "inference.json"))
    assert parser["backend"] == "auto"
    auto_cpu = parser["auto_cpu_backend"]
    assert auto_cpu in BACKENDS and auto_cpu == AUTO_CPU_BACKEND.get(bundle, auto_cpu)
    assert resolve_backend(parser["backend"], "cpu", auto_cpu) == auto_cpu  # every runtime is in requirements.txt
    assert resolve_backend(parser["backend"], "cuda", auto_cpu) == "torch"
    runner = parser["runner"]
    if "model_backend" in parser:  # each fold model wrapped by its runtime, the sliding window left in Python
        assert parser["model_backend"] == "$resolve_backend(@backend, @device, @auto_cpu_backend)"
        assert parser["runtime"]["backend"] == "@model_backend" and runner["backend"] == "torch"
    else:
        assert (runner["backend"], runner["auto_cpu_backend"]) == ("@backend", "@auto_cpu_backend")
