#!/usr/bin/env bash
# The `make demo` job: train a small PCL cell detector on the bundled IHC demo tiles with 10% of
# the nuclei annotated, evaluate it, and write predictions + overlays.
#
#   PYTHON=.venv/bin/python bash tools/run_demo.sh            # PCL only (a few CPU minutes)
#   COMPARE=1 PYTHON=.venv/bin/python bash tools/run_demo.sh  # + plain CE and SEL, same seed/schedule
#
# Outputs go to work_dirs/demo/ (override with WORK_DIR).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python}
WORK_DIR=${WORK_DIR:-work_dirs/demo}
COMPARE=${COMPARE:-0}
export PYTHONHASHSEED=0 OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}

declare -A CONFIGS=(
  [pcl]=configs/pcl/pcl_r18-fpn_40e_ihc-demo-10pct.py
  [sel]=configs/sel/sel_r18-fpn_40e_ihc-demo-10pct.py
  [plain]=configs/pointdet/heatmap_r18-fpn_40e_ihc-demo-10pct.py
)
METHODS=(pcl)
if [[ "$COMPARE" == 1 ]]; then METHODS=(plain sel pcl); fi

for method in "${METHODS[@]}"; do
  config=${CONFIGS[$method]}
  wd=$WORK_DIR/$method
  echo "=== [$method] training $config (validation on the held-out tile every 10 epochs)"
  "$PYTHON" tools/train.py "$config" --work-dir "$wd"
  ckpt=$(cat "$wd/last_checkpoint")
  echo "=== [$method] evaluating $ckpt on the held-out tile (all cells)"
  "$PYTHON" tools/test.py "$config" "$ckpt" --work-dir "$wd/test_val" \
    --show-dir vis --metrics-json "$wd/metrics_val.json" \
    --cfg-options test_dataloader.dataset.data_prefix.img=images/val \
                  test_dataloader.dataset.data_prefix.ann=annotations/val
  echo "=== [$method] evaluating on the training tiles (recall of the 90% never-annotated cells)"
  "$PYTHON" tools/test.py "$config" "$ckpt" --work-dir "$wd/test_train" \
    --metrics-json "$wd/metrics_train.json"
done

pcl_wd=$WORK_DIR/pcl
echo "=== writing predictions (CSV, QuPath GeoJSON) and overlays for the held-out tile"
"$PYTHON" tools/infer.py "${CONFIGS[pcl]}" "$(cat "$pcl_wd/last_checkpoint")" \
  data/demo/ihc_points/images/val --out-dir "$pcl_wd/predictions" --heatmap

echo "=== classical blob detector on the same tile (the trivial baseline)"
"$PYTHON" tools/analysis_tools/classical_baseline.py data/demo/ihc_points --split val \
  --out "$WORK_DIR/classical_val.json"

"$PYTHON" tools/analysis_tools/summarize_demo.py "$WORK_DIR" "${METHODS[@]}"
echo "Overlays: $pcl_wd/test_val/*/vis and $pcl_wd/predictions"
