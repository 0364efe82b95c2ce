#!/usr/bin/env python3
"""Compare two bench.py result files: flag every median (or throughput) of the first runtime that got
worse by more than a threshold (default 10%). Exit status 1 when something regressed.

    bench/compare.py OLD.json NEW.json [--threshold 0.10] [--runtime berth]
"""
import argparse
import json
import sys


def medians(res, rt):
    out = {"run": res["run"].get(rt, {}).get("median")}
    for step, v in res.get("split", {}).get(rt, {}).items():
        out[step] = v.get("median")
    out["exec"] = res.get("exec", {}).get(rt, {}).get("median")
    for m, r in res.get("mounts", {}).items():
        out[f"run+{m}binds"] = r.get(rt, {}).get("median")
    out["run+seccomp"] = res.get("seccomp", {}).get(rt, {}).get("median")
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("old")
    ap.add_argument("new")
    ap.add_argument("--threshold", type=float, default=0.10)
    ap.add_argument("--runtime", default="berth")
    a = ap.parse_args()
    old, new = json.load(open(a.old)), json.load(open(a.new))
    bad = 0
    mo, mn = medians(old, a.runtime), medians(new, a.runtime)
    for k in mo:
        o, n = mo.get(k), mn.get(k)
        if o is None or n is None:
            continue
        worse = n > o * (1 + a.threshold)
        bad += worse
        print(f"{k:<18} {o:>9.3f} -> {n:>9.3f} ms  {'REGRESSION' if worse else 'ok'}")
    for k in ("K2", "K8"):
        o = old.get("throughput", {}).get(a.runtime, {}).get(k, {}).get("per_second")
        n = new.get("throughput", {}).get(a.runtime, {}).get(k, {}).get("per_second")
        if o and n:
            worse = n < o * (1 - a.threshold)
            bad += worse
            print(f"throughput {k:<7} {o:>9.1f} -> {n:>9.1f} /s  {'REGRESSION' if worse else 'ok'}")
    print(f"{bad} regression(s) beyond {a.threshold:.0%}")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
