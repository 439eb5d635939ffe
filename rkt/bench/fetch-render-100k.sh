#!/usr/bin/env bash
# Benchmark (not a test): `rkt fetch` + first `rkt image render` of an ACI of
# 100,000 small files (1,000 directories of 100 files of 1 KiB), each round
# in a fresh store, for one or more rkt binaries run interleaved (A B A B ...)
# so a busy machine slows them alike. Prints each round and the medians of
# wall, CPU and user time (see lib.sh).
#
#   rkt/bench/fetch-render-100k.sh [ROUNDS] BINARY...
#
# WORKDIR (env) defaults to a new directory under /var/tmp (a real disk, not
# tmpfs); it is removed afterwards.
set -euo pipefail

rounds=${1:?usage: $0 ROUNDS BINARY...}
shift
[ $# -ge 1 ] || { echo "usage: $0 ROUNDS BINARY..." >&2; exit 2; }
work=${WORKDIR:-$(mktemp -d /var/tmp/rkt-bench100k.XXXXXX)}
trap 'rm -rf "$work"' EXIT
mkdir -p "$work"

echo "building the 100k-file image in $work ..."
python3 - "$work/bench.aci" <<'PY'
import io, random, sys, tarfile
rng = random.Random(7)
block = bytes(rng.getrandbits(8) for _ in range(1 << 16))
with tarfile.open(sys.argv[1], "w", format=tarfile.GNU_FORMAT) as tar:
    def add(name, data=None, kind=tarfile.REGTYPE, mode=0o644):
        info = tarfile.TarInfo(name)
        info.type, info.mode, info.mtime = kind, mode, 1_700_000_000
        info.size = len(data) if data is not None else 0
        tar.addfile(info, io.BytesIO(data) if data is not None else None)
    add("manifest", b'{"acKind":"ImageManifest","acVersion":"0.8.11",'
        b'"name":"example.com/bench100k","labels":[{"name":"version","value":"1"}]}')
    add("rootfs", kind=tarfile.DIRTYPE, mode=0o755)
    for d in range(1000):
        add("rootfs/d%04d" % d, kind=tarfile.DIRTYPE, mode=0o755)
        for f in range(100):
            start = rng.randrange(0, len(block) - 1024)
            add("rootfs/d%04d/f%03d" % (d, f), block[start:start + 1024])
PY
sync

here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"

results="$work/results"
: >"$results"
for round in $(seq "$rounds"); do
    for bin in "$@"; do
        store=(--dir="$work/store" --insecure-options=image)
        rm -rf "$work/store" "$work/out"; sync
        read -r fetch fetch_cpu fetch_user < <(measure "$bin" "${store[@]}" fetch "$work/bench.aci")
        read -r render render_cpu render_user < <(measure "$bin" "${store[@]}" image render \
            --rootfs-only example.com/bench100k "$work/out")
        echo "round $round $bin: fetch $fetch s ($fetch_cpu s CPU, $fetch_user s user)," \
            "first render $render s ($render_cpu s CPU, $render_user s user)"
        echo "$bin $fetch $render $fetch_cpu $render_cpu $fetch_user $render_user" >>"$results"
    done
done
files=$(find "$work/out" -type f | wc -l)
echo "rendered files: $files"
python3 - "$results" <<'PY'
import statistics, sys
runs = {}
for line in open(sys.argv[1]):
    bin, *times = line.split()
    runs.setdefault(bin, []).append([float(t) for t in times])
for bin, rows in runs.items():
    for kind, first in (("wall", 0), ("CPU", 2), ("user", 4)):
        f = statistics.median(row[first] for row in rows)
        r = statistics.median(row[first + 1] for row in rows)
        t = statistics.median(row[first] + row[first + 1] for row in rows)
        print(f"{bin}: median {kind}: fetch {f:.2f} s, first render {r:.2f} s, fetch+render {t:.2f} s")
PY
