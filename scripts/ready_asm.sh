#!/usr/bin/env bash
# Compares the machine code of a ready future with and without
# `timeout_async!` around it (benches/ready_asm.rs, release build): prints
# both functions' instructions and whether they are the same. The linker may
# fold identical functions into one; then both names share an address.
#
#   bash scripts/ready_asm.sh
set -euo pipefail
cd "$(dirname "$0")/.."
bin=$(cargo bench --bench ready_asm --no-run --message-format=json 2>/dev/null \
    | python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "ready_asm" and m.get("executable"):
        print(m["executable"])')
body() { # function name -> its instructions, without addresses
    local addr
    addr=$(nm "$bin" | awk -v f="$1" '$3 == f { print $1 }')
    objdump -d --no-show-raw-insn -M intel --start-address=0x"$addr" "$bin" \
        | awk 'NR > 7 && /:\t/ { sub(/^ *[0-9a-f]+:\t/, ""); if ($1 == "int3") exit; print; if ($1 == "ret") exit }' \
        || true # awk stops reading at the function's end
}
for f in bare_ready_path opguard_ready_path; do
    echo "== $f ($(nm "$bin" | awk -v f="$f" '$3 == f { print $1 }'))"
    body "$f"
done
if [ "$(body bare_ready_path)" = "$(body opguard_ready_path)" ]; then
    echo "the same machine code: the timeout costs nothing on this path"
else
    echo "different machine code"
fi
