#!/usr/bin/env python3
"""VM containers, in ONE run: boot time and host memory, with 1, 4 and 8 VMs at once, for each
guest kernel side by side (the Debian cloud kernel and Berth's own, scripts/guest-kernel.sh).

    sudo bench/vm.py [--berth target/release/berth] [--runs N] [--kernels cloud,berth]
                     [--at-once 1,4,8] [--out bench/results/NAME.json]

kernels Each kernel is chosen as Berth chooses it with BERTH_VM_KERNEL=cloud|berth; its bare boots
        use the same kernel, its own initramfs (with or without modules) and the command line Berth
        gives it. Rounds interleave the kernels and bare/berth, so load changes hit all alike.

boot    K bare qemu boots of Berth's kernel+initramfs to the agent's marker (probe mode: the marker
        on the exit port, then power-off; same machine options, RAM and vCPUs as Berth uses) against
        K `berth run` of /bin/true in VM containers (create + boot + start + exit + delete), K = 1,
        4 and 8 at once, interleaved; the figure is the mean time per VM (each one's own wall time)
        and Berth's overhead over the bare boot.
memory  K VM containers running `sleep` at once. Per VM: the PSS of every host process in its
        cgroup (monitor, qemu, virtiofsd; smaps_rollup), minus the guest RAM actually touched (the
        resident size of the guest-RAM memfd in qemu's smaps: qemu and virtiofsd both map it, and
        PSS splits its pages between them, so the PSS sum holds it exactly once). What remains is
        the host memory a VM costs beyond its guest RAM; shared libraries and the qemu binary are
        split between the K VMs by PSS, so it falls as K grows. The cgroup's own usage figure is
        reported too (it holds page cache of the rootfs read through virtiofsd).
Needs root and what docs/VM.md lists (qemu, the cloud kernel, virtiofsd, the static agent).
"""
import argparse
import concurrent.futures
import glob
import json
import os
import shutil
import statistics
import subprocess
import sys
import resource
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
MEM_MIB = 256


def make_bundle(work, name, args):
    b = os.path.join(work, name)
    os.makedirs(os.path.join(b, "rootfs/bin"))
    for d in ("proc", "dev", "sys", "tmp"):
        os.makedirs(os.path.join(b, "rootfs", d))
    shutil.copy("/bin/busybox", os.path.join(b, "rootfs/bin/busybox"))
    for a in ("sh", "true", "sleep"):
        os.symlink("busybox", os.path.join(b, "rootfs/bin", a))
    cfg = {
        "ociVersion": "1.2.0",
        "root": {"path": "rootfs", "readonly": True},
        "process": {"terminal": False, "user": {"uid": 0, "gid": 0}, "args": args, "env": ["PATH=/bin"], "cwd": "/"},
        "hostname": "bench",
        "annotations": {"run.berth.isolation": "vm", "run.berth.vm.memory": str(MEM_MIB)},
        # /dev on a tmpfs: the VMs share one rootfs, and must not make their devices in it.
        "mounts": [{"destination": "/proc", "type": "proc", "source": "proc"},
                   {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "mode=755"]}],
        "linux": {"namespaces": [{"type": t} for t in ("pid", "ipc", "uts", "mount", "network")]},
    }
    json.dump(cfg, open(os.path.join(b, "config.json"), "w"))
    return b


BERTH_KERNELS = ["/usr/local/lib/berth/vmlinuz", "/usr/lib/berth/vmlinuz", "/var/cache/berth/kernel/current/bzImage"]


def kernel(which):
    """The kernel Berth boots with BERTH_VM_KERNEL=which (vm/image.rs)."""
    if which == "berth":
        found = [k for k in BERTH_KERNELS if os.path.isfile(k)]
        return found[0] if found else None
    found = sorted(glob.glob("/boot/vmlinuz-*-cloud-amd64"))
    return found[-1] if found else None


def release(kernel_path):
    """The release string in a bzImage's setup header (as vm/image.rs reads it)."""
    head = open(kernel_path, "rb").read(0x8000)
    off = int.from_bytes(head[0x20E:0x210], "little") + 0x200
    return head[off:].split(b"\0")[0].split(b" ")[0].decode()


def initramfs(kernel_path):
    found = glob.glob(f"/var/cache/berth/initramfs-{release(kernel_path)}-*.cpio")
    return max(found, key=os.path.getmtime)


def cmdline(kernel_path):
    """The kernel command line Berth gives this kernel under TCG (vm/boot.rs, Plan::new)."""
    base = "console=hvc0 quiet panic=-1 rdinit=/init tsc_early_khz=2600000 lpj=10400000"
    if release(kernel_path).endswith("-berth"):
        return " ".join([base, *BERTH_KERNEL_CMDLINE, *BERTH_KERNEL_CMDLINE_TCG])
    return base


# What vm/mod.rs adds for Berth's own kernel (keep in step with BERTH_KERNEL_CMDLINE and
# BERTH_KERNEL_CMDLINE_TCG there).
BERTH_KERNEL_CMDLINE = ["reboot=t"]
BERTH_KERNEL_CMDLINE_TCG = ["nolapic_timer", "no_timer_check"]
BERTH_KERNEL_MACHINE = ",acpi=off"


def boot_image(kernel_path):
    """The file qemu boots under TCG (vm/boot.rs, Plan::boot_kernel): Berth's kernel uncompressed
    (its PVH entry) when scripts/guest-kernel.sh left `vmlinux` beside it."""
    v = os.path.join(os.path.dirname(kernel_path), "vmlinux")
    if release(kernel_path).endswith("-berth") and os.path.isfile(v):
        return v
    return kernel_path


def machine(kernel_path):
    """The microvm options under TCG (vm/boot.rs, common_args): Berth's kernel keeps the PIT and PIC."""
    if release(kernel_path).endswith("-berth"):
        return "microvm" + BERTH_KERNEL_MACHINE
    return "microvm,pit=off,pic=off"


def bare_boot(work, which, i):
    kpath = kernel(which)
    marker = os.path.join(work, f"marker-{which}-{i}")
    if os.path.exists(marker):
        os.unlink(marker)
    t = time.monotonic()
    subprocess.run(
        ["qemu-system-x86_64", "-nodefaults", "-no-user-config", "-nographic", "-no-reboot",
         "-M", machine(kpath), "-accel", "tcg,tb-size=64", "-cpu", "max", "-m", f"{MEM_MIB}M", "-smp", "1",
         "-kernel", boot_image(kpath), "-initrd", initramfs(kpath), "-device", "virtio-serial-device",
         "-chardev", f"file,id=ex,path={marker}", "-device", "virtserialport,chardev=ex,name=berth.exit",
         "-append", cmdline(kpath) + " berth.probe"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    took = time.monotonic() - t
    if "berth-guest-probe-ok" not in open(marker).read():
        sys.exit("bare boot: no marker")
    return took


def berth(berth, root, args, cid, which):
    """Run berth with stderr to a file: a detached VM's monitor inherits it, and a pipe it holds
    would never reach end-of-file."""
    err = os.path.join(root + ".logs", cid)
    os.makedirs(os.path.dirname(err), exist_ok=True)
    with open(err, "w+") as f:
        t = time.monotonic()
        r = subprocess.run([berth, "--root", root, *args, cid], stdin=subprocess.DEVNULL,
                           stdout=subprocess.DEVNULL, stderr=f, env={**os.environ, "BERTH_VM_KERNEL": which})
        took = time.monotonic() - t
        if r.returncode != 0:
            f.seek(0)
            sys.exit(f"berth {args[0]} {cid}: exit {r.returncode}: {f.read().strip()}")
    return took


def berth_run(b, root, bundle, cid, which):
    return berth(b, root, ["run", "--bundle", bundle], cid, which)


def at_once(k, fn):
    with concurrent.futures.ThreadPoolExecutor(max_workers=k) as ex:
        return list(ex.map(fn, range(k)))


def smaps_rollup(pid):
    out = {}
    try:
        for line in open(f"/proc/{pid}/smaps_rollup"):
            parts = line.split()
            if len(parts) >= 2 and parts[0] in ("Rss:", "Pss:"):
                out[parts[0][:-1]] = int(parts[1])
    except OSError:
        pass
    return out


def memfd_rss_kb(pid):
    """Resident kB of qemu's guest-RAM memfd mapping."""
    total, inside = 0, False
    try:
        for line in open(f"/proc/{pid}/smaps"):
            if not line.split()[0].endswith(":"):  # a mapping's header line
                inside = "memfd:memory-backend" in line
                continue
            if inside and line.startswith("Rss:"):
                total += int(line.split()[1])
    except OSError:
        pass
    return total


def cgroup_procs(cid):
    for ctrl in ("pids", "memory", "unified", ""):
        p = os.path.join("/sys/fs/cgroup", ctrl, cid, "cgroup.procs")
        if os.path.exists(p):
            return [int(x) for x in open(p).read().split()]
    return []


def cgroup_usage_kb(cid):
    for p in (f"/sys/fs/cgroup/memory/{cid}/memory.usage_in_bytes", f"/sys/fs/cgroup/{cid}/memory.current"):
        if os.path.exists(p):
            return int(open(p).read()) // 1024
    return None


def memory(b, root, bundle, k, which):
    ids = [f"mem{which}{k}-{i}" for i in range(k)]
    try:
        at_once(k, lambda i: berth(b, root, ["run", "--detach", "--bundle", bundle], ids[i], which))
        time.sleep(2)
        per = []
        for cid in ids:
            pids = cgroup_procs(cid)
            pss = rss = touched = 0
            for p in pids:
                s = smaps_rollup(p)
                pss += s.get("Pss", 0)
                rss += s.get("Rss", 0)
                if open(f"/proc/{p}/comm").read().startswith("qemu"):
                    touched += memfd_rss_kb(p)
            per.append({"procs": len(pids), "pss_kb": pss, "rss_kb": rss, "guest_touched_kb": touched,
                        "overhead_kb": pss - touched, "cgroup_usage_kb": cgroup_usage_kb(cid)})
        return per
    finally:
        for cid in ids:
            subprocess.run([b, "--root", root, "delete", "--force", cid], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def summary(xs):
    return {"mean": round(statistics.mean(xs), 3), "median": round(statistics.median(xs), 3),
            "min": round(min(xs), 3), "max": round(max(xs), 3), "n": len(xs)}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    rel = os.path.join(REPO, "target/release/berth")
    ap.add_argument("--berth", default=rel if os.path.exists(rel) else os.path.join(REPO, "target/debug/berth"))
    ap.add_argument("--runs", type=int, default=5, help="rounds with 1 VM (4 VMs: runs/2, 8 VMs: runs/3, at least 1)")
    ap.add_argument("--kernels", default="cloud", help="guest kernels, side by side (BERTH_VM_KERNEL values)")
    ap.add_argument("--at-once", default="1,4,8", help="VMs at once")
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench/vm.py: run as root")
    exe = os.path.abspath(a.berth)
    kernels = [k for k in a.kernels.split(",") if k]
    for k in kernels:
        if kernel(k) is None:
            sys.exit(f"bench/vm.py: no {k} kernel (Berth's: scripts/guest-kernel.sh build)")
    ks = [int(x) for x in a.at_once.split(",") if x]
    work = tempfile.mkdtemp(prefix="berth-vm-bench.")
    res = {"when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "berth": exe,
           "version": subprocess.run([exe, "--version"], capture_output=True, text=True).stdout.strip(),
           "host": {"cpus": os.cpu_count(), "loadavg_start": os.getloadavg()[0]},
           "guest_ram_mib": MEM_MIB, "kernels": {k: {"path": kernel(k), "boots": boot_image(kernel(k)), "release": release(kernel(k))}
                       for k in kernels},
           "boot": {}, "memory": {}}
    try:
        root = os.path.join(work, "root")
        true_b = make_bundle(work, "true", ["/bin/true"])
        sleep_b = make_bundle(work, "sleep", ["sleep", "1000"])
        for which in kernels:
            berth_run(exe, root, true_b, f"warm-{which}", which)  # builds the initramfs, caches the KVM probe
        res["accel"] = "kvm" if any("kvm" in open(p).read() for p in glob.glob("/var/cache/berth/probe-*")) \
            and os.environ.get("BERTH_VM_ACCEL") != "tcg" else "tcg"
        for k in ks:
            rounds = a.runs if k == 1 else max(1, a.runs // 2) if k <= 4 else max(1, a.runs // 3)
            bare = {w: [] for w in kernels}
            run = {w: [] for w in kernels}
            # CPU time (user + system of every process, qemu's threads included: TCG is CPU bound,
            # so this figure moves little with the host's load, unlike the wall time).
            cpu = {w: {"bare": [], "run": []} for w in kernels}

            def cpu_now():
                r = resource.getrusage(resource.RUSAGE_CHILDREN)
                return r.ru_utime + r.ru_stime

            for r in range(rounds):
                for which in kernels:
                    c0 = cpu_now()
                    bare[which] += at_once(k, lambda i, w=which: bare_boot(work, w, i))
                    c1 = cpu_now()
                    run[which] += at_once(k, lambda i, r=r, w=which: berth_run(exe, root, true_b, f"b{w}{k}-{r}-{i}", w))
                    c2 = cpu_now()
                    cpu[which]["bare"].append((c1 - c0) / k)
                    cpu[which]["run"].append((c2 - c1) / k)
            for which in kernels:
                b, t = summary(bare[which]), summary(run[which])
                cb, ct = summary(cpu[which]["bare"]), summary(cpu[which]["run"])
                res["boot"].setdefault(which, {})[str(k)] = {
                    "bare_s": b, "berth_s": t, "overhead_pct": round((t["mean"] - b["mean"]) * 100 / b["mean"], 1),
                    "bare_cpu_s": cb, "berth_cpu_s": ct}
                print(f"boot, {which} kernel, {k} at once: bare {b['mean']:.2f} s (min {b['min']:.2f}; CPU {cb['mean']:.2f} s), "
                      f"berth run {t['mean']:.2f} s (min {t['min']:.2f}, median {t['median']:.2f}; CPU {ct['mean']:.2f} s): "
                      f"{res['boot'][which][str(k)]['overhead_pct']:+.1f}%", flush=True)
        for k in ks:
            for which in kernels:
                per = memory(exe, root, sleep_b, k, which)
                mean = lambda key: round(statistics.mean(p[key] for p in per) / 1024, 1)
                m = {"per_vm": per, "overhead_mib": mean("overhead_kb"), "pss_mib": mean("pss_kb"),
                     "guest_touched_mib": mean("guest_touched_kb"), "rss_mib": mean("rss_kb"),
                     "cgroup_usage_mib": round(statistics.mean(p["cgroup_usage_kb"] or 0 for p in per) / 1024, 1)}
                res["memory"].setdefault(which, {})[str(k)] = m
                print(f"memory, {which} kernel, {k} at once, per VM: PSS {m['pss_mib']} MiB = guest RAM touched "
                      f"{m['guest_touched_mib']} MiB + overhead {m['overhead_mib']} MiB (RSS {m['rss_mib']} MiB, "
                      f"cgroup usage {m['cgroup_usage_mib']} MiB)", flush=True)
        res["host"]["loadavg_end"] = os.getloadavg()[0]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    out = a.out or os.path.join(HERE, "results", time.strftime("%Y%m%d-%H%M-vm.json", time.gmtime()))
    os.makedirs(os.path.dirname(out), exist_ok=True)
    json.dump(res, open(out, "w"), indent=1)
    print(f"results: {out}")


if __name__ == "__main__":
    main()
