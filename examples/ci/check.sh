#!/usr/bin/env bash
# Run the CI jobs of this folder (github-actions.yml, gitlab-ci.yml) here, on the tiny model, as the CI
# service would: in a fresh clone of this repository's committed state, with a base commit and a head commit.
#
#   1. GitHub Actions, model unchanged between base and head           → exit 0, gate.xml/gate.md written,
#                                                                          the Markdown appended to $GITHUB_STEP_SUMMARY
#   2. GitHub Actions, head's model 3× wider (a real slowdown)          → exit 1, the JUnit file says p50 failed
#   3. GitLab CI, model unchanged, accuracy re-measured on an .npz     → exit 0, accuracy in the summary
#
# Needs the repository's virtual environment (.venv) with infership installed; takes a few minutes.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
export PATH="$root/.venv/bin:$PATH"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "check.sh: FAILED: $*" >&2; exit 1; }

git clone -q "$root" "$tmp/repo" || fail "clone"
cd "$tmp/repo"
git -c user.email=ci@example.invalid -c user.name=ci commit -q --allow-empty -m "head: model unchanged"
unchanged=$(git rev-parse HEAD~1)

run_job() {  # platform base_sha expected_exit
    rm -rf artifacts gate.xml gate.md gate.json ../base
    git worktree prune
    python "$here/ci_jobs.py" "$1" "$2" > "$tmp/job.sh" || fail "ci_jobs.py $1"
    bash "$tmp/job.sh" > "$tmp/$1.log" 2>&1
    rc=$?
    tail -n 25 "$tmp/$1.log"
    [[ $rc -eq $3 ]] || fail "$1 job exited $rc, expected $3 (log: above)"
    python - <<'PY' || fail "gate.xml is not JUnit XML"
import xml.etree.ElementTree as ET
suite = ET.parse("gate.xml").getroot().find("testsuite")
assert suite is not None and int(suite.get("tests")) >= 2
PY
    [[ -s gate.md ]] || fail "gate.md not written"
}

echo "== 1. GitHub Actions, model unchanged"
export GITHUB_STEP_SUMMARY="$tmp/step_summary.md"
run_job github "$unchanged" 0
grep -q "infership compare: no regression (exit 0)" "$GITHUB_STEP_SUMMARY" || fail "step summary not appended"

echo "== 2. GitHub Actions, a wider model on the head commit"
sed -i 's/nn.Conv2d(3, 16, 3, padding=1)/nn.Conv2d(3, 48, 3, padding=1)/; s/nn.Conv2d(16, 16, 3, padding=1)/nn.Conv2d(48, 16, 3, padding=1)/' examples/ci/tiny_model.py
git -c user.email=ci@example.invalid -c user.name=ci commit -q -am "head: a 3x wider first layer"
run_job github "$(git rev-parse HEAD~1)" 1
python - <<'PY' || fail "gate.xml does not report the p50 failure"
import xml.etree.ElementTree as ET
cases = {c.get("name"): c for c in ET.parse("gate.xml").getroot().iter("testcase")}
assert cases["p50"].find("failure") is not None
PY
git reset -q --hard HEAD~1
unset GITHUB_STEP_SUMMARY

echo "== 3. GitLab CI, model unchanged, accuracy re-measured"
python - <<'PY' || fail "validation set"
import numpy as np
rng = np.random.default_rng(0)
np.savez("val.npz", input=rng.standard_normal((64, 3, 64, 64)).astype(np.float32), labels=rng.integers(0, 10, 64))
PY
GATE_VALIDATION="$PWD/val.npz" run_job gitlab "$unchanged" 0
grep -q "accuracy" gate.md || fail "accuracy not in the summary"
echo "check.sh: all CI jobs behaved as expected"
