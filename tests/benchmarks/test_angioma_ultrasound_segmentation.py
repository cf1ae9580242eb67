"""The angioma benchmark runs end to end in --quick mode and reports every section (no timing is asserted)."""

from __future__ import annotations

import json

from scripts.benchmark import main


def test_quick_run_reports_parameters_the_three_configurations_and_postprocessing(tmp_path, capsys):
    out = tmp_path / "figures.json"
    main(["angioma_ultrasound_segmentation", "--quick", "--device", "cpu", "--skip-compile", "--warmup", "0",
          "--repeats", "1", "--json", str(out)])  # fmt: skip
    printed = capsys.readouterr().out
    for heading in ("== 1. Parameters", "== 2. Inference per image", "== 3. Post-processing per image",
                    "fastest path with mask agreement >= 99.5 %", "EMF (19 x 19 median)"):  # fmt: skip
        assert heading in printed, heading
    sections = json.loads(out.read_text())["sections"]
    counts = sections["parameters"]["counts"]
    assert counts["total"] == counts["encoder"] + counts["decoder"] + counts["head"]
    configurations = sections["inference"]["configurations"]
    assert list(configurations) == ["single model", "8-way TTA", "2 folds x 8-way TTA"]
    single = {p["name"]: p for p in configurations["single model"]["paths"]}
    assert {"fp32", "channels_last", "bf16", "torchscript"} <= set(single) and single["fp32"]["agreement"] == 1.0
    fastest = sections["inference"]["fastest"]
    for config in ("8-way TTA", "2 folds x 8-way TTA"):
        names = [p["name"] for p in configurations[config]["paths"]]
        assert names == ["fp32"] + ([fastest] if fastest != "fp32" else [])
    assert sections["postprocessing"]["total_ms"] > 0
