"""The FUGC benchmark runs end to end in --quick mode and reports every section (no timing is asserted)."""

from __future__ import annotations

import json

from scripts.benchmark import main


def test_quick_run_reports_parameters_inference_paths_and_training_iterations(tmp_path, capsys):
    out = tmp_path / "figures.json"
    main(["fetal_cervix_ultrasound_segmentation", "--quick", "--device", "cpu", "--skip-compile", "--warmup", "0",
          "--repeats", "1", "--train-steps", "1", "--json", str(out)])  # fmt: skip
    printed = capsys.readouterr().out
    for heading in ("== 1. Parameters", "== 2. Inference per image", "== 3. Training iteration", "UniMatch / supervised"):
        assert heading in printed, heading
    sections = json.loads(out.read_text())["sections"]
    for name in ("pvt_v2_b1", "resnet34d"):
        counts = sections["parameters"][name]
        assert counts["total"] == counts["encoder"] + counts["decoder"] + counts["head"]
    assert set(sections["inference"]) >= {"pvt_v2_b1", "resnet34d", "logit ensemble"}
    assert sections["inference"]["logit ensemble"]["paths"][0]["agreement"] == 1.0
    assert sections["training"]["unimatch_seconds_per_iteration"] > 0
