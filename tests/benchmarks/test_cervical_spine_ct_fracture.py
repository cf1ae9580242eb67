"""The cervical spine benchmark runs end to end in --quick mode and reports every section (no timing is asserted)."""

from __future__ import annotations

import json

from scripts.benchmark import main


def test_quick_run_reports_parameters_segmentation_classification_and_training(tmp_path, capsys):
    out = tmp_path / "figures.json"
    main(["cervical_spine_ct_fracture", "--quick", "--device", "cpu", "--skip-compile", "--warmup", "0",
          "--repeats", "1", "--train-steps", "2", "--json", str(out)])  # fmt: skip
    printed = capsys.readouterr().out
    for heading in ("== 1. Parameters", "== 2. Segmentation per study", "== 3. Classification per vertebra",
                    "== 4. Stage-1 training", "trainer / bare loop"):  # fmt: skip
        assert heading in printed, heading
    sections = json.loads(out.read_text())["sections"]
    counts = sections["parameters"]["counts"]
    assert counts["UNet total"] == counts["UNet encoder (ir-CSN-50)"] + counts["UNet decoder"] + counts["UNet head"]
    for key in ("segmentation", "classification"):
        paths = {p["name"]: p for p in sections[key]["paths"]}
        assert paths["fp32"]["agreement"] == 1.0 and sections[key]["fastest"] is not None
        assert sections[key]["fastest_precision"] is not None
        for runtime in ("onnxruntime", "openvino"):  # each fold model exported alone, run inside the window
            assert paths[runtime]["status"] == "ok" and paths[runtime]["agreement"] >= 0.995, paths[runtime]
    assert set(sections["training"]["samples_per_second"]) == {"bare loop", "bundle trainer"}
