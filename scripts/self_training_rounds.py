"""Rounds of pseudo-label self-training of the fetal cervix bundle (FUGC 2025, the 7th-place solution's stage 2).

Each round is two steps, each one ``python -m monai.bundle run``:

1. selection: both networks of the previous round (round 1: the UniMatch runs) predict the unlabelled images, and
   ``engines.self_training.PseudoLabelSelection`` scores and keeps pseudo-labels
   (``inference.json`` + ``pseudo_labels.json``, into ``{runs_dir}/pseudo_labels/round{r}``);
2. training: each network is trained supervised on the labelled images + the kept pseudo-labels, starting from its
   previous round's weights (``train.json`` [+ ``resnet.json``] + ``supervised.json`` + ``self_training.json``,
   into ``{runs_dir}/self_training/round{r}/{network}``).

The solution picked pseudo-labels by hand between its rounds; here the selection rule does it, so the rounds run
unattended. Arguments after ``--`` go to every run (e.g. ``--dataset_dir``, or the demo config as ``--extra``).

Example::

    python scripts/self_training_rounds.py --rounds 2 --dataset_dir /data/fugc/train \\
        --runs_dir runs/fetal_cervix_ultrasound_segmentation
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
CONFIGS = "bundles/fetal_cervix_ultrasound_segmentation/configs"
#: network name -> its extra config (the PVT-v2-b1 UNet is train.json's own network)
NETWORKS = {"pvt_v2_b1": [], "resnet34d": [f"{CONFIGS}/resnet.json"]}

__all__ = ["main", "round_commands"]


def _config_list(files: Sequence[str]) -> str:
    return "[" + ",".join(f"'{f}'" for f in files) + "]"


def round_commands(
    round_index: int, runs_dir: str, dataset_dir: str, extra_configs: Sequence[str] = (),
    passthrough: Sequence[str] = (),
) -> list[list[str]]:
    """The ``monai.bundle run`` commands of round ``round_index`` (1-based): the selection, then one training per
    network."""
    runs = Path(runs_dir)
    previous = runs / "unimatch" if round_index == 1 else runs / "self_training" / f"round{round_index - 1}"
    selection_dir = runs / "pseudo_labels" / f"round{round_index}"
    run = [sys.executable, "-m", "monai.bundle", "run", "--config_file"]
    commands = [[
        *run, _config_list([f"{CONFIGS}/inference.json", f"{CONFIGS}/pseudo_labels.json", *extra_configs]),
        "--dataset_dir", dataset_dir, "--runs_dir", str(previous), "--output_dir", str(selection_dir), *passthrough,
    ]]  # fmt: skip
    for name, network_configs in NETWORKS.items():
        configs = [f"{CONFIGS}/train.json", *network_configs, f"{CONFIGS}/supervised.json",
                   f"{CONFIGS}/self_training.json", *extra_configs]  # fmt: skip
        commands.append([
            *run, _config_list(configs), "--dataset_dir", dataset_dir,
            "--selection_path", str(selection_dir / "selection.json"),
            "--init_model_path", str(previous / name / "models" / "model.pt"),
            "--output_dir", str(runs / "self_training" / f"round{round_index}" / name), *passthrough,
        ])  # fmt: skip
    return commands


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Run rounds of automatic pseudo-label selection + supervised training (fetal cervix bundle).",
        epilog="Arguments after `--` go to every run.",
    )
    parser.add_argument("--rounds", type=int, default=1, help="number of self-training rounds (default 1)")
    parser.add_argument("--dataset_dir", required=True, help="the FUGC training folder (images/, labels/)")
    parser.add_argument("--runs_dir", required=True, help="holds unimatch/<network>/ (stage 1); rounds are added")
    parser.add_argument("--extra", nargs="*", default=[], help="config files added to every run (e.g. demo.json)")
    args, passthrough = parser.parse_known_args(argv)
    if args.rounds < 1:
        parser.error(f"--rounds must be at least 1, got {args.rounds}")
    passthrough = [a for a in passthrough if a != "--"]
    for round_index in range(1, args.rounds + 1):
        for command in round_commands(round_index, args.runs_dir, args.dataset_dir, args.extra, passthrough):
            print(f"== round {round_index}: {' '.join(command[3:])}", flush=True)
            start = time.perf_counter()
            result = subprocess.run(command, cwd=REPO_ROOT)
            if result.returncode != 0:  # a round needs every step of the one before
                print(f"== round {round_index} FAILED (exit {result.returncode}) after "
                      f"{(time.perf_counter() - start) / 60:.1f} min", file=sys.stderr, flush=True)  # fmt: skip
                return 1
    print(f"== {args.rounds} round(s) done: {Path(args.runs_dir) / 'self_training' / f'round{args.rounds}'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
