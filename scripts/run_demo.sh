#!/usr/bin/env bash
# The main job on a fresh machine: set up .venv, make demo data, train each bundle briefly on the CPU,
# run inference on held-out demo cases and print the score tables.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
PY=.venv/bin/python
DEMO=demo
RUNS=runs/demo

carotid() {
    local configs=bundles/carotid_plaque_ultrasound/configs
    local data=$DEMO/carotid_plaque_ultrasound out=$RUNS/carotid_plaque_ultrasound
    echo "== carotid_plaque_ultrasound: demo data"
    [ -d "$data/train" ] || $PY scripts/make_demo_data.py carotid_plaque_ultrasound "$data/train" --cases 80 --seed 0 --unlabelled-fraction 0.4
    [ -d "$data/test" ] || $PY scripts/make_demo_data.py carotid_plaque_ultrasound "$data/test" --cases 24 --seed 1 --unlabelled-fraction 0
    echo "== carotid_plaque_ultrasound: train (MAGNET + Mean Teacher, CPU demo size)"
    rm -rf "$out"
    $PY -m monai.bundle run --config_file "['$configs/train.json','$configs/mean_teacher.json','$configs/demo.json']" \
        --dataset_dir "$data/train" --output_dir "$out/train"
    echo "== carotid_plaque_ultrasound: inference + evaluation on the held-out demo cases"
    $PY -m monai.bundle run --config_file "['$configs/inference.json','$configs/evaluate.json','$configs/demo.json']" \
        --dataset_dir "$data/test" --evaluate_all True --model_path "$out/train/models/model.pt" \
        --output_dir "$out/test_predictions" --save_overlay True
}

carotid
echo "Done. Predictions, overlays, score tables and TensorBoard logs are under $RUNS/"
