#!/usr/bin/env python3
"""The boot-time cost of host bind mounts in a VM container (docs/VM.md, "Bind mounts").

    sudo bench/vm-binds.py [--berth target/release/berth] [--runs N]

N rounds, interleaved, of `berth run` of /bin/true in a VM container (create + boot + start +
exit + delete): the same bundle without bind mounts ("plain"), with one rw directory ("one"),
and with five ("five": a rw and a ro directory, and /etc/hosts, /etc/resolv.conf, /etc/hostname
as single files, about what `podman run -v DIR:/data` gives). Any binds mean one more virtiofsd
and virtio-fs device. Prints mean, median and minimum of each.
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
vm = __import__("vm")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--berth", default=os.path.join(os.path.dirname(HERE), "target/release/berth"))
    ap.add_argument("--runs", type=int, default=10)
    a = ap.parse_args()
    work = tempfile.mkdtemp(prefix="berth-vmbinds-")
    try:
        plain = vm.make_bundle(work, "plain", ["true"])
        one = vm.make_bundle(work, "one", ["true"])
        binds = vm.make_bundle(work, "five", ["true"])
        host = os.path.join(work, "host")
        for d in ("rw", "ro"):
            os.makedirs(os.path.join(host, d))
        for f in ("hosts", "resolv.conf", "hostname"):
            open(os.path.join(host, f), "w").write(f"{f}\n")
        cfg_path = os.path.join(binds, "config.json")
        cfg = json.load(open(cfg_path))
        os.makedirs(os.path.join(binds, "rootfs/etc"), exist_ok=True)
        cfg["mounts"] += [
            {"destination": "/data", "type": "bind", "source": f"{host}/rw", "options": ["rbind", "rw"]},
            {"destination": "/ro", "type": "bind", "source": f"{host}/ro", "options": ["rbind", "ro"]},
        ] + [{"destination": f"/etc/{f}", "type": "bind", "source": f"{host}/{f}", "options": ["rbind"]}
             for f in ("hosts", "resolv.conf", "hostname")]
        json.dump(cfg, open(cfg_path, "w"))
        cfg = json.load(open(os.path.join(one, "config.json")))
        cfg["mounts"] += [{"destination": "/data", "type": "bind", "source": f"{host}/rw", "options": ["rbind"]}]
        json.dump(cfg, open(os.path.join(one, "config.json"), "w"))
        root = os.path.join(work, "root")
        times = {"plain": [], "one": [], "five": []}
        vm.berth_run(a.berth, root, plain, "warm")
        for i in range(a.runs):
            for name, b in (("plain", plain), ("one", one), ("five", binds)):
                times[name].append(vm.berth_run(a.berth, root, b, f"{name}-{i}"))
        for name, t in times.items():
            print(f"{name:6} mean {statistics.mean(t):.2f} s  median {statistics.median(t):.2f} s  "
                  f"min {min(t):.2f} s  (n={len(t)})")
        for name in ("one", "five"):
            d = statistics.median(times[name]) - statistics.median(times["plain"])
            print(f"{name} - plain (medians): {d * 1000:+.0f} ms")
        print(f"load average {os.getloadavg()[0]:.1f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
