#!/usr/bin/env bash
# The CI speed and accuracy gate: measure BASELINE and CANDIDATE artifacts interleaved in this job and
# judge the candidate; write JUnit XML (gate.xml) and a Markdown summary (gate.md, also appended to
# $GITHUB_STEP_SUMMARY on GitHub Actions). Used by github-actions.yml and gitlab-ci.yml.
#
#   examples/ci/speed-gate.sh BASELINE_ARTIFACT CANDIDATE_ARTIFACT [more infership compare options]
#
# Environment: GATE_VALIDATION (a validation set: image folder, .npz, FILE.py:FUNCTION; optional),
# GATE_ALLOW_INCONCLUSIVE=1 to pass (with a warning) when the runner was too noisy to decide.
# Exit: 0 no regression, 1 regression, 2 not comparable, 3 inconclusive, 4 error.
set -uo pipefail
baseline=$1 candidate=$2
shift 2
args=(compare --rerun "$baseline" "$candidate"
      --backend ort-cpu --threads 1 --batch 1 --duration 10 --max-duration 40 --max-slowdown 5% --max-p99-slowdown off
      --junit gate.xml --summary gate.md --json gate.json)
if [[ -n "${GATE_VALIDATION:-}" ]]; then
    args+=(--validation "$GATE_VALIDATION")
fi
infership "${args[@]}" "$@"
rc=$?
if [[ $rc -eq 3 && "${GATE_ALLOW_INCONCLUSIVE:-0}" == 1 ]]; then
    echo "::warning::speed gate inconclusive: the runner was too noisy to detect a 5% slowdown (see gate.md)"
    exit 0
fi
exit $rc
