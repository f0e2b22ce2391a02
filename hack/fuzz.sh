#!/usr/bin/env bash
# Fuzzes every cargo-fuzz target in fuzz/, one at a time and niced (the
# machine is shared), growing the corpus committed under fuzz/corpus/, then
# minimises each corpus with `cargo fuzz cmin` so it stays small.
#
#   hack/fuzz.sh [seconds-per-target] [target...]   # default: 60 s, all targets
#   hack/fuzz.sh --ci [seconds-per-target]           # short run: 15 s each, on a
#                                                    # copy of the corpus
#
# The long run rewrites fuzz/corpus/<target>/ (commit what it adds); a
# crash is written to fuzz/artifacts/<target>/ and fails the script. Fix the
# bug, keep the input (in fuzz/artifacts/ or the corpus) and commit it:
# `cargo test -p fluxgate-reconciler --test fuzz_replay` replays every
# committed input on stable Rust, so it stays fixed without a fuzzer.
#
# --ci fuzzes a temporary copy of the corpus (nothing in the tree changes
# but new crash artifacts) and, when the nightly toolchain or cargo-fuzz is
# missing, says so and exits 0: the stable replay test is what CI relies on.
#
# Needs: `rustup toolchain install nightly`, `cargo install cargo-fuzz`, a
# C++ compiler. The first build takes ~10 minutes on 2 cores.
#
# Environment:
#   FUZZ_MAX_LEN   largest input in bytes              (4096)
#   FUZZ_RSS_MB    memory limit per target, MiB         (2048)
#   FUZZ_TIMEOUT   seconds one input may take          (10)
#   FUZZ_NICE      niceness of the build and the runs  (10)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

ci=0
if [[ "${1:-}" == "--ci" ]]; then
  ci=1
  shift
fi
seconds="${1:-$([[ $ci == 1 ]] && echo 15 || echo 60)}"
[[ $# -gt 0 ]] && shift
if ! [[ "$seconds" =~ ^[0-9]+$ && "$seconds" -gt 0 ]]; then
  echo "usage: hack/fuzz.sh [--ci] [seconds-per-target] [target...]" >&2
  exit 2
fi
max_len="${FUZZ_MAX_LEN:-4096}"
rss_mb="${FUZZ_RSS_MB:-2048}"
timeout="${FUZZ_TIMEOUT:-10}"
niceness="${FUZZ_NICE:-10}"

if ! cargo +nightly --version >/dev/null 2>&1 || ! cargo +nightly fuzz --version >/dev/null 2>&1; then
  msg="hack/fuzz.sh: needs the nightly toolchain and cargo-fuzz (rustup toolchain install nightly; cargo install cargo-fuzz --locked)"
  if [[ $ci == 1 ]]; then
    echo "$msg; skipping the fuzz run (the stable replay test, cargo test -p fluxgate-reconciler --test fuzz_replay, still covers the committed corpus)" >&2
    exit 0
  fi
  echo "$msg" >&2
  exit 1
fi

targets=("$@")
if [[ ${#targets[@]} -eq 0 ]]; then
  mapfile -t targets < <(cargo +nightly fuzz list)
fi

dict_for() {
  case "$1" in
    repo_url | repo_pattern | repo_path) echo fuzz/dicts/url.dict ;;
    git_ref) echo fuzz/dicts/git_ref.dict ;;
    duration) echo fuzz/dicts/duration.dict ;;
    objects | manifests) echo fuzz/dicts/yaml.dict ;;
  esac
}

# The default build: optimised, with debug assertions and overflow checks
# (`-O` would drop them) and AddressSanitizer.
echo "building ${#targets[@]} fuzz targets (nightly, niced)" >&2
nice -n "$niceness" cargo +nightly fuzz build >&2

logs="$(mktemp -d)"
work=""
cleanup() {
  rm -rf "$logs"
  if [[ -n "$work" ]]; then rm -rf "$work"; fi
}
trap cleanup EXIT
if [[ $ci == 1 ]]; then
  work="$(mktemp -d)"
fi

libfuzzer_args=(-max_len="$max_len" -rss_limit_mb="$rss_mb" -malloc_limit_mb="$rss_mb" -timeout="$timeout")
failed=()
summary=()
for target in "${targets[@]}"; do
  corpus="fuzz/corpus/$target"
  mkdir -p "$corpus" "fuzz/artifacts/$target"
  if [[ $ci == 1 ]]; then
    mkdir -p "$work/$target"
    cp -r "$corpus/." "$work/$target/"
    corpus="$work/$target"
  fi
  dict="$(dict_for "$target")"
  args=("${libfuzzer_args[@]}" -max_total_time="$seconds" -print_final_stats=1)
  [[ -n "$dict" ]] && args+=(-dict="$dict")
  log="$logs/$target.log"
  echo "== $target: ${seconds}s" >&2
  status=0
  # TMPDIR: the manifests target's checkout directory outlives the process
  # (libFuzzer exits without destructors); keep it under $logs.
  TMPDIR="$logs" nice -n "$niceness" cargo +nightly fuzz run "$target" "$corpus" -- "${args[@]}" >"$log" 2>&1 || status=$?
  runs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)"
  speed="$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)"
  if [[ $status != 0 ]]; then
    failed+=("$target")
    echo "!! $target failed (exit $status); the end of its log:" >&2
    tail -40 "$log" >&2
    grep -E "^artifact_prefix|Test unit written to" "$log" >&2 || true
  elif [[ $ci == 0 ]]; then
    # Keep only inputs that add coverage; cmin writes the result back into
    # the corpus directory.
    TMPDIR="$logs" nice -n "$niceness" cargo +nightly fuzz cmin "$target" "$corpus" -- "${libfuzzer_args[@]}" >"$logs/$target.cmin.log" 2>&1 ||
      { echo "!! cmin of $target failed:" >&2; tail -20 "$logs/$target.cmin.log" >&2; failed+=("$target (cmin)"); }
  fi
  files="$(find "$corpus" -type f | wc -l)"
  bytes="$(find "$corpus" -type f -printf '%s\n' | awk '{s += $1} END {print s + 0}')"
  summary+=("$(printf '%-13s %12s runs %8s exec/s %6s files %9s bytes %s' "$target" "${runs:-?}" "${speed:-?}" "$files" "$bytes" "$([[ $status == 0 ]] && echo ok || echo FAILED)")")
done

echo >&2
echo "fuzzed ${#targets[@]} targets for ${seconds}s each (max_len $max_len, rss ${rss_mb} MiB, timeout ${timeout}s):" >&2
printf '%s\n' "${summary[@]}" >&2
if [[ $ci == 0 ]]; then
  total="$(find fuzz/corpus -type f -printf '%s\n' | awk '{s += $1} END {print s + 0}')"
  echo "committed corpus: $(find fuzz/corpus -type f | wc -l) files, $total bytes (the replay test allows 2 MiB)" >&2
fi
if [[ ${#failed[@]} -gt 0 ]]; then
  echo "FAILED: ${failed[*]} (inputs in fuzz/artifacts/<target>/)" >&2
  exit 1
fi
