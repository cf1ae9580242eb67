"""Train several cross-validation folds of a bundle, one after the other.

Each fold is one ``python -m monai.bundle run`` with ``--fold K``; any other argument is passed through, with
``{fold}`` replaced by the fold number (e.g. ``--output_dir runs/mine/fold{fold}``). A failed fold is
reported and the next one still runs; the exit status is non-zero if any fold failed.

Examples::

    python scripts/train_folds.py bundles/angioma_ultrasound_segmentation/configs/train.json
    python scripts/train_folds.py "['bundles/carotid_plaque_ultrasound/configs/train.json',\
'bundles/carotid_plaque_ultrasound/configs/mean_teacher.json']" --folds 0 1 -- --dataset_dir /data/CSV2026
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def fold_command(config_file: str, fold: int, passthrough: Sequence[str]) -> list[str]:
    """The ``monai.bundle run`` command line of one fold."""
    extra = [arg.replace("{fold}", str(fold)) for arg in passthrough]
    return [sys.executable, "-m", "monai.bundle", "run", "--config_file", config_file, "--fold", str(fold), *extra]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Train cross-validation folds of a bundle in turn (one `monai.bundle run --fold K` each).",
        epilog="Arguments after `--` go to every run; `{fold}` in them becomes the fold number.",
    )
    parser.add_argument("config_file", help="the bundle config, or a Python list of configs as monai.bundle takes")
    parser.add_argument("--folds", type=int, nargs="+", default=[0, 1, 2, 3, 4], help="folds to train (default 0-4)")
    args, passthrough = parser.parse_known_args(argv)
    passthrough = [a for a in passthrough if a != "--"]
    failed = []
    for fold in args.folds:
        command = fold_command(args.config_file, fold, passthrough)
        print(f"== fold {fold}: {' '.join(command[1:])}", flush=True)
        start = time.perf_counter()
        result = subprocess.run(command, cwd=REPO_ROOT)
        minutes = (time.perf_counter() - start) / 60
        if result.returncode != 0:
            failed.append(fold)
            print(f"== fold {fold} FAILED (exit {result.returncode}) after {minutes:.1f} min", flush=True)
        else:
            print(f"== fold {fold} done in {minutes:.1f} min", flush=True)
    if failed:
        print(f"failed folds: {failed}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
