#!/usr/bin/env bash
# Issue-5 comparison on the NFlowJS model of tools/compare_negatives.py: S2M (learned / peak prompter, GrabCut)
# vs the jsd map thresholded at its oracle best-F1 threshold, on the same held-out synthetic frames.
#   bash tools/s2m_vs_threshold.sh [RUN=runs/negatives] [OUT=runs/s2m_nflowjs]
set -euo pipefail
RUN=${1:-runs/negatives}
OUT=${2:-runs/s2m_nflowjs}
PY=${PY:-.venv/bin/python}
mkdir -p "$OUT"
cp "$RUN/train_flow/model.pt" "$OUT/model.pt"   # the prompter is stored inside this copy
$PY -m denseood train-prompter --checkpoint "$OUT/model.pt" --dataset synthetic --root "$RUN/data" \
    --negatives flow --steps 300 --batch-size 4 --crop 128
for p in learned peak; do
  $PY -m denseood eval --dataset synthetic --root "$RUN/data" --checkpoint "$OUT/model.pt" --score jsd,msp,maxlogit \
      --s2m --prompter $p --prompt-model grabcut --protocol exact --min-segment-size 50 --min-instance-size 10 \
      --workers 0 --overwrite --out "$OUT/eval_$p"
done
