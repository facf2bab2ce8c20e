#!/usr/bin/env bash
# The machine code of a ready future with and without `timeout_async!`
# around it (benches/ready_asm.rs, release build). For the pair whose inner
# future the compiler sees is ready, prints both functions and whether they
# are the same (the linker may fold identical functions into one; then both
# names share an address). For the pair where it cannot see it, prints how
# many instructions each runs (callgrind, inside the function only), the
# inner future's own poll included in both.
#
#   bash scripts/ready_asm.sh
set -euo pipefail
cd "$(dirname "$0")/.."
bin=$(bash scripts/bench_bin.sh ready_asm)
addr() { nm "$bin" | awk -v f="$1" '$3 == f { print $1 }'; }
body() { # function name -> its instructions, without addresses
    objdump -d --no-show-raw-insn -M intel --start-address=0x"$(addr "$1")" "$bin" \
        | awk 'NR > 7 && /:\t/ { sub(/^ *[0-9a-f]+:\t/, ""); if ($1 == "int3") exit; print; if ($1 == "ret") exit }' \
        || true # awk stops reading at the function's end
}
for f in bare_ready_path opguard_ready_path; do
    echo "== $f ($(addr "$f"))"
    body "$f"
done
if [ "$(body bare_ready_path)" = "$(body opguard_ready_path)" ]; then
    echo "the same machine code: the timeout costs nothing on this path"
else
    echo "different machine code"
fi
for f in bare_opaque_path opguard_opaque_path; do
    n=$(valgrind --tool=callgrind --toggle-collect="$f" --callgrind-out-file=/dev/null "$bin" 2>&1 \
        | sed -n 's/.*Collected : \([0-9]*\).*/\1/p')
    echo "$f: $n instructions"
done
