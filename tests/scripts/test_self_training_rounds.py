from __future__ import annotations

import subprocess

import scripts.self_training_rounds as rounds


def _config_files(command: list[str]) -> list[str]:
    return command[command.index("--config_file") + 1].strip("[]").replace("'", "").split(",")


def test_each_round_selects_with_the_previous_networks_then_trains_both_from_them():
    first = rounds.round_commands(1, "runs/x", "data", ["demo.json"], ["--max_epochs", "2"])
    second = rounds.round_commands(2, "runs/x", "data")
    assert len(first) == 3 and _config_files(first[0])[-2:] == [f"{rounds.CONFIGS}/pseudo_labels.json", "demo.json"]
    assert first[0][first[0].index("--runs_dir") + 1] == "runs/x/unimatch"
    assert first[0][-2:] == ["--max_epochs", "2"]
    assert second[0][second[0].index("--runs_dir") + 1] == "runs/x/self_training/round1"
    pvt, resnet = second[1], second[2]
    assert pvt[pvt.index("--selection_path") + 1] == "runs/x/pseudo_labels/round2/selection.json"
    assert pvt[pvt.index("--init_model_path") + 1] == "runs/x/self_training/round1/pvt_v2_b1/models/model.pt"
    assert resnet[resnet.index("--output_dir") + 1] == "runs/x/self_training/round2/resnet34d"
    resnet_config = f"{rounds.CONFIGS}/resnet.json"
    assert resnet_config in _config_files(resnet) and resnet_config not in _config_files(pvt)


def test_rounds_run_in_order_and_stop_at_the_first_failure(monkeypatch, capsys):
    calls = []

    def fake_run(command, cwd):
        calls.append(command)
        return subprocess.CompletedProcess(command, 1 if len(calls) == 5 else 0)

    monkeypatch.setattr(rounds.subprocess, "run", fake_run)
    assert rounds.main(["--rounds", "3", "--dataset_dir", "d", "--runs_dir", "r"]) == 1
    assert len(calls) == 5, "round 2's second step failed: round 3 does not start"
    assert "round 2 FAILED" in capsys.readouterr().err
    calls.clear()
    monkeypatch.setattr(rounds.subprocess, "run", lambda command, cwd: calls.append(command)
                        or subprocess.CompletedProcess(command, 0))
    assert rounds.main(["--rounds", "2", "--dataset_dir", "d", "--runs_dir", "r"]) == 0 and len(calls) == 6
