"""Network capture: bytes over the wire for a 1 GiB disk holding 100 MiB of data.

    ./dev bench capture [--disk-mib 1024] [--data-mib 100]

Builds an ext4 file system of --disk-mib behind an MBR (`mkfs.ext4 -d`) holding --data-mib of
random files (incompressible: the worst case for zstd), starts `netdeploy serve` on loopback,
marks a MAC for capture through the admin API, and then does exactly what the agent does in
capture mode (bootfiles/agent/init): `ndcap pack` each 32 MiB segment, `ndcap post` it, and at
the end the disk's sha256 to /capture/done. Prints the bytes that crossed the wire next to the
raw disk and to zstd of the whole raw disk (what a plain `dd | zstd` capture would send), and
the time each took. The bar from issue 17: at most 150 MiB for 1 GiB with 100 MiB of data.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
MAC = "52:54:00:00:30:01"
MIB = 1024 * 1024


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_disk(root: Path, disk_mib: int, data_mib: int) -> Path:
    files = root / "files"
    (files / "data").mkdir(parents=True)
    for i in range(data_mib):
        (files / "data" / f"f{i:04d}.bin").write_bytes(os.urandom(MIB))
    part = root / "part.ext4"
    with open(part, "wb") as fh:
        fh.truncate((disk_mib - 1) * MIB)
    subprocess.run(
        ["mkfs.ext4", "-q", "-F", "-d", str(files), str(part)], check=True, capture_output=True
    )
    shutil.rmtree(files)
    disk = root / "disk.img"
    sectors = disk_mib * MIB // 512
    entry = struct.pack(
        "<B3sB3sII", 0, b"\xfe\xff\xff", 0x83, b"\xfe\xff\xff", 2048, sectors - 2048
    )
    with open(disk, "wb") as out, open(part, "rb") as src:
        out.truncate(disk_mib * MIB)
        out.write(bytes(446) + entry + bytes(48) + b"\x55\xaa")
        out.seek(MIB)
        while block := src.read(4 * MIB):
            if block.count(0) != len(block):
                out.write(block)
            else:
                out.seek(len(block), os.SEEK_CUR)
    part.unlink()
    return disk


def api(url: str, token: str, path: str, body: dict | None = None) -> dict:
    request = urllib.request.Request(
        url + path,
        data=json.dumps(body).encode() if body is not None else None,
        method="POST" if body is not None else "GET",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=600) as response:
        return json.load(response)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--disk-mib", type=int, default=1024)
    parser.add_argument("--data-mib", type=int, default=100)
    args = parser.parse_args()
    from tests.conftest import demo_variant, start_server

    with tempfile.TemporaryDirectory(prefix="netdeploy-bench-capture-") as tmp:
        root = Path(tmp)
        ndcap = root / "ndcap"
        subprocess.run(
            ["gcc", "-static", "-O2", "-o", str(ndcap), str(REPO / "bootfiles/agent/ndcap.c"),
             "-lzstd"],
            check=True, capture_output=True,
        )  # fmt: skip
        print(f"building a {args.disk_mib} MiB disk with {args.data_mib} MiB of random files")
        disk = make_disk(root, args.disk_mib, args.data_mib)
        size = disk.stat().st_size
        sha = hashlib.sha256(disk.read_bytes()).hexdigest()
        t0 = time.perf_counter()
        whole = subprocess.run(
            ["zstd", "-3", "-c", "-q", str(disk)], capture_output=True, check=True
        ).stdout
        zstd_s = time.perf_counter() - t0
        config = demo_variant(
            root / "netdeploy.toml", {'state_dir = "../var"': f'state_dir = "{root / "state"}"'}
        )
        server = start_server(root / "state", config=config, http_port=free_port())
        try:
            admin = (root / "state" / "admin-token").read_text().strip()
            api(server.url, admin, "/api/admin/captures", {"image": "debian-12", "node": MAC})
            with urllib.request.urlopen(f"{server.url}/boot/{MAC}.ipxe") as r:
                script = r.read().decode()
            token = script.split("nd.token=")[1].split()[0]
            url = f"{server.url}/api/nodes/{MAC}/capture"
            begin = api(server.url, token, f"/api/nodes/{MAC}/capture?size={size}")
            segment, wire, offset = begin["segment"], 0, begin["offset"]
            t0 = time.perf_counter()
            while offset < size:
                length = min(segment, size - offset)
                packed = root / "segment.zst"
                with open(packed, "wb") as out:
                    subprocess.run(
                        [str(ndcap), "pack", str(disk), str(offset), str(length)],
                        stdout=out, stderr=subprocess.DEVNULL, check=True,
                    )  # fmt: skip
                wire += packed.stat().st_size
                subprocess.run(
                    [str(ndcap), "post", f"{url}/segments?offset={offset}", str(packed)],
                    env={**os.environ, "ND_TOKEN": token}, capture_output=True, check=True,
                )  # fmt: skip
                offset += length
            upload_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            result = api(server.url, token, f"/api/nodes/{MAC}/capture/done", {"sha256": sha})
            finish_s = time.perf_counter() - t0
        finally:
            server.stop()
    print(f"disk                      {size / MIB:8.1f} MiB  (raw dd would send all of it)")
    print(f"zstd -3 of the raw disk   {len(whole) / MIB:8.1f} MiB  {zstd_s:6.2f} s CPU")
    print(
        f"capture (ndcap sparse)    {wire / MIB:8.1f} MiB  {upload_s:6.2f} s pack+upload, "
        f"{finish_s:.2f} s server hash+preflight+add"
    )
    same = "equal" if result["sha256"] == sha else "DIFFER"
    print(
        f"server says               {result['wire_bytes'] / MIB:8.1f} MiB received, state "
        f"{result['state']}, sha256 both sides {same}"
    )
    ok = result["state"] == "done" and wire <= 150 * MIB * args.disk_mib / 1024
    print(f"bar: <= 150 MiB per GiB with 100 MiB of data: {'met' if ok else 'NOT met'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
