#!/usr/bin/env bash
# Whole-slide inference on many slides with N processes (the launcher of dist_train.sh):
#   tools/dist_infer.sh CONFIG CHECKPOINT NUM_PROCS SLIDES... [infer_slide.py options]
# Slides are sharded across processes (process r takes slides r, r+N, ...); each process uses one
# GPU when CUDA is available (cuda:LOCAL_RANK), else the CPU. Ranks exchange only their summary
# records (torch.distributed, gloo backend) and rank 0 writes the merged cohort_summary.csv.
# Multi-node: set NNODES, NODE_RANK, MASTER_ADDR and PORT on every node (shared output folder).
set -euo pipefail

if [ $# -lt 4 ]; then
    echo "usage: $0 CONFIG CHECKPOINT NUM_PROCS SLIDES... [infer_slide.py options]" >&2
    exit 2
fi
CONFIG=$1
CHECKPOINT=$2
NPROC=$3
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
PORT=${PORT:-29500}
MASTER_ADDR=${MASTER_ADDR:-127.0.0.1}
PYTHON=${PYTHON:-python}
HERE="$(cd "$(dirname "$0")" && pwd)"

exec "$PYTHON" -m torch.distributed.run \
    --nnodes="$NNODES" \
    --node_rank="$NODE_RANK" \
    --master_addr="$MASTER_ADDR" \
    --nproc_per_node="$NPROC" \
    --master_port="$PORT" \
    "$HERE/infer_slide.py" \
    "$CONFIG" \
    "$CHECKPOINT" \
    --launcher pytorch "${@:4}"
