#!/usr/bin/env bash
# Builds, here, every release test, bench and example executable and copies them into a
# git-ignored folder (gpu-bundle/ by default) for the GPU machine, which has no Rust.
# Carry that folder and run scripts/gpu-run.sh there (README, "Running on a GPU").
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bundle=${1:-$root/gpu-bundle}
cd "$root"

# Prints "<kind> <name> <path>" for each executable cargo reports for this package.
executables() {
  python3 -c '
import json, sys
for line in sys.stdin:
    msg = json.loads(line)
    if msg.get("reason") != "compiler-artifact" or not msg.get("executable"):
        continue
    pid = msg.get("package_id", "")
    if "#mixed-precision@" not in pid and not pid.startswith("mixed-precision "):
        continue
    t = msg["target"]
    print(t["kind"][0], t["name"], msg["executable"])
'
}

rm -rf "$bundle"
mkdir -p "$bundle/tests" "$bundle/benches" "$bundle/examples"
{
  cargo test --release --no-run --message-format=json
  cargo bench --features cublas --no-run --message-format=json
  cargo build --release --examples --message-format=json
} | executables | sort -u | while read -r kind name path; do
  case "$kind" in
    lib | test) dir=tests ;;
    bench) dir=benches ;;
    example) dir=examples ;;
    *) continue ;;
  esac
  cp "$path" "$bundle/$dir/$name"
  strip --strip-debug "$bundle/$dir/$name" 2>/dev/null || true
done
git rev-parse HEAD > "$bundle/COMMIT" 2>/dev/null || echo unknown > "$bundle/COMMIT"
if [[ -n "$(git status --porcelain 2>/dev/null)" ]]; then echo "(with uncommitted changes)" >> "$bundle/COMMIT"; fi
du -sh "$bundle" >&2
find "$bundle" -type f | sort >&2
