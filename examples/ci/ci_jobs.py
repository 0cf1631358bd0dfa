"""Turn the CI jobs in this folder into a bash script that runs their commands here, as the CI service would,
minus what needs the service itself (installing packages, actions such as checkout/cache/upload, the pull-request
comment). Used by check.sh:

    python examples/ci/ci_jobs.py github|gitlab BASE_SHA > job.sh

The script exports the job's variables (values already in the environment win), maps the service's
variables (base commit, workspace, step summary) to local ones, and runs each command with ``set -e``
semantics per step, exiting with the first failing step's code.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
#: Commands that need the CI service or the network; the local environment already has what they provide.
SKIPPED = ("pip install", "gh pr comment")


def github(base_sha: str) -> list[str]:
    doc = yaml.safe_load((HERE / "github-actions.yml").read_text())
    lines = [f"export {k}=${{{k}:-{shlex.quote(str(v))}}}" for k, v in (doc.get("env") or {}).items()]
    lines.append('export GITHUB_WORKSPACE="$PWD"')
    for step in doc["jobs"]["speed-gate"]["steps"]:
        if "run" not in step or step["run"].strip().startswith(SKIPPED):
            continue
        script = step["run"].replace("${{ github.event.pull_request.base.sha }}", base_sha)
        if "${{" in script:
            raise SystemExit(f"unmapped expression in step {step.get('name')!r}: {script}")
        if step.get("if", "").startswith("steps.baseline.outputs.cache-hit"):
            script = f"if [ ! -f artifacts/baseline/manifest.json ]; then\n{script}\nfi"
        lines += [f"# --- {step.get('name', 'step')}", script]
    return lines


def gitlab(base_sha: str) -> list[str]:
    doc = yaml.safe_load((HERE / "gitlab-ci.yml").read_text())
    job = doc["speed-gate"]
    lines = [f"export {k}=${{{k}:-{shlex.quote(str(v))}}}" for k, v in (job.get("variables") or {}).items()]
    lines += [f"export CI_MERGE_REQUEST_DIFF_BASE_SHA={base_sha}", 'export CI_PROJECT_DIR="$PWD"']
    for command in job["script"]:
        if command.strip().startswith(SKIPPED):
            continue
        lines += ["# --- script", command]
    return lines


def main() -> int:
    platform, base_sha = sys.argv[1], sys.argv[2]
    lines = {"github": github, "gitlab": gitlab}[platform](base_sha)
    body = ["set -e -o pipefail", *lines]
    print("\n".join(body))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
