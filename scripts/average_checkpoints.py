"""Average the weights of a run's best checkpoints ("SWA" of the top-k epochs) into one checkpoint file.

The RSNA 2022 cervical spine solution (selimsef/rsna_cervical_fracture, ``average_weights.py``) averages the 5
(ir-CSN) / 3 (ip-CSN) epochs with the lowest validation loss of each fold. Our runs keep those epochs with MONAI's
``CheckpointSaver(save_key_metric=True, key_metric_n_saved=k)``: ignite names each file after its score,
``<prefix>_<name>_key_metric=<score>.pt`` (the score with 4 decimals, negated for a lower-is-better metric with
``key_metric_negative_sign=True``, so that the highest score is always the best), and deletes all but the k best.

Examples::

    # the k best files of a folder written by CheckpointSaver (scores read from the file names)
    python scripts/average_checkpoints.py runs/fold0/top_k --top-k 5 --output runs/fold0/averaged.pt
    # any checkpoint files with their metric values, lower is better
    python scripts/average_checkpoints.py --checkpoints e7.pt e9.pt e12.pt --values 0.31 0.29 0.30 \\
        --mode min --top-k 2 --output averaged.pt

The result is a plain state dict (read by ``networks.checkpoint.load_weights``), written atomically.
"""

from __future__ import annotations

import argparse
import math
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # scripts/ is not a package: make the repository's packages importable
    sys.path.insert(0, str(REPO_ROOT))

import torch  # noqa: E402

from networks.checkpoint import average_checkpoints  # noqa: E402
from utils.atomic import atomic_path  # noqa: E402

__all__ = ["checkpoint_scores", "main", "select_top_k"]


def checkpoint_scores(folder: str | Path, metric: str = "key_metric") -> dict[Path, float]:
    """The ``*.pt`` files of ``folder`` named ``...<metric>=<score>.pt`` (ignite ``Checkpoint`` names), with scores.

    Raises:
        FileNotFoundError: ``folder`` is not a folder.
        ValueError: no file of the folder carries a ``<metric>=`` score (the message lists what is there).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"checkpoint folder not found: {folder}")
    pattern = re.compile(rf"(?:^|_){re.escape(metric)}=(?P<score>[-+]?[0-9.]+(?:[eE][-+]?[0-9]+)?|[-+]?inf|nan)\.pt$")
    scores = {}
    for path in sorted(folder.glob("*.pt")):
        match = pattern.search(path.name)
        if match:
            scores[path] = float(match["score"])
    if not scores:
        present = sorted(p.name for p in folder.iterdir())[:10]
        raise ValueError(f"no checkpoint named '...{metric}=<score>.pt' in {folder}; it holds {present}")
    return scores


def select_top_k(scores: Mapping[Path, float], k: int, higher_is_better: bool = True) -> list[Path]:
    """The ``k`` files with the best scores, best first (NaN scores never chosen; ties keep the given order)."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    finite = [(path, value) for path, value in scores.items() if not math.isnan(value)]
    ranked = sorted(finite, key=lambda item: -item[1] if higher_is_better else item[1])
    return [path for path, _ in ranked[:k]]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Average the weights of the k best checkpoints of a run into one state dict.",
        epilog="Give a run folder of CheckpointSaver key-metric files, or --checkpoints with --values.",
    )
    parser.add_argument("folder", nargs="?", help="folder of '<...>_<metric>=<score>.pt' files (CheckpointSaver)")
    parser.add_argument("--checkpoints", nargs="+", type=Path, help="checkpoint files (instead of a folder)")
    parser.add_argument("--values", nargs="+", type=float, help="the metric value of each of --checkpoints")
    parser.add_argument("--metric", default="key_metric", help="score name in the file names (default key_metric)")
    parser.add_argument("--mode", choices=("max", "min"), default="max",
                        help="max: higher is better (default; CheckpointSaver scores), min: lower is better")
    parser.add_argument("--top-k", type=int, required=True, help="how many of the best checkpoints to average")
    parser.add_argument("--key", default=None, help="entry of the checkpoint dicts holding the weights "
                        "(default: 'network', 'model' or 'state_dict' if present, else the whole file)")
    parser.add_argument("--output", type=Path, required=True, help="the averaged state dict file to write")
    args = parser.parse_args(argv)

    if (args.folder is None) == (args.checkpoints is None):
        parser.error("give either a folder or --checkpoints")
    if args.checkpoints is not None:
        if args.values is None or len(args.values) != len(args.checkpoints):
            parser.error(f"--values needs one value per checkpoint ({len(args.checkpoints)})")
        scores = dict(zip(args.checkpoints, args.values))
    else:
        if args.values is not None:
            parser.error("--values goes with --checkpoints")
        scores = checkpoint_scores(args.folder, args.metric)
    chosen = select_top_k(scores, args.top_k, higher_is_better=args.mode == "max")
    if len(chosen) < args.top_k:
        print(f"warning: only {len(chosen)} checkpoint(s) with a score, fewer than --top-k {args.top_k}", flush=True)
    state = average_checkpoints(chosen, key=args.key)
    with atomic_path(args.output) as tmp:
        torch.save(state, tmp)
    for path in chosen:
        print(f"  {scores[path]:.6g}  {path}")
    print(f"averaged {len(chosen)} checkpoint(s) -> {args.output}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
