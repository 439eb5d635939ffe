#!/usr/bin/env bash
# Benchmark (not a test): fetch + first render of a 100,000-file OCI image,
# as an oci-archive and as an oci layout, for one or more rkt binaries
# (alternating, ROUNDS times each), to compare the cost of the archive and
# size checks.
#
#   rkt/bench/fetch-oci-100k.sh RKT_BINARY... 
#
# ROUNDS (default 3); WORKDIR under /var/tmp (a real disk), removed after.
set -euo pipefail
rounds=${ROUNDS:-3}
work=$(mktemp -d /var/tmp/rkt-oci-bench.XXXXXX)
trap 'rm -rf "$work"' EXIT

python3 - "$work" <<'PY'
import hashlib, io, json, os, random, sys, tarfile
work = sys.argv[1]
rng = random.Random(7)
block = bytes(rng.getrandbits(8) for _ in range(1 << 20))
layer_path = os.path.join(work, "layer.tar")
with tarfile.open(layer_path, "w", format=tarfile.GNU_FORMAT) as t:
    for d in range(500):
        info = tarfile.TarInfo("d%03d" % d); info.type = tarfile.DIRTYPE; info.mode = 0o755
        t.addfile(info)
        for f in range(200):
            start = rng.randrange(0, len(block) - 1024)
            info = tarfile.TarInfo("d%03d/f%03d" % (d, f)); info.size = 1024; info.mode = 0o644
            t.addfile(info, io.BytesIO(block[start:start + 1024]))
layer = open(layer_path, "rb").read()
sha = lambda b: "sha256:" + hashlib.sha256(b).hexdigest()
config = json.dumps({"architecture": "amd64", "os": "linux", "config": {"Cmd": ["/x"]},
                     "rootfs": {"type": "layers", "diff_ids": [sha(layer)]}}).encode()
manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
    "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha(config), "size": len(config)},
    "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": sha(layer), "size": len(layer)}]}).encode()
index = json.dumps({"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
    "digest": sha(manifest), "size": len(manifest), "annotations": {"org.opencontainers.image.ref.name": "1"}}]}).encode()
layout = os.path.join(work, "layout")
os.makedirs(os.path.join(layout, "blobs/sha256"))
for blob in (layer, config, manifest):
    open(os.path.join(layout, "blobs/sha256", sha(blob)[7:]), "wb").write(blob)
open(os.path.join(layout, "index.json"), "wb").write(index)
open(os.path.join(layout, "oci-layout"), "w").write('{"imageLayoutVersion":"1.0.0"}')
os.remove(layer_path)
PY
tar -C "$work/layout" -cf "$work/image.tar" .
sync

seconds() {
    local start end
    start=$(date +%s.%N); "$@" >/dev/null; end=$(date +%s.%N)
    python3 -c "print(f'{$end - $start:.2f}')"
}
for round in $(seq "$rounds"); do
    for rkt in "$@"; do
        for source in "oci-archive:$work/image.tar" "oci:$work/layout"; do
            store=(--dir="$work/store" --insecure-options=image)
            rm -rf "$work/store" "$work/out"; sync
            fetch=$(seconds "$rkt" "${store[@]}" fetch "$source")
            render=$(seconds "$rkt" "${store[@]}" image render --rootfs-only "$("$rkt" "${store[@]}" image list --no-legend --fields=id | head -1)" "$work/out")
            echo "round $round $rkt ${source%%:*}: fetch ${fetch}s render ${render}s total $(python3 -c "print(f'{$fetch + $render:.2f}')")s"
        done
    done
done
