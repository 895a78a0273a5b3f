#!/usr/bin/env bash
# Train the solve-first s, m and l on a lent GPU in one call and bring back weights and grades
# (docs/guide.md, "Training the ladder on a GPU"). Two steps:
#
#   bash benchmarks/gpu_ladder.sh prepare      # here, once: wheels the GPU image lacks, into .whl/
#   device run: command "bash benchmarks/gpu_ladder.sh device", carry [".whl"], timeout_s 600
#
# On the device the image's python3 has torch 2.11, transformers 5.17, typer, rich, yaml, statsmodels
# and scikit-learn but not pydantic: the carried wheels go to /tmp/site. (Those versions are older
# than the ones tested here.) Training gets BUDGET_S seconds (default 300), then every run saves its
# state and what finished is graded; the whole call is cut at CALL_S (default 560) with SIGINT, which
# still packs. The output comes back as $OUT/ladder-sf.tgz.part0.. (named after LADDER_ROOT's last part;
# split under the 16 MiB a returned file may hold; `cat ladder-sf.tgz.part* > ladder-sf.tgz` joins them),
# $OUT/ladder.json and $OUT/run.log. Stopped runs keep their state in the archive, so a later session with
# a GPU can unpack it as runs/ladder-sf, carry that too, and run the same command to resume.
set -euo pipefail
cd "$(dirname "$0")/.."
# Another ladder: e.g. CONFIGS="$(echo configs/zoo/arith-only/*.yaml)" GRADE_WITH= LADDER_ROOT=runs/arith-only
# SLICES="arith:steps=6,distractors=0;arith:steps=4,distractors=2" (train-ladder's --slices; empty: its default),
# then its continuation, a second call with the same overrides but CONFIGS="$(echo configs/zoo/arith-only/continued/*.yaml)"
# (each starts from runs/arith-only/<its base>, its init_from: keep LADDER_ROOT=runs/arith-only, and carry the
# first call's finished runs);
# the logic twin: CONFIGS="$(echo configs/zoo/logic-only/*.yaml)" GRADE_WITH= LADDER_ROOT=runs/logic-only
# SLICES="logic:hops=3,distractors=1;logic:hops=4,distractors=2", and its continuation likewise
# (configs/zoo/logic-only/continued/, LADDER_ROOT=runs/logic-only)
CONFIGS="${CONFIGS:-configs/zoo/zoo-s-sf.yaml configs/zoo/zoo-m-sf.yaml configs/zoo/zoo-l-sf.yaml}"
GRADE_WITH="${GRADE_WITH-zoo-xs-sf-s0,zoo-xs-sf-s1,zoo-xs-sf-s2}"
case "${1:-}" in
  prepare)
    rm -rf .whl  # one version of each wheel: two stop the install there
    grep -qx '/.whl/' .git/info/exclude 2>/dev/null || { mkdir -p .git/info; echo '/.whl/' >> .git/info/exclude; }
    want() { grep -i "^$1==" constraints.txt; }
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
      --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
      "$(want pydantic)" "$(want pydantic_core)" "$(want annotated-types)" "$(want typing-inspection)" "$(want typing_extensions)"
    ls -l .whl
    ;;
  device)
    : "${OUT:?OUT is set on the device machine only}"
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH="/tmp/site:$PWD" PYTHONUNBUFFERED=1
    nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
    root="${LADDER_ROOT:-runs/ladder-sf}"
    name="$(basename "$root")"
    pack="${PACK:-${TMPDIR:-/tmp}/$name.tgz}"
    rm -f "$pack"  # a call that fails before packing must not return an earlier call's archive
    set +e
    # shellcheck disable=SC2086
    timeout -s INT -k 20 "${CALL_S:-560}" python3 -m verinet.cli zoo train-ladder $CONFIGS --out-root "$root" \
      --parallel 3 --loader-workers 4 --grade-with "$GRADE_WITH" --budget-s "${BUDGET_S:-300}" \
      ${SLICES:+--slices "$SLICES"} \
      --pack "$pack" 2>&1 | tee "$OUT/run.log"
    rc=${PIPESTATUS[0]}
    [ -f "$pack" ] && split -b 15M -d -a 1 "$pack" "$OUT/$name.tgz.part"
    cp "$root/ladder.json" "$OUT/" 2>/dev/null
    ls -l "$OUT"
    exit "$rc"
    ;;
  *)
    echo "usage: bash benchmarks/gpu_ladder.sh prepare|device" >&2
    exit 2
    ;;
esac
