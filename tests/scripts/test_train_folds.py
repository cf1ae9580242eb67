from __future__ import annotations

import json
import sys

from scripts.train_folds import fold_command, main


def test_fold_placeholder_is_filled_in_passthrough_arguments():
    command = fold_command("c.json", 3, ["--output_dir", "runs/x/fold{fold}"])
    assert command[1:] == ["-m", "monai.bundle", "run", "--config_file", "c.json", "--fold", "3",
                           "--output_dir", "runs/x/fold3"]  # fmt: skip
    assert command[0] == sys.executable


def test_every_fold_runs_and_a_failed_fold_sets_the_exit_status(tmp_path, capfd):
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"fold": 0, "run": ["$print('trained fold', @fold, flush=True)",
                                                     "$1 // (@fold - 1)"]}))  # fmt: skip
    assert main([str(config), "--folds", "0", "1", "2"]) == 1
    out = capfd.readouterr().out
    assert "trained fold 0" in out and "trained fold 2" in out
    assert "fold 1 FAILED" in out and "fold 0 done" in out and "fold 2 done" in out
