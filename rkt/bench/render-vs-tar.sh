#!/usr/bin/env bash
# Benchmark (not a test): fetch + render of a 200 MiB, 20,000-file ACI
# against `tar -x` of the same tar on the same disk, and a second render of
# the same image (the store's tree is cached; only the copy to DIR remains).
#
#   cargo build --release -p rkt && rkt/bench/render-vs-tar.sh [WORKDIR]
#
# RKT=path/to/rkt overrides the binary. WORKDIR defaults to a new directory
# under /var/tmp (a real disk, not tmpfs); it is removed afterwards.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
rkt=${RKT:-${CARGO_TARGET_DIR:-$here/../../target}/release/rkt}
work=${1:-$(mktemp -d /var/tmp/rkt-bench.XXXXXX)}
trap 'rm -rf "$work"' EXIT
mkdir -p "$work"

echo "building the image in $work ..."
python3 - "$work/stage" <<'PY'
import os, random, sys
root = sys.argv[1]
rng = random.Random(42)
block = bytes(rng.getrandbits(8) for _ in range(1 << 20))  # 1 MiB to slice from
for d in range(200):
    path = os.path.join(root, "rootfs", "d%03d" % d)
    os.makedirs(path)
    for f in range(100):
        start = rng.randrange(0, len(block) - 10240)
        with open(os.path.join(path, "f%03d" % f), "wb") as out:
            out.write(block[start:start + 10240])
with open(os.path.join(root, "manifest"), "w") as m:
    m.write('{"acKind":"ImageManifest","acVersion":"0.8.11","name":"example.com/bench",'
            '"labels":[{"name":"version","value":"1"}]}')
PY
tar -C "$work/stage" -cf "$work/bench.aci" manifest rootfs
rm -rf "$work/stage"
sync

. "$here/lib.sh"

mkdir "$work/tar-out"
t_tar=$(seconds tar -C "$work/tar-out" -xf "$work/bench.aci")
t_tar_sync=$(seconds sync)
rm -rf "$work/tar-out"; sync

store=(--dir="$work/store" --insecure-options=image)
t_fetch=$(seconds "$rkt" "${store[@]}" fetch "$work/bench.aci")
t_render1=$(seconds "$rkt" "${store[@]}" image render --rootfs-only example.com/bench "$work/r1")
t_render2=$(seconds "$rkt" "${store[@]}" image render --rootfs-only example.com/bench "$work/r2")
files=$(find "$work/r2" -type f | wc -l)

python3 - <<PY
tar, tar_sync, fetch, r1, r2 = $t_tar, $t_tar_sync, $t_fetch, $t_render1, $t_render2
print(f"image: 200 MiB, {$files} files")
print(f"tar -x:                         {tar:6.2f} s  (+ sync {tar_sync:.2f} s)")
print(f"rkt fetch:                      {fetch:6.2f} s")
print(f"rkt image render (first):       {r1:6.2f} s  (renders the cached tree, syncfs, copies to DIR)")
print(f"rkt image render (second):      {r2:6.2f} s  (tree cached: only the copy to DIR)")
print(f"tree render alone (first - second): {r1 - r2:6.2f} s")
print(f"ratio fetch+render / tar -x:        {(fetch + r1) / tar:6.2f}")
print(f"ratio fetch+render / tar -x + sync: {(fetch + r1) / (tar + tar_sync):6.2f}")
PY
