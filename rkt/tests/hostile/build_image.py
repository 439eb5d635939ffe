"""Builds hostile local images for rkt/tests/hostile_archives.rs.

usage: build_image.py KIND OUT CANARY ATTACK
KIND: oci (layout directory), oci-archive, docker-archive
ATTACK:
  none                  a valid image
  ROLE:TYPE             the member for ROLE (index, manifest, config, layer)
                        replaced by TYPE (symlink to CANARY, hardlink, fifo,
                        chardev = /dev/zero's numbers)
  sparse                the layer blob declares (and, on disk, is) 20 GiB
  sparse-lie            the layer blob declares 50 MiB but is 20 GiB (layout only)
  bigjson               index.json (manifest.json) of 100 MB
  xz-dict               the archive xz-compressed, declaring a 4 GiB dictionary
Prints the member name the attack used.
"""
import hashlib, io, json, lzma, os, struct, sys, tarfile, zlib

kind, out, canary, attack = sys.argv[1:5]
SPARSE = 20 << 30

def sha(b):
    return "sha256:" + hashlib.sha256(b).hexdigest()

layer_buf = io.BytesIO()
with tarfile.open(fileobj=layer_buf, mode="w", format=tarfile.GNU_FORMAT) as t:
    data = b"hello from a hostile image\n"
    info = tarfile.TarInfo("hello")
    info.size = len(data)
    t.addfile(info, io.BytesIO(data))
layer = layer_buf.getvalue()
config = json.dumps({"architecture": "amd64", "os": "linux",
                     "config": {"Cmd": ["/hello"]},
                     "rootfs": {"type": "layers", "diff_ids": [sha(layer)]}}).encode()

# name -> bytes (or None for a sparse SPARSE-byte file)
members = {}
if kind == "docker-archive":
    layer_name, config_name, top_name = "layer/layer.tar", "config.json", "manifest.json"
    members[config_name] = config
    members[layer_name] = None if attack.startswith("sparse") else layer
    top = json.dumps([{"Config": config_name, "RepoTags": ["hostile:latest"],
                       "Layers": [layer_name]}]).encode()
    roles = {"manifest": top_name, "index": top_name, "config": config_name, "layer": layer_name}
else:
    layer_digest = sha(layer) if not attack.startswith("sparse") else "sha256:" + "5" * 64
    layer_size = {"sparse": SPARSE, "sparse-lie": 50 << 20}.get(attack, len(layer))
    manifest = json.dumps({"schemaVersion": 2,
                           "mediaType": "application/vnd.oci.image.manifest.v1+json",
                           "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                                      "digest": sha(config), "size": len(config)},
                           "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                                       "digest": layer_digest, "size": layer_size}]}).encode()
    top_name = "index.json"
    top = json.dumps({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": sha(manifest), "size": len(manifest),
        "annotations": {"org.opencontainers.image.ref.name": "latest"}}]}).encode()
    blob = lambda d: "blobs/sha256/" + d[7:]
    members["oci-layout"] = b'{"imageLayoutVersion":"1.0.0"}'
    members[blob(sha(manifest))] = manifest
    members[blob(sha(config))] = config
    members[blob(layer_digest)] = None if attack.startswith("sparse") else layer
    roles = {"index": top_name, "manifest": blob(sha(manifest)),
             "config": blob(sha(config)), "layer": blob(layer_digest)}
if attack == "bigjson":
    top = b" " * (100 * 1000 * 1000) + top
members[top_name] = top

bad_name, bad_type = None, None
if ":" in attack:
    role, bad_type = attack.split(":")
    bad_name = roles[role]
print(bad_name or roles.get("layer"))

if kind == "oci":
    os.makedirs(out)
    for name, data in members.items():
        path = os.path.join(out, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        if name == bad_name:
            if bad_type == "symlink":
                os.symlink(canary, path)
            elif bad_type == "fifo":
                os.mkfifo(path)
            elif bad_type == "chardev":
                os.mknod(path, 0o600 | 0o020000, os.makedev(1, 5))
            elif bad_type == "hardlink":
                os.link(canary, path)
        elif data is None:
            with open(path, "wb") as f:
                f.truncate(SPARSE)
        else:
            with open(path, "wb") as f:
                f.write(data)
    sys.exit(0)

raw = open(out, "wb")
target = raw
if attack == "xz-dict":
    target = io.BytesIO()
for name, data in members.items():
    info = tarfile.TarInfo(name)
    info.mode = 0o644
    if name == bad_name:
        info.type = {"symlink": tarfile.SYMTYPE, "hardlink": tarfile.LNKTYPE,
                     "fifo": tarfile.FIFOTYPE, "chardev": tarfile.CHRTYPE}[bad_type]
        if bad_type in ("symlink", "hardlink"):
            info.linkname = canary
        if bad_type == "chardev":
            info.devmajor, info.devminor = 1, 5
        target.write(info.tobuf(format=tarfile.GNU_FORMAT))
    elif data is None:
        info.size = SPARSE
        target.write(info.tobuf(format=tarfile.GNU_FORMAT))
        # The archive file is sparse too: a hole where the 20 GiB would be.
        target.seek(SPARSE, os.SEEK_CUR)
    else:
        info.size = len(data)
        target.write(info.tobuf(format=tarfile.GNU_FORMAT))
        target.write(data)
        target.write(b"\0" * (-len(data) % 512))
target.write(b"\0" * 1024)
if attack == "xz-dict":
    xz = bytearray(lzma.compress(target.getvalue(), format=lzma.FORMAT_XZ,
                                 filters=[{"id": lzma.FILTER_LZMA2, "dict_size": 1 << 20}]))
    # Block header after the 12-byte stream header: size, flags, [sizes],
    # then filter id 0x21 (LZMA2), props size 1, the dictionary byte.
    start = 12
    header_len = (xz[start] + 1) * 4
    pos, flags = start + 2, xz[start + 1]
    def skip_varint(p):
        while xz[p] & 0x80:
            p += 1
        return p + 1
    if flags & 0x40:
        pos = skip_varint(pos)
    if flags & 0x80:
        pos = skip_varint(pos)
    assert xz[pos] == 0x21 and xz[pos + 1] == 1, "unexpected xz block header"
    xz[pos + 2] = 40  # 4 GiB - 1: the largest dictionary LZMA2 can declare
    crc_at = start + header_len - 4
    xz[crc_at:crc_at + 4] = struct.pack("<I", zlib.crc32(bytes(xz[start:crc_at])))
    raw.write(xz)
raw.close()
