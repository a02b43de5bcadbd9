#!/usr/bin/env bash
# Runs every cargo-fuzz target (or the ones named) for a bounded time each and
# prints a table: target, seconds, total execs, execs/s, new corpus inputs,
# crashes. Not part of the test command (the stable suite replays the corpus).
#
#   bash scripts/fuzz.sh                 # every target, 60 s each
#   bash scripts/fuzz.sh -t 600 cpio qmp # two targets, 10 min each
#   bash scripts/fuzz.sh --merge         # also merge new coverage into fuzz/corpus
#   bash scripts/fuzz.sh -r 10000000 -t 1800  # 10 M execs each, at most 30 min
#
# Needs cargo-fuzz (`cargo install --locked cargo-fuzz`; installed on demand)
# and runs on stable through RUSTC_BOOTSTRAP=1, with AddressSanitizer. New
# inputs go to a scratch corpus in $FUZZ_WORK (default ~/.cache/guestinit-fuzz),
# seeded from fuzz/corpus/<target>; crash reproducers land in
# fuzz/artifacts/<target>/. Exit status 1 when any target crashed.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

seconds=60
runs=-1
merge=0
targets=()
while [ $# -gt 0 ]; do
  case "$1" in
    -t|--seconds) seconds="$2"; shift 2 ;;
    -r|--runs) runs="$2"; shift 2 ;;
    --merge) merge=1; shift ;;
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
    *) targets+=("$1"); shift ;;
  esac
done
if [ "${#targets[@]}" -eq 0 ]; then
  mapfile -t targets < <(awk '/^\[\[bin\]\]/ {bin = 1; next}
    bin && /^name = / {gsub(/"/, "", $3); print $3; bin = 0}' Cargo.toml)
fi

command -v cargo-fuzz >/dev/null || cargo install --locked --quiet cargo-fuzz
export RUSTC_BOOTSTRAP=1
work="${FUZZ_WORK:-$HOME/.cache/guestinit-fuzz}"
mkdir -p "$work"
# Built once: the runs below use these binaries, so editing the tree while a
# campaign runs changes nothing in it.
cargo fuzz build >/dev/null 2>"$work/build.log" || { cat "$work/build.log"; exit 1; }
bindir="target/x86_64-unknown-linux-gnu/release"

printf '| target | seconds | total execs | execs/s | new inputs | crashes |\n'
printf '|---|---:|---:|---:|---:|---:|\n'
failed=0
for t in "${targets[@]}"; do
  scratch="$work/corpus/$t"
  mkdir -p "$scratch" "artifacts/$t"
  before=$(find "$scratch" -type f | wc -l)
  log="$work/$t.log"
  status=0
  started=$(date +%s)
  "$bindir/$t" "$scratch" "corpus/$t" -artifact_prefix="artifacts/$t/" \
    -max_total_time="$seconds" -runs="$runs" -print_final_stats=1 -rss_limit_mb=2048 -timeout=10 \
    >"$log" 2>&1 || status=$?
  took=$(($(date +%s) - started))
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  after=$(find "$scratch" -type f | wc -l)
  # Only this run's reproducers: an older one left in artifacts/ is not news.
  crashes=$(find "artifacts/$t" -type f -newermt "@$started" | wc -l)
  if [ "$status" -ne 0 ]; then
    failed=1
    crashes=$((crashes > 0 ? crashes : 1))
    echo "$t: exit $status; see $log" >&2
  fi
  printf '| %s | %s | %s | %s | %s | %s |\n' "$t" "$took" "${execs:-?}" "${rate:-?}" \
    "$((after - before))" "$crashes"
  if [ "$merge" -eq 1 ]; then
    # Adds to the checked-in corpus only the inputs that reach new coverage.
    "$bindir/$t" -merge=1 "corpus/$t" "$scratch" >/dev/null 2>&1 || true
  fi
done
exit "$failed"
