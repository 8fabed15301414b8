#!/usr/bin/env bash
# The `make demo` job: train a small multi-class PCL cell detector on real expert annotations --
# the bundled EndoNuke IHC tiles (stroma / epithelium / other; CC BY 4.0, Naumov et al., Data 2022)
# with 10% of the nuclei of each training tile annotated -- choose its decoding threshold on the
# validation tiles, evaluate it on the held-out acquisition block (test) and on the never-annotated
# training nuclei, and write predictions (CSV + QuPath GeoJSON) and overlays.
#
#   PYTHON=.venv/bin/python bash tools/run_demo.sh            # PCL only (a few CPU minutes)
#   COMPARE=1 PYTHON=.venv/bin/python bash tools/run_demo.sh  # + plain soft CE (3 classes) and
#                                                             #   SEL (1 class), same subset/seed
#
# Deterministic: in-process data loading (num_workers=0), fixed seeds (training, sampler, sparse
# subset), fixed thread counts (OMP/MKL/torch: 2 unless OMP_NUM_THREADS is set) and
# PYTHONHASHSEED. Numbers are identical run to run on one machine; another CPU / thread count
# / torch build can change the last digits of the training and therefore the numbers.
# Outputs go to work_dirs/demo/ (override with WORK_DIR).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python}
WORK_DIR=${WORK_DIR:-work_dirs/demo}
COMPARE=${COMPARE:-0}
export PYTHONHASHSEED=0
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
export MKL_NUM_THREADS=${MKL_NUM_THREADS:-$OMP_NUM_THREADS}

declare -A CONFIGS=(
  [pcl]=configs/pcl/pcl_r18-fpn_20e_endonuke-10pct.py
  [sel]=configs/sel/sel_r18-fpn_20e_endonuke-nucleus-10pct.py
  [plain]=configs/pointdet/heatmap_r18-fpn_20e_endonuke-10pct.py
)
# classes scored in val/test ("other" has no ground truth in the bundled val/test tiles)
declare -A EVAL_CLASSES=([pcl]="stroma epithelium" [plain]="stroma epithelium" [sel]="nucleus")
METHODS=(pcl)
if [[ "$COMPARE" == 1 ]]; then METHODS=(plain sel pcl); fi
TRAIN_SPLIT_OPTS="test_dataloader.dataset.split=train test_dataloader.dataset.sparse_ratio=0.1"

for method in "${METHODS[@]}"; do
  config=${CONFIGS[$method]}
  wd=$WORK_DIR/$method
  echo "=== [$method] training $config (28 EndoNuke tiles, 10% of the nuclei annotated)"
  "$PYTHON" tools/train.py "$config" --work-dir "$wd"
  ckpt=$(cat "$wd/last_checkpoint")
  echo "=== [$method] choosing the decoding threshold on the 8 validation tiles"
  "$PYTHON" tools/analysis_tools/threshold_sweep.py "$config" "$ckpt" --split val \
    --thrs 0.001 0.002 0.003 0.005 0.01 0.02 0.05 0.1 0.15 0.2 0.3 0.4 0.5 0.6 0.7 --out "$wd/val_thr_sweep.json" >/dev/null
  # shellcheck disable=SC2086
  thr=$("$PYTHON" tools/analysis_tools/summarize_demo.py --choose-thr "$wd/val_thr_sweep.json" \
        --eval-classes ${EVAL_CLASSES[$method]})
  echo "$thr" > "$wd/score_thr.txt"
  echo "=== [$method] threshold $thr; evaluating on val, on the held-out block D (test) and on the training tiles"
  "$PYTHON" tools/test.py "$config" "$ckpt" --work-dir "$wd/test_val" \
    --metrics-json "$wd/metrics_val.json" \
    --cfg-options model.head.codec.score_thr="$thr" test_dataloader.dataset.split=val
  "$PYTHON" tools/test.py "$config" "$ckpt" --work-dir "$wd/test_test" \
    --show-dir vis --metrics-json "$wd/metrics_test.json" \
    --cfg-options model.head.codec.score_thr="$thr"
  # shellcheck disable=SC2086
  "$PYTHON" tools/test.py "$config" "$ckpt" --work-dir "$wd/test_train" \
    --metrics-json "$wd/metrics_train.json" \
    --cfg-options model.head.codec.score_thr="$thr" $TRAIN_SPLIT_OPTS
done

pcl_wd=$WORK_DIR/pcl
echo "=== writing predictions (CSV, QuPath GeoJSON) and 4x overlays for the test tiles"
"$PYTHON" tools/analysis_tools/predict_tiles.py "${CONFIGS[pcl]}" "$(cat "$pcl_wd/last_checkpoint")" \
  --split test --score-thr "$(cat "$pcl_wd/score_thr.txt")" --out-dir "$pcl_wd/predictions" \
  --upscale 4

echo "=== classical blob detector on the same tiles (parameters chosen on val; no training)"
"$PYTHON" tools/analysis_tools/ratio_sweep.py --classical-only "${CONFIGS[pcl]}" \
  --classical-out "$WORK_DIR"

# shellcheck disable=SC2086
"$PYTHON" tools/analysis_tools/summarize_demo.py "$WORK_DIR" "${METHODS[@]}" \
  --eval-classes stroma epithelium \
  --title "Demo results (EndoNuke expert points, 10% of training nuclei annotated; test = block D; match radius 6 px; mF1 over stroma + epithelium)"
echo "Overlays: $pcl_wd/test_test/*/vis and $pcl_wd/predictions (QuPath: File > Import objects, *.geojson)"
