#!/usr/bin/env python3
"""Write a one-layer container image as a docker archive (what `docker save`
writes and `ctr images import` reads): no registry and no image tool needed.

    image.py OUT.tar NAME:TAG ENTRYPOINT SRC=DEST [SRC=DEST ...] [--env K=V ...]

Each SRC file goes into the layer at DEST (mode 0755, owned by root); the
layer is reproducible (fixed times and owners), so the same binaries give the
same image id.
"""
import hashlib
import io
import json
import sys
import tarfile


def add_dirs(tar, path, seen):
    parts = path.strip("/").split("/")[:-1]
    for i in range(1, len(parts) + 1):
        d = "/".join(parts[:i])
        if d not in seen:
            seen.add(d)
            info = tarfile.TarInfo(d)
            info.type = tarfile.DIRTYPE
            info.mode = 0o755
            tar.addfile(info)


def layer(files):
    buf = io.BytesIO()
    seen = set()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for src, dest in files:
            add_dirs(tar, dest, seen)
            with open(src, "rb") as f:
                data = f.read()
            info = tarfile.TarInfo(dest.strip("/"))
            info.size = len(data)
            info.mode = 0o755
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def main(argv):
    args, env = [], []
    it = iter(argv)
    for a in it:
        if a == "--env":
            env.append(next(it))
        else:
            args.append(a)
    if len(args) < 4:
        sys.exit(__doc__)
    out, ref, entrypoint, specs = args[0], args[1], args[2], args[3:]
    files = [tuple(s.split("=", 1)) for s in specs]
    blob = layer(files)
    diff_id = hashlib.sha256(blob).hexdigest()
    config = {
        "architecture": "amd64",
        "os": "linux",
        "created": "1970-01-01T00:00:00Z",
        "config": {"Entrypoint": [entrypoint], "Env": env, "WorkingDir": "/"},
        "rootfs": {"type": "layers", "diff_ids": ["sha256:" + diff_id]},
        "history": [{"created": "1970-01-01T00:00:00Z", "created_by": "tests/cluster/node/image.py"}],
    }
    config_bytes = json.dumps(config, sort_keys=True, separators=(",", ":")).encode()
    config_name = hashlib.sha256(config_bytes).hexdigest() + ".json"
    manifest = [{"Config": config_name, "RepoTags": [ref], "Layers": [diff_id + "/layer.tar"]}]
    with tarfile.open(out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in (
            (diff_id + "/layer.tar", blob),
            (config_name, config_bytes),
            ("manifest.json", json.dumps(manifest).encode()),
        ):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    print("sha256:" + hashlib.sha256(config_bytes).hexdigest())


if __name__ == "__main__":
    main(sys.argv[1:])
