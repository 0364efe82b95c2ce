#!/usr/bin/env python3
"""VM container networking, in ONE run: TCP throughput and round-trip time host<->container for a
Linux container and a VM container on the same bridge, and the VM's boot time with and without a
network device.

    sudo bench/vm_net.py [--berth target/release/berth] [--runs N] [--mib M] [--out bench/results/NAME.json]

Setup (all in network namespaces made here, removed at the end): a namespace `host` holding a
bridge (10.214.0.1/24) and, through veth pairs on that bridge, one namespace per container
(10.214.0.2 the Linux container, 10.214.0.3 the VM container), each given to its container by
path as engines do. The "host" side of every measurement runs in the bridge's namespace (this
script re-run as a client under `ip netns exec`).

throughput  host -> container: M MiB sent to `busybox nc -l` in the container (to /dev/null), timed
            until the container closes; container -> host: `dd` of M MiB into `busybox nc` in the
            container, timed by the host from the first byte to EOF. Mbit/s, median of N.
rtt         one TCP connection to `busybox nc -ll -e cat` (an echo) in the container: 200 one-byte
            round trips after 20 warm-up ones; median and p90 in microseconds.
boot        `berth run /bin/true` in a VM container with a new network namespace (no network
            device, lo only) and with a namespace holding one veth (one virtio-net device, the tap
            and its tc coupling), interleaved N times; mean and median seconds.
Needs root, `ip` and `tc`, and what docs/VM.md lists for VM containers.
"""
import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
TAG = f"bvn{os.getpid() % 100000}"
HOST_NS = f"{TAG}-h"
SUBNET = "10.214.0"
PORT_SINK, PORT_SRC, PORT_ECHO = 5001, 5003, 5002


def sh(cmd, check=True):
    r = subprocess.run(cmd, shell=True, capture_output=True, text=True)
    if check and r.returncode != 0:
        sys.exit(f"{cmd}: {r.stderr.strip()}")
    return r.stdout


# ---- the client (runs in the bridge's namespace) -------------------------------------------------

def connect(host, port, timeout=60):
    deadline = time.monotonic() + timeout
    while True:
        try:
            return socket.create_connection((host, port), timeout=30)
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def client_send(host, port, mib):
    s = connect(host, port)
    buf = b"\0" * (256 * 1024)
    t = time.monotonic()
    for _ in range(mib * 4):
        s.sendall(buf)
    s.shutdown(socket.SHUT_WR)
    while s.recv(65536):
        pass
    dt = time.monotonic() - t
    return {"seconds": dt, "mbit_s": mib * 8 * 1.048576 / dt}


def client_recv(host, port, mib):
    s = connect(host, port)
    first = None
    n = 0
    while True:
        d = s.recv(1 << 20)
        if not d:
            break
        if first is None:
            first = time.monotonic()
        n += len(d)
    dt = time.monotonic() - (first or time.monotonic())
    return {"seconds": dt, "bytes": n, "mbit_s": n * 8 / 1e6 / dt if dt > 0 else 0}


def client_rtt(host, port, rounds=200):
    s = connect(host, port)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    xs = []
    for i in range(rounds + 20):
        t = time.monotonic()
        s.sendall(b"x")
        if s.recv(1) != b"x":
            raise SystemExit("echo broke")
        if i >= 20:
            xs.append((time.monotonic() - t) * 1e6)
    xs.sort()
    return {"median_us": statistics.median(xs), "p90_us": xs[int(len(xs) * 0.9)], "rounds": rounds}


def client_main(argv):
    kind, host, port = argv[0], argv[1], int(argv[2])
    if kind == "send":
        r = client_send(host, port, int(argv[3]))
    elif kind == "recv":
        r = client_recv(host, port, int(argv[3]))
    else:
        r = client_rtt(host, port)
    print(json.dumps(r))


def client(kind, ip, port, *extra):
    out = sh(f"ip netns exec {HOST_NS} {sys.executable} {os.path.abspath(__file__)} --client {kind} {ip} {port} "
             + " ".join(str(e) for e in extra))
    return json.loads(out)


# ---- setup ----------------------------------------------------------------------------------------

def net_setup():
    sh(f"ip netns add {HOST_NS} && ip -n {HOST_NS} link add br0 type bridge && "
       f"ip -n {HOST_NS} addr add {SUBNET}.1/24 dev br0 && ip -n {HOST_NS} link set br0 up && "
       f"ip -n {HOST_NS} link set lo up")
    for i, name in ((2, "lin"), (3, "vm")):
        ns = f"{TAG}-{name}"
        sh(f"ip netns add {ns} && ip -n {HOST_NS} link add {name}0 type veth peer name eth0 netns {ns} && "
           f"ip -n {HOST_NS} link set {name}0 master br0 up && ip -n {ns} addr add {SUBNET}.{i}/24 dev eth0 && "
           f"ip -n {ns} link set eth0 up && ip -n {ns} link set lo up && "
           f"ip -n {ns} route add default via {SUBNET}.1")


def net_teardown():
    for name in ("lin", "vm", "boot"):
        sh(f"ip netns del {TAG}-{name} 2>/dev/null", check=False)
    sh(f"ip netns del {HOST_NS} 2>/dev/null", check=False)


def make_bundle(work, name, args, vm, netns):
    b = os.path.join(work, name)
    os.makedirs(os.path.join(b, "rootfs/bin"))
    for d in ("proc", "dev", "sys", "tmp"):
        os.makedirs(os.path.join(b, "rootfs", d))
    shutil.copy("/bin/busybox", os.path.join(b, "rootfs/bin/busybox"))
    for a in ("sh", "true", "sleep", "nc", "dd", "cat"):
        os.symlink("busybox", os.path.join(b, "rootfs/bin", a))
    net = {"type": "network"}
    if netns:
        net["path"] = f"/run/netns/{netns}"
    cfg = {
        "ociVersion": "1.2.0",
        "root": {"path": "rootfs", "readonly": True},
        "process": {"terminal": False, "user": {"uid": 0, "gid": 0}, "args": args, "env": ["PATH=/bin"], "cwd": "/"},
        "hostname": "bench",
        "mounts": [{"destination": "/proc", "type": "proc", "source": "proc"},
                   {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "mode=755"]}],
        "linux": {"namespaces": [{"type": t} for t in ("pid", "ipc", "uts", "mount")] + [net]},
    }
    if vm:
        cfg["annotations"] = {"run.berth.isolation": "vm", "run.berth.vm.memory": "256"}
    json.dump(cfg, open(os.path.join(b, "config.json"), "w"))
    return b


def berth(exe, root, args, cid, log):
    with open(log, "a") as f:
        r = subprocess.run([exe, "--root", root, *args, cid], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                           stderr=f, timeout=300)
    if r.returncode != 0:
        sys.exit(f"berth {args[0]} {cid}: exit {r.returncode}: see {log}")


SERVER = ("nc -ll -p %d -e cat & "
          "while true; do nc -l -p %d > /dev/null; done & "
          "while true; do dd if=/dev/zero bs=65536 count=%d 2>/dev/null | nc -l -p %d; done & "
          "wait")


def measure(exe, root, work, kind, ip, mib, runs, log):
    b = make_bundle(work, kind, ["sh", "-c", SERVER % (PORT_ECHO, PORT_SINK, mib * 16, PORT_SRC)],
                    kind == "vm", f"{TAG}-{'vm' if kind == 'vm' else 'lin'}")
    cid = f"{TAG}-{kind}"
    berth(exe, root, ["run", "--detach", "--bundle", b], cid, log)
    try:
        rtt = client("rtt", ip, PORT_ECHO)
        up = [client("send", ip, PORT_SINK, mib)["mbit_s"] for _ in range(runs)]
        down = [client("recv", ip, PORT_SRC, mib)["mbit_s"] for _ in range(runs)]
        rtt2 = client("rtt", ip, PORT_ECHO)
    finally:
        subprocess.run([exe, "--root", root, "delete", "--force", cid], capture_output=True, timeout=60)
    return {"host_to_container_mbit_s": statistics.median(up), "container_to_host_mbit_s": statistics.median(down),
            "up_runs": up, "down_runs": down,
            "rtt_median_us": statistics.median([rtt["median_us"], rtt2["median_us"]]),
            "rtt_p90_us": max(rtt["p90_us"], rtt2["p90_us"])}


def boot(exe, root, work, runs, log):
    sh(f"ip netns add {TAG}-boot && ip -n {TAG}-boot link add eth0 type veth peer name peer0 && "
       f"ip -n {TAG}-boot addr add 10.215.0.2/24 dev eth0 && ip -n {TAG}-boot link set eth0 up && "
       f"ip -n {TAG}-boot link set peer0 up")
    without = make_bundle(work, "boot-nonet", ["true"], True, None)
    with_net = make_bundle(work, "boot-net", ["true"], True, f"{TAG}-boot")
    res = {"without": [], "with": []}
    for i in range(runs):
        for key, b in (("without", without), ("with", with_net)):
            t = time.monotonic()
            berth(exe, root, ["run", "--bundle", b], f"{TAG}-b{i}-{key}", log)
            res[key].append(time.monotonic() - t)
    return {k: {"mean_s": statistics.mean(v), "median_s": statistics.median(v), "runs": v} for k, v in res.items()}


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "--client":
        return client_main(sys.argv[2:])
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    rel = os.path.join(REPO, "target/release/berth")
    ap.add_argument("--berth", default=rel if os.path.exists(rel) else os.path.join(REPO, "target/debug/berth"))
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--mib", type=int, default=32, help="MiB per throughput run")
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("needs root")
    exe = os.path.abspath(a.berth)
    work = tempfile.mkdtemp(prefix="berth-vm-net-bench.")
    root = os.path.join(work, "state")
    log = os.path.join(work, "berth.log")
    res = {"when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "berth": exe, "runs": a.runs, "mib": a.mib,
           "load_before": os.getloadavg()}
    try:
        net_setup()
        res["linux"] = measure(exe, root, work, "linux", f"{SUBNET}.2", a.mib, a.runs, log)
        res["vm"] = measure(exe, root, work, "vm", f"{SUBNET}.3", a.mib, a.runs, log)
        res["boot"] = boot(exe, root, work, a.runs, log)
    finally:
        net_teardown()
        shutil.rmtree(work, ignore_errors=True)
    res["load_after"] = os.getloadavg()
    out = a.out or os.path.join(HERE, "results", time.strftime("%Y%m%d-%H%M") + "-vm-net.json")
    json.dump(res, open(out, "w"), indent=1)
    print(f"{'':10} {'host->ctr Mbit/s':>17} {'ctr->host Mbit/s':>17} {'RTT median us':>14} {'RTT p90 us':>11}")
    for k in ("linux", "vm"):
        r = res[k]
        print(f"{k:10} {r['host_to_container_mbit_s']:17.0f} {r['container_to_host_mbit_s']:17.0f} "
              f"{r['rtt_median_us']:14.0f} {r['rtt_p90_us']:11.0f}")
    bt = res["boot"]
    print(f"boot (berth run /bin/true in a VM): without a network device {bt['without']['mean_s']:.2f} s mean "
          f"({bt['without']['median_s']:.2f} median), with one {bt['with']['mean_s']:.2f} s "
          f"({bt['with']['median_s']:.2f}); load {res['load_before'][0]:.1f} -> {res['load_after'][0]:.1f}")
    print(f"results: {out}")


if __name__ == "__main__":
    main()
