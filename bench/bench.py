#!/usr/bin/env python3
"""Berth's own benchmark: Berth next to every installed runc, crun and youki, in ONE run, with ratios.

    sudo bench/bench.py [--runs N] [--quick] [--out bench/results/NAME.json] [RUNTIME ...]

Measures (each runtime on the same busybox bundle, same machine, same run):
  run        `R run ID` of /bin/true (create + start + wait + delete): median, min, max
  create, start, state, delete   each call timed on its own (hyperfine --prepare)
  exec       `R exec ID /bin/true` into a running container (when the runtime has exec)
  throughput N containers run by K parallel workers (K = 2 and 8): containers per second, failures
  rss        peak RSS of the runtime process during create (and exec); memory charged to the
             container's memory cgroup by the runtime during create (memory.max_usage_in_bytes)
  mounts     `run` latency with 0, 10, 50 and 200 bind mounts
  seccomp    `run` latency with a seccomp profile of podman's default size (~370 rules)
`run`, `exec`, the bind-mount and the seccomp rows are timed interleaved (round-robin: one call of each
runtime per round), so that a busy machine's drift hits all runtimes alike; the split lifecycle uses
hyperfine (it needs --prepare).
Results print as a table and go to a JSON file that bench/compare.py can compare with an earlier one.
crun refuses this machine's hybrid cgroup layout, so the whole run happens in a private mount
namespace where /sys/fs/cgroup/unified is unmounted: every runtime sees the same cgroup v1 hierarchy.
Needs root, hyperfine and busybox-static.
"""
import argparse
import concurrent.futures
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)


def sh(cmd, check=True, capture=True):
    """Run a command. Without capture its output goes to /dev/null: a container's init inherits the
    runtime's stdio, and a pipe it holds would never reach end-of-file."""
    io = {"capture_output": True} if capture else {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    return subprocess.run(cmd, shell=isinstance(cmd, str), check=check, text=True, **io)


def reexec_in_private_namespace():
    """Run ourselves again inside a private mount namespace without the unified cgroup mount."""
    if os.environ.get("BERTH_BENCH_INNER"):
        return
    env = dict(os.environ, BERTH_BENCH_INNER="1")
    inner = "umount /sys/fs/cgroup/unified 2>/dev/null; exec \"$0\" \"$@\""
    os.execvpe("unshare", ["unshare", "-m", "--propagation", "private", "sh", "-c", inner, sys.executable, *sys.argv], env)


def make_bundle(work, name, mounts=0, seccomp=False, args=("/bin/true",)):
    b = os.path.join(work, name)
    os.makedirs(os.path.join(b, "rootfs/bin"))
    for d in ("proc", "dev", "sys", "tmp", "mnt"):
        os.makedirs(os.path.join(b, "rootfs", d), exist_ok=True)
    shutil.copy("/bin/busybox", os.path.join(b, "rootfs/bin/busybox"))
    for applet in ("sh", "true", "sleep", "cat"):
        os.symlink("busybox", os.path.join(b, "rootfs/bin", applet))
    src = os.path.join(work, "bindsrc")
    os.makedirs(src, exist_ok=True)
    config = {
        "ociVersion": "1.0.2",
        "root": {"path": "rootfs", "readonly": True},
        "process": {
            "terminal": False, "user": {"uid": 0, "gid": 0}, "args": list(args), "env": ["PATH=/bin"], "cwd": "/",
            "noNewPrivileges": True,
            "capabilities": {k: ["CAP_KILL"] for k in ("bounding", "effective", "permitted")},
        },
        "hostname": "bench",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
        ] + [
            {"destination": f"/mnt/m{i}", "type": "bind", "source": src, "options": ["rbind", "ro"]} for i in range(mounts)
        ],
        "linux": {
            "namespaces": [{"type": t} for t in ("pid", "ipc", "uts", "mount", "network")],
            "maskedPaths": ["/proc/kcore"], "readonlyPaths": ["/proc/sys"],
        },
    }
    if seccomp:
        config["linux"]["seccomp"] = seccomp_profile()
    with open(os.path.join(b, "config.json"), "w") as f:
        json.dump(config, f)
    return b


def seccomp_profile():
    """A profile the size of podman's default: allow-list of ~370 syscall rules, errno by default."""
    names = sh("awk '/^#define __NR_/ {print substr($2, 6)}' /usr/include/x86_64-linux-gnu/asm/unistd_64.h", check=False).stdout.split()
    names = [n for n in names if n not in ("kexec_load", "init_module", "finit_module", "delete_module", "reboot")] or ["read", "write", "exit", "exit_group"]
    rules = [{"names": [n], "action": "SCMP_ACT_ALLOW"} for n in names]
    while len(rules) < 370:
        rules.append({"names": ["personality"], "action": "SCMP_ACT_ALLOW", "args": [{"index": 0, "value": len(rules), "op": "SCMP_CMP_EQ"}]})
    return {"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 1, "architectures": ["SCMP_ARCH_X86_64"], "syscalls": rules}


def hyperfine(cmds, runs, prepare=None, shell=True):
    """Time commands with hyperfine; returns {name: {median, min, max, mean}} in milliseconds."""
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        argv = ["hyperfine", "-w", "3", "-r", str(runs), "--export-json", out.name, "--style", "none"]
        if not shell:
            argv.append("-N")
        for name, cmd in cmds:
            if prepare:
                argv += ["--prepare", prepare[name]]
            argv += ["-n", name, cmd]
        r = subprocess.run(argv, capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"hyperfine failed: {r.stderr.strip()[-400:]}")
        data = json.load(open(out.name))
    res = {}
    for x in data["results"]:
        res[x["command"]] = {k: round(x[k] * 1000, 3) for k in ("median", "min", "max", "mean")}
    return res


def interleaved(cmds, runs, warmup=3):
    """Time commands round-robin: each round runs every command once, in turn, so that the drift of a
    busy machine (other jobs, frequency, page cache) hits every runtime alike; hyperfine times one
    command's runs in a block, and on our 2-core VMs two blocks of the same command differed by 15%.
    posix_spawn + waitpid, no shell; stdio on /dev/null. Returns {name: {median, min, max, mean}} in ms."""
    null = [(os.POSIX_SPAWN_OPEN, fd, "/dev/null", os.O_RDWR, 0) for fd in (0, 1, 2)]
    times = {name: [] for name, _ in cmds}
    for i in range(warmup + runs):
        for name, cmd in cmds:
            argv = cmd.split()
            t = time.perf_counter_ns()
            pid = os.posix_spawn(argv[0], argv, os.environ, file_actions=null)
            _, status = os.waitpid(pid, 0)
            dt = (time.perf_counter_ns() - t) / 1e6
            if os.waitstatus_to_exitcode(status) != 0:
                raise RuntimeError(f"{cmd}: exit status {os.waitstatus_to_exitcode(status)}")
            if i >= warmup:
                times[name].append(dt)
    return {n: {"median": round(statistics.median(v), 3), "min": round(min(v), 3), "max": round(max(v), 3),
                "mean": round(statistics.mean(v), 3)} for n, v in times.items()}


class Runtime:
    def __init__(self, path, work):
        self.path = path
        self.name = os.path.basename(path)
        self.root = os.path.join(work, "state-" + self.name)
        self.has_exec = True

    def cmd(self, *args):
        return " ".join([self.path, "--root", self.root, *args])

    def run(self, *args, check=True):
        """Run a subcommand; output is captured only for the ones that start no container."""
        capture = args[0] in ("state", "list", "--version")
        return sh(self.cmd(*args), check=check, capture=capture)


def bench_run(rts, bundle, runs):
    return interleaved([(rt.name, rt.cmd("run", "--bundle", bundle, "b-" + rt.name)) for rt in rts], runs)


def wait_stopped(rt, cid, timeout=5):
    end = time.time() + timeout
    while time.time() < end:
        r = rt.run("state", cid, check=False)
        if r.returncode != 0 or '"stopped"' in r.stdout:
            return
        time.sleep(0.002)


def bench_split(rts, bundle, sleeper, runs):
    out = {}
    for rt in rts:
        c = "s-" + rt.name
        d = lambda: "(" + rt.cmd("delete", "--force", c) + " >/dev/null 2>&1 || true)"
        create = hyperfine([("create", rt.cmd("create", "--bundle", bundle, c))], runs, prepare={"create": d()})
        start = hyperfine([("start", rt.cmd("start", c))], runs,
                          prepare={"start": d() + "; " + rt.cmd("create", "--bundle", sleeper, c)})
        rt.run("delete", "--force", c, check=False)
        rt.run("create", "--bundle", sleeper, c)
        rt.run("start", c)
        state = hyperfine([("state", rt.cmd("state", c))], runs, shell=False)  # no shell: its start-up would be subtracted
        rt.run("delete", "--force", c, check=False)
        wait = f"while {rt.cmd('state', c)} 2>/dev/null | grep -q running; do :; done"
        delete = hyperfine([("delete", rt.cmd("delete", c))], runs,
                           prepare={"delete": f"{d()}; {rt.cmd('create', '--bundle', bundle, c)} && {rt.cmd('start', c)}; {wait}"})
        rt.run("delete", "--force", c, check=False)
        out[rt.name] = {"create": create["create"], "start": start["start"], "state": state["state"], "delete": delete["delete"]}
    return out


def bench_exec(rts, sleeper, runs):
    cmds = []
    for rt in rts:
        c = "e-" + rt.name
        rt.run("delete", "--force", c, check=False)
        rt.run("create", "--bundle", sleeper, c)
        rt.run("start", c)
        if rt.run("exec", c, "/bin/true", check=False).returncode != 0:
            rt.has_exec = False
            continue
        cmds.append((rt.name, rt.cmd("exec", c, "/bin/true")))
    res = interleaved(cmds, runs) if cmds else {}
    for rt in rts:
        rt.run("delete", "--force", "e-" + rt.name, check=False)
    return res


def bench_throughput(rts, bundle, n, workers):
    out = {}
    for rt in rts:
        out[rt.name] = {}
        for k in workers:
            def one(i):
                return rt.run("run", "--bundle", bundle, f"t{k}-{i}", check=False).returncode == 0
            t0 = time.time()
            with concurrent.futures.ThreadPoolExecutor(k) as ex:
                ok = list(ex.map(one, range(n)))
            dt = time.time() - t0
            out[rt.name][f"K{k}"] = {"per_second": round(n / dt, 1), "failures": ok.count(False), "n": n}
    return out


def peak_rss_kb(argv):
    """Peak RSS of one command (GNU time writes it to a file: the container may hold stdio open)."""
    with tempfile.NamedTemporaryFile(mode="r", suffix=".rss") as f:
        subprocess.run(["/usr/bin/time", "-o", f.name, "-f", "%M", *argv], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            return int(f.read().strip().splitlines()[-1])
        except (ValueError, IndexError):
            return None


def bench_memory(rts, bundle, sleeper):
    out = {}
    for rt in rts:
        c = "m-" + rt.name
        rt.run("delete", "--force", c, check=False)
        cg = f"/berth-bench-{rt.name}"
        cfg_path = os.path.join(sleeper, "config.json")
        cfg = json.load(open(cfg_path))
        cfg["linux"]["cgroupsPath"] = cg
        json.dump(cfg, open(cfg_path, "w"))
        create_rss = peak_rss_kb(rt.cmd("create", "--bundle", sleeper, c).split())
        usage = None
        try:
            usage = int(open(f"/sys/fs/cgroup/memory{cg}/memory.max_usage_in_bytes").read()) // 1024
        except OSError:
            pass
        rt.run("start", c, check=False)
        exec_rss = peak_rss_kb(rt.cmd("exec", c, "/bin/true").split()) if rt.has_exec else None
        rt.run("delete", "--force", c, check=False)
        del cfg["linux"]["cgroupsPath"]
        json.dump(cfg, open(cfg_path, "w"))
        out[rt.name] = {"create_peak_rss_kb": create_rss, "exec_peak_rss_kb": exec_rss, "charged_to_container_kb": usage}
    return out


def ratio(a, b):
    return round(a / b, 2) if a and b else None


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--quick", action="store_true", help="fewer runs and containers (a smoke test of the suite)")
    ap.add_argument("--out", default=None)
    ap.add_argument("runtimes", nargs="*")
    a = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench.py: needs root")
    for tool in ("hyperfine", "busybox"):
        if not shutil.which(tool):
            sys.exit(f"bench.py: needs {tool} (apt-get install hyperfine busybox-static)")
    reexec_in_private_namespace()
    runs = 5 if a.quick else a.runs
    n_containers = 20 if a.quick else 200
    paths = a.runtimes or [os.path.join(REPO, "target/release/berth")] + [p for p in map(shutil.which, ("runc", "crun", "youki")) if p]
    work = tempfile.mkdtemp(prefix="berth-bench.")
    try:
        rts = [Runtime(os.path.abspath(p) if os.path.exists(p) else shutil.which(p), work) for p in paths]
        bundle = make_bundle(work, "bundle")
        sleeper = make_bundle(work, "sleeper", args=("sleep", "1000"))
        res = {"when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "runtimes": [rt.name for rt in rts],
               "versions": {rt.name: sh([rt.path, "--version"], check=False).stdout.splitlines()[0] if sh([rt.path, "--version"], check=False).stdout else "" for rt in rts}}
        print("== run (ms)"); res["run"] = bench_run(rts, bundle, runs)
        print("== split lifecycle (ms)"); res["split"] = bench_split(rts, bundle, sleeper, runs)
        print("== exec (ms)"); res["exec"] = bench_exec(rts, sleeper, runs)
        print("== throughput"); res["throughput"] = bench_throughput(rts, bundle, n_containers, (2, 8))
        print("== memory"); res["memory"] = bench_memory(rts, bundle, sleeper)
        print("== bind mounts"); res["mounts"] = {}
        for m in (0, 10, 50, 200):
            b = make_bundle(work, f"mounts{m}", mounts=m)
            res["mounts"][str(m)] = bench_run(rts, b, max(3, runs // 3))
        print("== seccomp"); res["seccomp"] = bench_run(rts, make_bundle(work, "seccomp", seccomp=True), runs)
    finally:
        for rt in rts:
            for cid in sh(rt.cmd("list", "-q"), check=False).stdout.split():
                rt.run("delete", "--force", cid, check=False)
        shutil.rmtree(work, ignore_errors=True)
    report(res)
    out = a.out or os.path.join(HERE, "results", time.strftime("%Y%m%d-%H%M%S") + ".json")
    with open(out, "w") as f:
        json.dump(res, f, indent=1)
    print(f"\nresults: {out}")


def report(res):
    names = res["runtimes"]
    base = names[0]
    def row(label, vals):
        cells = []
        for n in names:
            v = vals.get(n)
            r = ratio(vals.get(base), v) if n != base else None
            cells.append(f"{v if v is not None else '-':>10}" + (f" ({r}x)" if r else "      "))
        print(f"{label:<28}" + "".join(f"{c:>18}" for c in cells))
    print("\n" + " " * 28 + "".join(f"{n:>18}" for n in names) + f"      (ratio = {base} / other)")
    for k in ("median", "min", "max"):
        row(f"run {k} ms", {n: res["run"].get(n, {}).get(k) for n in names})
    for step in ("create", "start", "state", "delete"):
        row(f"{step} median ms", {n: res["split"].get(n, {}).get(step, {}).get("median") for n in names})
    row("exec median ms", {n: res["exec"].get(n, {}).get("median") for n in names})
    for k in ("K2", "K8"):
        row(f"throughput {k} /s", {n: res["throughput"].get(n, {}).get(k, {}).get("per_second") for n in names})
        row(f"throughput {k} failures", {n: res["throughput"].get(n, {}).get(k, {}).get("failures") for n in names})
    for k in ("create_peak_rss_kb", "exec_peak_rss_kb", "charged_to_container_kb"):
        row(k, {n: res["memory"].get(n, {}).get(k) for n in names})
    for m, r in res["mounts"].items():
        row(f"run with {m} binds ms", {n: r.get(n, {}).get("median") for n in names})
    row("run with seccomp ms", {n: res["seccomp"].get(n, {}).get("median") for n in names})


if __name__ == "__main__":
    main()
