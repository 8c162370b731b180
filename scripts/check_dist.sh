#!/usr/bin/env bash
# Build the wheel and the sdist, install each into a fresh virtual environment as a user
# would (PyTorch's CPU build first, then `seqcls-harness[model]` from the file), and check
# that `harness plugins` lists the built-ins, a run on a tiny random model finishes, its
# `report --html` page (the template is package data) and `--format json` are made, and the
# example plugin package installs with its dependency (`seqcls-harness`) resolved by name.
# Called by .ci/run; needs PyPI (or its mirror) and ../shared/data (HARNESS_DATA_DIR).
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"
PYTHON="${PYTHON:-python3}"
TORCH="${TORCH:-torch==2.13.0}"
TORCH_INDEX="${TORCH_INDEX:-https://download.pytorch.org/whl/cpu}"
# absolute: the runs below start in a temporary folder
export HARNESS_DATA_DIR="$(cd "${HARNESS_DATA_DIR:-$root/../shared/data}" && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

"$PYTHON" -m venv "$work/build-env"
"$work/build-env/bin/pip" install --quiet build
"$work/build-env/bin/python" -m build --outdir "$work/dist" . > "$work/build.log" 2>&1 || { cat "$work/build.log"; exit 1; }
wheel="$(ls "$work"/dist/seqcls_harness-*.whl)"
sdist="$(ls "$work"/dist/seqcls_harness-*.tar.gz)"

cat > "$work/tiny.yaml" <<'YAML'
name: dist_check
defaults:
  model: bert-tiny
  init: random
  dataset: {name: cola, subset: {train: 64, validation: 32}}
  max_len: 32
  batch_size: 16
  epochs: 1
YAML

for kind in wheel sdist; do
  artifact="${!kind}"
  echo "== $kind: $(basename "$artifact")"
  env="$work/venv-$kind"
  "$PYTHON" -m venv "$env"
  "$env/bin/pip" install --quiet --retries 1 "$TORCH" --index-url "$TORCH_INDEX"
  "$env/bin/pip" install --quiet "seqcls-harness[model] @ file://$artifact"
  # (output to a file, not `| grep -q`: grep stops reading early and pipefail fails on the broken pipe)
  "$env/bin/pip" show seqcls-harness > "$work/show.txt"
  grep -q '^Name: seqcls-harness' "$work/show.txt"
  (cd "$work" && "$env/bin/harness" plugins) > "$work/plugins.txt"
  grep -q cola "$work/plugins.txt"
  (cd "$work" && "$env/bin/harness" run "$work/tiny.yaml" --out "$work/out-$kind" --no-progress)
  grep -q '"status": "ok"' "$work/out-$kind/results.jsonl"
  # the page's template is package data: it must be in the artifact
  (cd "$work" && "$env/bin/harness" report "$work/out-$kind" --html "$work/page-$kind.html")
  grep -q '<table id="results">' "$work/page-$kind.html"
  (cd "$work" && "$env/bin/harness" report "$work/out-$kind" --format json) > "$work/report-$kind.json"
  "$env/bin/python" -c 'import json, sys; assert len(json.load(open(sys.argv[1]))["rows"]) == 1' "$work/report-$kind.json"
  # the example plugin names `seqcls-harness` as its dependency: pip finds it installed
  "$env/bin/pip" install --quiet "$root/plugins/harness-example-dataset"
  (cd "$work" && "$env/bin/harness" plugins) > "$work/plugins.txt"
  grep -q reviews_example "$work/plugins.txt"
done
echo "check_dist: wheel and sdist install, list plugins, run, and take the example plugin"
