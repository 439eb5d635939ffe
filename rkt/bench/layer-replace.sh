#!/usr/bin/env bash
# Benchmark (not a test): the first render of a two-layer docker-archive
# whose second layer replaces every file of the first, at 10k, 20k and 40k
# files. Layer application linear in its entries shows as times that double
# with the count; a quadratic one quadruples. Wall, CPU and user time are
# printed (see lib.sh); user time shows the algorithm best.
#
#   rkt/bench/layer-replace.sh BINARY...
#
# WORKDIR (env) defaults to a new directory under /var/tmp; removed afterwards.
set -euo pipefail

[ $# -ge 1 ] || { echo "usage: $0 BINARY..." >&2; exit 2; }
work=${WORKDIR:-$(mktemp -d /var/tmp/rkt-layer-replace.XXXXXX)}
trap 'rm -rf "$work"' EXIT
mkdir -p "$work"

here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"

for count in 10000 20000 40000; do
    python3 - "$work/replace-$count.tar" "$count" <<'PY'
import hashlib, io, json, sys, tarfile
out, count = sys.argv[1], int(sys.argv[2])

def layer(content):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for n in range(count):
            info = tarfile.TarInfo("d%03d/f%06d" % (n % 100, n))
            info.size, info.mode, info.mtime = len(content), 0o644, 1_700_000_000
            tar.addfile(info, io.BytesIO(content))
    return buf.getvalue()

layers = [layer(b"old"), layer(b"new")]
diff_ids = ["sha256:" + hashlib.sha256(l).hexdigest() for l in layers]
config = json.dumps({"architecture": "amd64", "os": "linux",
                     "config": {"Cmd": ["/bin/true"]},
                     "rootfs": {"type": "layers", "diff_ids": diff_ids}}).encode()
manifest = json.dumps([{"Config": "config.json", "RepoTags": ["bench/replace:1"],
                        "Layers": ["l0/layer.tar", "l1/layer.tar"]}]).encode()
with tarfile.open(out, "w") as tar:
    for name, data in [("config.json", config), ("manifest.json", manifest),
                       ("l0/layer.tar", layers[0]), ("l1/layer.tar", layers[1])]:
        info = tarfile.TarInfo(name)
        info.size, info.mode = len(data), 0o644
        tar.addfile(info, io.BytesIO(data))
PY
    for bin in "$@"; do
        store=(--dir="$work/store" --insecure-options=image)
        rm -rf "$work/store" "$work/out"; sync
        "$bin" "${store[@]}" fetch "docker-archive:$work/replace-$count.tar" >/dev/null
        read -r wall cpu user < <(measure "$bin" "${store[@]}" image render --rootfs-only \
            bench/replace:1 "$work/out")
        echo "$count replaced files, $bin: first render $wall s wall, $cpu s CPU, $user s user"
    done
done
