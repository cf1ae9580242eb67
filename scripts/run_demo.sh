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

angioma() {
    local configs=bundles/angioma_ultrasound_segmentation/configs
    local data=$DEMO/angioma_ultrasound_segmentation out=$RUNS/angioma_ultrasound_segmentation
    echo "== angioma_ultrasound_segmentation: demo data"
    [ -d "$data/train" ] || $PY scripts/make_demo_data.py angioma_ultrasound_segmentation "$data/train" --cases 60 --seed 0
    [ -d "$data/test" ] || $PY scripts/make_demo_data.py angioma_ultrasound_segmentation "$data/test" --cases 20 --seed 1 --test-cases 0
    echo "== angioma_ultrasound_segmentation: train the 5 folds in turn (LinkNet, CPU demo size)"
    rm -rf "$out"
    $PY scripts/train_folds.py "['$configs/train.json','$configs/demo.json']" -- --dataset_dir "$data/train" --runs_dir "$out"
    echo "== angioma_ultrasound_segmentation: 5-fold ensemble inference and the ablation on the held-out demo images"
    $PY -m monai.bundle run --config_file "['$configs/inference.json','$configs/evaluate.json','$configs/demo.json']" \
        --dataset_dir "$data/test" --runs_dir "$out" --output_dir "$out/test_predictions" --save_overlay True
}

retinal() {
    local configs=bundles/retinal_oct_edema_segmentation/configs
    local data=$DEMO/retinal_oct_edema_segmentation out=$RUNS/retinal_oct_edema_segmentation
    local size="--slices 16 --height 128 --width 64"
    echo "== retinal_oct_edema_segmentation: demo data (OCT cubes of 16 B-scans of 128 x 64)"
    [ -d "$data/train" ] || $PY scripts/make_demo_data.py retinal_oct_edema_segmentation "$data/train" --cases 8 --seed 0 $size --val-cases 2 --test-cases 2
    [ -d "$data/heldout" ] || $PY scripts/make_demo_data.py retinal_oct_edema_segmentation "$data/heldout" --cases 1 --seed 1 $size --val-cases 4 --test-cases 0
    rm -rf "$out"
    echo "== retinal_oct_edema_segmentation: train the UNet++ (EL-Dice, poly schedule; CPU demo size)"
    $PY -m monai.bundle run --config_file "['$configs/train.json','$configs/demo.json']" \
        --dataset_dir "$data/train" --output_dir "$out/unet_plus_plus"
    echo "== retinal_oct_edema_segmentation: train the UNet, its fusion partner (plain Dice, step schedule)"
    $PY -m monai.bundle run --config_file "['$configs/train.json','$configs/unet.json','$configs/demo.json']" \
        --dataset_dir "$data/train" --output_dir "$out/unet"
    local models="--model_path $out/unet_plus_plus/models/model.pt --fusion_model_path $out/unet/models/model.pt"
    echo "== retinal_oct_edema_segmentation: fused inference on the test cubes (NIfTI label volumes + detection CSVs)"
    $PY -m monai.bundle run --config_file "['$configs/inference.json','$configs/demo.json']" \
        --input_dir "$data/train/Edema_testset/original_images" --output_dir "$out/predictions" $models
    echo "== retinal_oct_edema_segmentation: evaluation on held-out cubes (UNet++, UNet and their fusion)"
    $PY -m monai.bundle run --config_file "['$configs/inference.json','$configs/evaluate.json','$configs/demo.json']" \
        --dataset_dir "$data/heldout" --output_dir "$out/eval" $models
}

cervical_spine() {
    local configs=bundles/cervical_spine_ct_fracture/configs
    local data=$DEMO/cervical_spine_ct_fracture out=$RUNS/cervical_spine_ct_fracture
    local demo="$configs/demo.json"
    echo "== cervical_spine_ct_fracture: demo data (DICOM studies of 72 slices of 64 x 64, NIfTI label maps, train.csv)"
    [ -d "$data/train" ] || $PY scripts/make_demo_data.py cervical_spine_ct_fracture "$data/train" --cases 24 --seed 0 --test-cases 1
    [ -d "$data/heldout" ] || $PY scripts/make_demo_data.py cervical_spine_ct_fracture "$data/heldout" --cases 6 --seed 1 --test-cases 1 --segmented-fraction 1
    rm -rf "$out"
    echo "== cervical_spine_ct_fracture: stage 1, vertebra segmentation (ir-CSN UNet, CPU demo size)"
    $PY -m monai.bundle run --config_file "['$configs/train.json','$demo']" --dataset_dir "$data/train" \
        --output_dir "$out/segmentation/fold1" --max_epochs 36 --dataset_multiplier 8 --batch_size 2 --learning_rate 0.003
    echo "== cervical_spine_ct_fracture: stage-1 label maps of every training study"
    $PY -m monai.bundle run --config_file "['$configs/inference.json','$configs/predict_segmentation.json','$demo']" \
        --input_dir "$data/train/train_images" --runs_dir "$out" --output_dir "$out/segmentation/predictions"
    echo "== cervical_spine_ct_fracture: stage 2, per-vertebra fracture classifier (ir-CSN, fold 0), top-2 average"
    $PY -m monai.bundle run --config_file "['$configs/train.json','$configs/classifier.json','$demo']" \
        --dataset_dir "$data/train" --segmentation_dir "$out/segmentation/predictions" --fold 0 \
        --output_dir "$out/classifier/ir_csn_152/fold0" --max_epochs 12 --dataset_multiplier 4 --batch_size 8 --learning_rate 0.001
    $PY scripts/average_checkpoints.py "$out/classifier/ir_csn_152/fold0/top_k" --top-k 2 \
        --output "$out/classifier/ir_csn_152/fold0/models/averaged.pt"
    echo "== cervical_spine_ct_fracture: inference (submission CSV, label maps, overlays) + evaluation on held-out studies"
    $PY -m monai.bundle run --config_file "['$configs/inference.json','$configs/evaluate.json','$demo']" \
        --dataset_dir "$data/heldout" --runs_dir "$out" --ip_model_paths "[]" --prior_csv "$data/train/train.csv" \
        --output_dir "$out/eval"
}

fetal_cervix() {
    local configs=bundles/fetal_cervix_ultrasound_segmentation/configs
    local data=$DEMO/fetal_cervix_ultrasound_segmentation out=$RUNS/fetal_cervix_ultrasound_segmentation
    local size="--height 64 --width 96"
    echo "== fetal_cervix_ultrasound_segmentation: demo data (images of 64 x 96, 15 % labelled)"
    [ -d "$data/train" ] || $PY scripts/make_demo_data.py fetal_cervix_ultrasound_segmentation "$data/train" --cases 96 --seed 0 --labelled 0.15 $size
    [ -d "$data/test" ] || $PY scripts/make_demo_data.py fetal_cervix_ultrasound_segmentation "$data/test" --cases 24 --seed 1 --heldout $size
    rm -rf "$out"
    local train="$configs/train.json" demo="$configs/demo.json" resnet="$configs/resnet.json" sup="$configs/supervised.json"
    local run="$PY -m monai.bundle run"
    echo "== fetal_cervix_ultrasound_segmentation: supervised-only baseline on the labelled images alone"
    $run --config_file "['$train','$sup','$demo']" --dataset_dir "$data/train" --output_dir "$out/supervised/pvt_v2_b1"
    $run --config_file "['$train','$resnet','$sup','$demo']" --dataset_dir "$data/train" --output_dir "$out/supervised/resnet34d"
    echo "== fetal_cervix_ultrasound_segmentation: stage 1, UniMatch (PVT-v2-b1 and ResNet34-D UNets)"
    $run --config_file "['$train','$demo']" --dataset_dir "$data/train" --output_dir "$out/unimatch/pvt_v2_b1"
    $run --config_file "['$train','$resnet','$demo']" --dataset_dir "$data/train" --output_dir "$out/unimatch/resnet34d"
    echo "== fetal_cervix_ultrasound_segmentation: one round of self-training: automatic pseudo-label selection with"
    echo "   the UniMatch models, then each network trained on labelled + selected pseudo-labels"
    $PY scripts/self_training_rounds.py --rounds 1 --dataset_dir "$data/train" --runs_dir "$out" --extra "$demo"
    $PY -c "import json, sys; from engines.self_training import selection_quality; print('pseudo-label Dice vs hidden truth:', json.dumps(selection_quality(sys.argv[1], sys.argv[2])))" \
        "$out/pseudo_labels/round1/selection.json" "$data/train/hidden_labels"
    echo "== fetal_cervix_ultrasound_segmentation: evaluation on held-out demo images (each network and the logit ensemble)"
    for stage in supervised unimatch self_training/round1; do
        $run --config_file "['$configs/inference.json','$configs/evaluate.json','$demo']" --dataset_dir "$data/test" \
            --evaluate_all True --runs_dir "$out/$stage" --title "$stage" --output_dir "$out/$stage/evaluation"
    done
    echo "== fetal_cervix_ultrasound_segmentation: predictions + overlays of the self-trained ensemble"
    $run --config_file "['$configs/inference.json','$demo']" --input_dir "$data/test" --runs_dir "$out/self_training/round1" \
        --output_dir "$out/predictions" --save_overlay True
}

carotid
angioma
retinal
fetal_cervix
cervical_spine
echo "Done. Predictions, overlays, score tables and TensorBoard logs are under $RUNS/"
