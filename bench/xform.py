#!/usr/bin/env python3
"""Data transformation benchmark: dataxform against `cp -a` on one disk.

Two trees, written once in clear: a large one (big files plus a share of
small ones, --large-mib in total) and a small-file one (--small-files files
of 1..8 KiB in 100 directories). Each round, for each tree, interleaved:

  cp        cp -a of the tree (and `cp -a` + `sync`, since dataxform's
            results are durable when it returns and cp's are not)
  encrypt   dataxform --rekey, clear_key -> k (xts)
  deep      dataxform --deep, k v1 -> v2 (new data keys, every unit; files
            over 1 MiB online, in place, a journaled step at a time)
  deep-offline  dataxform --deep --offline, k v2 -> v3 (every file through
            the batch: side file, copy back)
  shallow   dataxform --shallow, k v3 -> v4 (headers only)
  decrypt   dataxform --rekey, k -> clear_key

Caches are dropped (after a sync) before every timed step. Throughput is
logical bytes / seconds; the ratio is against cp in the same round; the
report gives medians over rounds. Shallow rekey is reported in files/s.
Run as root through bench/xform.sh (builds release binaries).
"""

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import time


def sh(*args, **kw):
    return subprocess.run(args, check=True, capture_output=True, text=True, **kw)


def drop_caches():
    os.sync()
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3")


def make_tree(root, files):
    """files: list of (relative path, size). Contents random."""
    os.makedirs(root, exist_ok=True)
    for rel, size in files:
        p = os.path.join(root, rel)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        with open(p, "wb") as f:
            left = size
            while left:
                n = min(left, 1 << 20)
                f.write(os.urandom(n))
                left -= n


def tree_bytes(root):
    total = n = 0
    for d, _, names in os.walk(root):
        for name in names:
            total += os.path.getsize(os.path.join(d, name))
            n += 1
    return total, n


class Bench:
    def __init__(self, a):
        self.a = a
        self.base = a.dir
        self.keys = os.path.join(self.base, "keys")
        os.makedirs(self.keys, exist_ok=True)
        a.secfs, a.voradmin = os.path.abspath(a.secfs), os.path.abspath(a.voradmin)
        self.dataxform = os.path.join(self.base, "dataxform")
        if os.path.lexists(self.dataxform):
            os.unlink(self.dataxform)
        os.symlink(a.voradmin, self.dataxform)
        for k in ["v1", "v2", "v3", "v4"]:
            p = os.path.join(self.keys, k)
            if not os.path.exists(p):
                sh(a.secfs, "genkey", p)

    def policy(self, current, transform=None):
        p = {
            "name": "bench",
            "security_rules": [
                {"order_number": 1, "action": "key_op", "effect": "permit,applykey"},
                {"order_number": 2, "action": "all_ops", "effect": "permit,applykey"},
            ],
            "key_rules": [{"key_id": current}],
        }
        if transform:
            p["data_transform_rules"] = [{"key_id": transform}]
        path = os.path.join(self.base, "policy.json")
        with open(path, "w") as f:
            json.dump(p, f)
        return path

    def mount(self, gp, policy, keys):
        args = [self.a.secfs, "mount", gp, "--mode", "xts", "--policy", policy,
                "--log-file", os.path.join(self.base, "secfs.log")]
        for spec, file in keys:
            args += ["--key", f"{spec}={os.path.join(self.keys, file)}"]
        out = sh(*args).stdout
        self.pid = int(out.split("daemon pid ")[1].split(",")[0].split(")")[0])

    def umount(self, gp):
        sh(self.a.secfs, "umount", gp)
        # The daemon holds the lower directory until it exits; the next
        # mount would find it busy.
        for _ in range(400):
            if not os.path.ismount(gp) and not os.path.exists(f"/proc/{self.pid}"):
                return
            time.sleep(0.05)

    def xform(self, gp, op):
        drop_caches()
        t = time.monotonic()
        r = subprocess.run([self.dataxform, *op.split(), "--gp", gp, "-y", "--json"],
                           capture_output=True, text=True)
        dt = time.monotonic() - t
        if r.returncode != 0:
            sys.exit(f"dataxform {op} failed: {r.stdout[-2000:]}{r.stderr[-2000:]}")
        summary = json.loads(r.stdout.strip().splitlines()[-1])
        return dt, summary

    def round(self, src, name):
        work = os.path.join(self.base, "work")
        if os.path.ismount(os.path.join(work, "gp")):
            subprocess.run(["umount", "-l", os.path.join(work, "gp")])
        shutil.rmtree(work, ignore_errors=True)
        os.makedirs(work)
        out = {}
        # cp -a, and cp -a + sync.
        drop_caches()
        t = time.monotonic()
        sh("cp", "-a", src, os.path.join(work, "cp"))
        out["cp"] = time.monotonic() - t
        os.sync()
        out["cp+sync"] = time.monotonic() - t
        shutil.rmtree(os.path.join(work, "cp"))
        gp = os.path.join(work, "gp")
        sh("cp", "-a", src, gp)
        steps = [
            ("encrypt", ("clear_key", "k"), [("k@1", "v1")], "--rekey"),
            ("deep", ("k", None), [("k@1", "v1"), ("k@2", "v2")], "--deep"),
            ("deep-offline", ("k", None), [("k@2", "v2"), ("k@3", "v3")], "--deep --offline"),
            ("shallow", ("k", None), [("k@3", "v3"), ("k@4", "v4")], "--shallow"),
            ("decrypt", ("k", "clear_key"), [("k@4", "v4")], "--rekey"),
        ]
        for step, pol, keys, op in steps:
            self.mount(gp, self.policy(*pol), keys)
            dt, summary = self.xform(gp, op)
            self.umount(gp)
            if summary["files_transformed"] != self.files[name]:
                sys.exit(f"{step}: transformed {summary['files_transformed']} of {self.files[name]}")
            out[step] = dt
        shutil.rmtree(work)
        return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--secfs", required=True)
    ap.add_argument("--voradmin", required=True)
    ap.add_argument("--dir", default="/var/tmp/guardfs-xform-bench")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--large-mib", type=int, default=1024)
    ap.add_argument("--small-files", type=int, default=20000)
    ap.add_argument("--smoke", action="store_true", help="tiny trees, one round")
    ap.add_argument("--markdown", help="also write the table here")
    a = ap.parse_args()
    if a.smoke:
        a.rounds, a.large_mib, a.small_files = 1, 16, 200
    os.makedirs(a.dir, exist_ok=True)
    b = Bench(a)
    rng = random.Random(7)
    src = {}
    b.files = {}
    b.bytes = {}
    large = []
    left = a.large_mib << 20
    i = 0
    while left > 0:
        if i % 4 == 3:
            size = rng.randint(0, 64 << 10)
        else:
            size = min(left, rng.randint(1 << 20, 32 << 20))
        large.append((f"d{i % 8}/f{i:05}", size))
        left -= size
        i += 1
    small = [(f"d{i % 100}/s{i:06}", rng.randint(1, 8192)) for i in range(a.small_files)]
    for name, files in [("large", large), ("small", small)]:
        p = os.path.join(a.dir, "src-" + name)
        marker = os.path.join(a.dir, f"src-{name}.done-{len(files)}-{sum(s for _, s in files)}")
        if not os.path.exists(marker):
            shutil.rmtree(p, ignore_errors=True)
            print(f"writing the {name} tree ({len(files)} files)...", file=sys.stderr)
            make_tree(p, files)
            open(marker, "w").close()
        src[name] = p
        b.bytes[name], b.files[name] = tree_bytes(p)

    results = {"large": [], "small": []}
    for r in range(a.rounds):
        for name in ["large", "small"]:
            res = b.round(src[name], name)
            results[name].append(res)
            print(f"round {r + 1} {name}: " + ", ".join(f"{k} {v:.2f}s" for k, v in res.items()),
                  file=sys.stderr)

    lines = ["| tree | files | MiB | step | median s | MB/s | vs cp -a | vs cp -a + sync | files/s |",
             "|---|---:|---:|---|---:|---:|---:|---:|---:|"]
    for name in ["large", "small"]:
        rs = results[name]
        for step in ["cp", "cp+sync", "encrypt", "deep", "deep-offline", "shallow", "decrypt"]:
            med = statistics.median(x[step] for x in rs)
            vs_cp = statistics.median(x["cp"] / x[step] for x in rs)
            vs_cps = statistics.median(x["cp+sync"] / x[step] for x in rs)
            mbs = b.bytes[name] / med / 1e6
            lines.append(
                f"| {name} | {b.files[name]} | {b.bytes[name] / 2**20:.0f} | {step} | {med:.2f} | "
                f"{mbs:.1f} | {vs_cp:.2f}x | {vs_cps:.2f}x | {b.files[name] / med:.0f} |")
    table = "\n".join(lines)
    print(table)
    if a.markdown:
        with open(a.markdown, "w") as f:
            f.write(table + "\n")


if __name__ == "__main__":
    main()
