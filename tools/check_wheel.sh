#!/usr/bin/env bash
# The wheel as a user gets it: build the wheel and sdist, `twine check` them, install the wheel into a
# fresh venv outside the clone (torch first, by tools/install_torch.py: the CPU build where one is to be
# had) and run `graft demo` and `graft fit` (on ../shared/datasets when it is there) from another folder,
# so nothing of the clone is on the path. Prints the venv's size and each step's time. .ci/run calls it
# after the test suite; by hand: `bash tools/check_wheel.sh` (needs `make install` first: build, twine).
# KEEP=1 leaves the scratch folder (printed) for a look.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PY="${PYTHON:-$ROOT/.venv/bin/python}"
SHARED="$ROOT/../shared/datasets"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/graft-wheel.XXXXXX")"
[ "${KEEP:-0}" = 1 ] || trap 'rm -rf "$WORK"' EXIT
step() { echo "== $* ($(date -u +%H:%M:%S))"; }
started=$(date +%s)

step "build"
"$PY" -m build --outdir "$WORK/dist" "$ROOT" >"$WORK/build.log" 2>&1 || { tail -30 "$WORK/build.log"; exit 1; }
"$PY" -m twine check --strict "$WORK"/dist/*
wheel=$(ls "$WORK"/dist/*.whl)
echo "built $(basename "$wheel") ($(du -k "$wheel" | cut -f1) KiB) and $(basename "$WORK"/dist/*.tar.gz)"
for needed in graft/py.typed graft/reporting/templates/ graft/curation/wordnet_imagenet.json.gz; do
  # grep reads the whole listing (-q would stop at the first match: zipfile's SIGPIPE fails the pipe)
  "$PY" -m zipfile -l "$wheel" | grep "$needed" >/dev/null || { echo "the wheel lacks $needed"; exit 1; }
done

step "fresh venv, torch"
python3 -m venv "$WORK/venv"
cd "$WORK"  # not the clone: `import graft` must find the installed wheel, nothing else
t0=$(date +%s)
"$WORK/venv/bin/python" "$ROOT/tools/install_torch.py"
step "the wheel"
"$WORK/venv/bin/python" -m pip install -q "$wheel" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
install_s=$(( $(date +%s) - t0 ))
echo "installed in ${install_s} s; the venv holds $(du -sh "$WORK/venv" | cut -f1)"
"$WORK/venv/bin/python" - <<'EOF'
import graft, importlib.metadata as m
assert "site-packages" in graft.__file__, graft.__file__
assert m.version("graft-vision") == graft.__version__, (m.version("graft-vision"), graft.__version__)
print(f"graft {graft.__version__} from {graft.__file__}")
EOF
export GRAFT_NO_PROGRESS=1
"$WORK/venv/bin/graft" --version

step "every command on the plain install (no extras)"
commands=$("$WORK/venv/bin/graft" --help | awk '/^Commands:/ {on=1; next} on && NF {print $1}')
for command in $commands; do "$WORK/venv/bin/graft" "$command" --help >/dev/null; done
echo "graft COMMAND --help runs for: $(echo $commands)"
# the one command that needs an extra says which, in one line, exit 2
set +e; said=$("$WORK/venv/bin/graft" serve "x=$WORK" 2>&1); code=$?; set -e
echo "graft serve without the extra: exit $code: $said"
[ "$code" = 2 ] && grep -q "pip install '.*\[serve\]'" <<<"$said" || { echo "graft serve does not name its extra"; exit 1; }

step "graft demo"
"$WORK/venv/bin/graft" demo -o "$WORK/runs/demo"
if [ -d "$SHARED/hymenoptera" ]; then
  step "graft fit on shared data"
  "$WORK/venv/bin/graft" fit "$SHARED/hymenoptera/train" --val "$SHARED/hymenoptera/val" -o "$WORK/runs/hym"
  "$WORK/venv/bin/graft" predict "$WORK/runs/hym" "$SHARED/hymenoptera/val/bees" --top-k 1 --json >"$WORK/bees.jsonl"
  head -2 "$WORK/bees.jsonl"
  rows=$(wc -l <"$WORK/bees.jsonl")
  echo "graft predict: $rows rows for $(ls "$SHARED/hymenoptera/val/bees" | wc -l) files in hymenoptera/val/bees"
  [ "$rows" -gt 0 ]
else
  echo "no $SHARED: graft fit on shared data not run"
fi
step "done in $(( $(date +%s) - started )) s"
