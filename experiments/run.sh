#!/usr/bin/env bash
# experiments/run.sh NAME: run conf/experiment/NAME.yaml (a single job, or a multirun when the
# file names a sweeper), then write its report. Results go to results/NAME (or the sweep dir).
set -euo pipefail
name=${1:?usage: experiments/run.sh EXPERIMENT [extra overrides]}
shift
seeds=${SEEDS:-64}
if grep -q "sweeper:" "conf/experiment/$name.yaml"; then
  prtm -m "experiment=$name" "seeds=$seeds" "hydra.sweep.dir=results/$name" "$@"
else
  prtm "experiment=$name" "seeds=$seeds" "hydra.run.dir=results/$name" "$@"
fi
prtm-aggregate "results/$name" >/dev/null 2>&1 || true
prtm-report "results/$name"
