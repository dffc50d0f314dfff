#!/usr/bin/env bash
# Coverage-guided fuzzing of every decoder of outside input (fuzz/, docs/fuzzing.md), on the
# stable toolchain: libFuzzer (libfuzzer-sys) with rustc's sanitizer-coverage pass.
#
# Usage: scripts/fuzz.sh [--seconds N] [--jobs J] [--list] [TARGET...]
#   --seconds N  how long to fuzz each target (default 60)
#   --jobs J     targets fuzzed at the same time (default 1)
#   --list       print the targets and exit
#   TARGET...    only these targets (default: all)
# Each target starts from its seeds (fuzz/corpus/<target>/) and a working corpus kept between
# runs in target/fuzz/corpus/<target>/. A crash, a hang or a broken resource bound stops that
# target; its input is written to target/fuzz/artifacts/<target>/ and the script exits 1
# after printing how to keep it as a regression test. The summary (executions, coverage,
# corpus size, peak RSS per target) is printed and written to target/fuzz/summary.txt.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=60 jobs=1 list=0 targets=()
while (($#)); do
  case "$1" in
    --seconds) seconds="$2"; shift 2 ;;
    --jobs) jobs="$2"; shift 2 ;;
    --list) list=1; shift ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    -*) echo "fuzz: unknown option $1" >&2; exit 2 ;;
    *) targets+=("$1"); shift ;;
  esac
done
[[ "$seconds" =~ ^[0-9]+$ && "$seconds" -gt 0 ]] || { echo "fuzz: --seconds needs a positive number" >&2; exit 2; }
[[ "$jobs" =~ ^[0-9]+$ && "$jobs" -gt 0 ]] || { echo "fuzz: --jobs needs a positive number" >&2; exit 2; }

host=$(rustc -vV | sed -n 's/^host: //p')
out=target/fuzz
# Coverage instrumentation as cargo-fuzz sets it, minus the sanitizer (which needs nightly).
# `--target` keeps these flags off build scripts and proc macros.
export RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing -Cdebug-assertions -Coverflow-checks"
# No LTO and many codegen units: the fuzz build is for coverage, not for speed of the binary.
export CARGO_PROFILE_RELEASE_LTO=false CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16 CARGO_PROFILE_RELEASE_DEBUG=line-tables-only
echo "fuzz: building the instrumented target binary (first build takes a few minutes)"
CARGO_TARGET_DIR="$out/build" cargo build --locked --release -q -p linecord-fuzz \
  --features libfuzzer --target "$host" --bin linecord-fuzz
unset RUSTFLAGS
bin="$out/build/$host/release/linecord-fuzz"

declare -A max_len
all=()
while read -r name len _; do
  max_len[$name]=$len
  all+=("$name")
done < <(LINECORD_FUZZ_LIST=1 "$bin" 2>/dev/null)
if ((list)); then LINECORD_FUZZ_LIST=1 "$bin" 2>/dev/null; exit 0; fi
((${#targets[@]})) || targets=("${all[@]}")
for t in "${targets[@]}"; do
  [[ -n "${max_len[$t]:-}" ]] || { echo "fuzz: no target $t (have: ${all[*]})" >&2; exit 2; }
done

run_one() { # target -> writes $out/log/<target>.log, returns libFuzzer's status
  local t="$1" corpus="$out/corpus/$1" artifacts="$out/artifacts/$1/"
  mkdir -p "$corpus" "$artifacts" "$out/log"
  LINECORD_FUZZ_TARGET="$t" timeout -k 10 $((seconds + 120)) "$bin" \
    -max_total_time="$seconds" -max_len="${max_len[$t]}" -timeout=10 -rss_limit_mb=2048 \
    -print_final_stats=1 -artifact_prefix="$artifacts" "$corpus" "fuzz/corpus/$t" \
    >"$out/log/$t.log" 2>&1
}

n=${#targets[@]} started=$SECONDS failed=()
rounds=$(( (n + jobs - 1) / jobs ))
echo "fuzz: ${n} target(s), ${seconds} s each, ${jobs} at a time: about $((rounds * seconds)) s"
i=0
while ((i < n)); do
  pids=() batch=()
  for ((j = 0; j < jobs && i < n; j++, i++)); do
    t="${targets[$i]}"
    left=$(( (rounds - i / jobs) * seconds ))
    echo "fuzz: [$((i + 1))/$n] $t (about ${left} s left)"
    run_one "$t" & pids+=($!) batch+=("$t")
  done
  for k in "${!pids[@]}"; do
    wait "${pids[$k]}" || failed+=("${batch[$k]}")
  done
done

summary="$out/summary.txt"
{
  printf '%-14s %8s %12s %10s %8s %8s %8s %8s\n' target seconds execs execs/s cov features corpus rss_mb
  for t in "${targets[@]}"; do
    log="$out/log/$t.log"
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n1)
    rss=$(sed -n 's/^stat::peak_rss_mb: *//p' "$log" | tail -n1)
    last=$(grep -E '^#[0-9]+' "$log" | tail -n1 || true)
    cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")
    ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")
    corp=$(sed -n 's/.* corp: \([0-9]*\).*/\1/p' <<<"$last")
    printf '%-14s %8s %12s %10s %8s %8s %8s %8s\n' "$t" "$seconds" "${execs:-?}" \
      "$(( ${execs:-0} / seconds ))" "${cov:-?}" "${ft:-?}" "${corp:-?}" "${rss:-?}"
  done
} | tee "$summary"
echo "fuzz: done in $((SECONDS - started)) s; summary in $summary"

if ((${#failed[@]})); then
  for t in "${failed[@]}"; do
    echo "fuzz: $t FAILED; the end of its log ($out/log/$t.log):" >&2
    tail -n 30 "$out/log/$t.log" >&2
    for a in "$out/artifacts/$t"/*; do
      [[ -e "$a" ]] || continue
      echo "fuzz: keep it as a regression test: mkdir -p fuzz/regressions/$t && cp $a fuzz/regressions/$t/" >&2
    done
  done
  exit 1
fi
