#!/usr/bin/env python3
"""Side-by-side filesystem benchmark: raw ext4, GuardPoints in every mode,
gocryptfs and securefs, on one ext4 filesystem in one run.

Run through bench/compare.sh (it installs fio, gocryptfs, securefs and builds
secfs). Every configuration gets the same fio jobs and metadata workload;
configurations are interleaved over several rounds so machine noise hits all
of them alike, and the report gives medians and ratios. Nothing here asserts
a time: it measures and prints.
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
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SECFS_MODES = ["xts", "cbc-cs1", "gcm", "clear"]
ALL_CONFIGS = ["raw"] + SECFS_MODES + ["gocryptfs", "securefs"]


def sh(cmd, check=True, **kw):
    return subprocess.run(cmd, shell=isinstance(cmd, str), check=check, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)


def drop_caches():
    os.sync()
    Path("/proc/sys/vm/drop_caches").write_text("3\n")


class Config:
    """One filesystem under test: set up on `base`, used at `self.path`."""

    def __init__(self, name, base, secfs, key):
        self.name, self.base, self.secfs, self.key = name, base, secfs, key
        self.path = base / "plain" if name in ("gocryptfs", "securefs") else base / "gp"

    def setup(self):
        if self.base.exists():
            shutil.rmtree(self.base)
        self.base.mkdir(parents=True)
        if self.name == "raw":
            self.path.mkdir()
        elif self.name in SECFS_MODES:
            self.path.mkdir()
            sh([self.secfs, "mount", str(self.path), "--key-file", str(self.key), "--mode", self.name,
                "--log-file", str(self.base.parent / f"secfs-{self.name}.log")])
        elif self.name == "gocryptfs":
            cipher = self.base / "cipher"
            cipher.mkdir()
            self.path.mkdir()
            sh(["gocryptfs", "-init", "-q", "-extpass", "echo benchpass", "-scryptn", "10", str(cipher)])
            sh(["gocryptfs", "-q", "-extpass", "echo benchpass", str(cipher), str(self.path)])
        elif self.name == "securefs":
            data = self.base / "data"
            data.mkdir()
            self.path.mkdir()
            sh(["securefs", "create", "--pass", "benchpass", "-r", "1", "--pbkdf", "pkcs5-pbkdf2-hmac-sha256", str(data)])
            sh(["securefs", "mount", "-b", "--pass", "benchpass", "--log", str(self.base / "securefs.log"),
                str(data), str(self.path)])
            for _ in range(100):
                if os.path.ismount(self.path):
                    break
                time.sleep(0.05)

    def teardown(self):
        if self.name in SECFS_MODES:
            sh([self.secfs, "umount", "--lazy", str(self.path)], check=False)
        elif self.name in ("gocryptfs", "securefs"):
            sh(["umount", "-l", str(self.path)], check=False)
        time.sleep(0.2)
        shutil.rmtree(self.base, ignore_errors=True)


def fio(path, name, rw, bs, size_mb, jobs, runtime, fsync_end):
    args = ["fio", "--name=" + name, "--directory=" + str(path), "--rw=" + rw, "--bs=" + bs,
            f"--size={size_mb}M", f"--numjobs={jobs}", "--ioengine=psync", "--group_reporting",
            "--output-format=json", "--file_service_type=sequential"]
    if fsync_end:
        args.append("--end_fsync=1")
    if runtime:
        args += [f"--runtime={runtime}", "--time_based"]
    out = sh(args)
    job = json.loads(out.stdout)["jobs"][0]
    side = job["read"] if rw in ("read", "randread") else job["write"]
    return side["bw_bytes"] / 2**20, side["iops"]


def fio_workloads(cfg, size_mb, runtime):
    """MiB/s for sequential, IOPS for random; 1 and 2 jobs."""
    res = {}
    for jobs in (1, 2):
        d = cfg.path / f"fio{jobs}"
        d.mkdir()
        per_job = max(size_mb // jobs, 8)
        bw, _ = fio(d, "seq", "write", "1M", per_job, jobs, 0, True)
        res[f"seqwrite_{jobs}j_MiBps"] = bw
        drop_caches()
        bw, _ = fio(d, "seq", "read", "1M", per_job, jobs, 0, False)
        res[f"seqread_cold_{jobs}j_MiBps"] = bw
        drop_caches()
        _, iops = fio(d, "seq", "randread", "4k", per_job, jobs, runtime, False)
        res[f"randread_4k_{jobs}j_iops"] = iops
        _, iops = fio(d, "seq", "randwrite", "4k", per_job, jobs, runtime, True)
        res[f"randwrite_4k_{jobs}j_iops"] = iops
        shutil.rmtree(d)
    return res


def metadata_workload(cfg, tarball):
    res = {}
    d = cfg.path / "tree"
    d.mkdir()
    t = time.monotonic()
    sh(["tar", "-xf", str(tarball), "-C", str(d)])
    os.sync()
    res["extract_s"] = time.monotonic() - t
    drop_caches()
    t = time.monotonic()
    n = sh(f"find '{d}' | wc -l").stdout.strip()
    res["find_s"] = time.monotonic() - t
    t = time.monotonic()
    sh(["du", "-s", str(d)])
    res["du_s"] = time.monotonic() - t
    t = time.monotonic()
    shutil.rmtree(d)
    os.sync()
    res["rm_s"] = time.monotonic() - t
    res["files"] = float(n)
    return res


def make_tarball(work, smoke):
    tarball = work / "tree.tar"
    if smoke:
        sources = ["usr/include/linux"]
    else:
        # About 20k real files: headers plus documentation.
        sources = ["usr/include", "usr/share/doc", "usr/share/perl", "usr/share/zoneinfo"]
    sources = [s for s in sources if (Path("/") / s).exists()]
    sh(["tar", "-C", "/", "-cf", str(tarball), *sources])
    count = sh(f"tar -tf '{tarball}' | wc -l").stdout.strip()
    return tarball, int(count)


def setup_filesystem(work, size_mb, disk):
    """ext4 on a loop file: on a tmpfs by default, on `disk` if given."""
    holder = Path(disk) if disk else work / "ram"
    if not disk:
        holder.mkdir()
        sh(["mount", "-t", "tmpfs", "-o", f"size={size_mb + 512}m", "tmpfs", str(holder)])
    image = holder / "bench.ext4"
    sh(["truncate", "-s", f"{size_mb}M", str(image)])
    sh(["mkfs.ext4", "-q", "-F", "-E", "lazy_itable_init=0,lazy_journal_init=0", str(image)])
    mnt = work / "mnt"
    mnt.mkdir()
    sh(["mount", "-o", "loop", str(image), str(mnt)])
    return holder, image, mnt


def median_table(rows):
    """rows: list of (round, config, metric, value) -> {config: {metric: median}}"""
    acc = {}
    for _, cfg, metric, value in rows:
        acc.setdefault(cfg, {}).setdefault(metric, []).append(value)
    return {c: {m: statistics.median(v) for m, v in ms.items()} for c, ms in acc.items()}


def report(med, configs, rounds, args, machine, tree_files):
    metrics = [m for m in next(iter(med.values())).keys() if m != "files"]
    if not metrics:
        return "no results"
    lines = []
    lines.append(f"Medians of {rounds} interleaved rounds; {machine}; "
                 f"fio size {args.size} MiB, random runtime {args.runtime}s; metadata tree {tree_files} entries.")
    lines.append("")
    lines.append("| metric | " + " | ".join(configs) + " |")
    lines.append("|---" * (len(configs) + 1) + "|")
    for m in metrics:
        vals = []
        for c in configs:
            v = med.get(c, {}).get(m)
            vals.append("-" if v is None else (f"{v:.3f}" if m.endswith("_s") else f"{v:.0f}"))
        lines.append(f"| {m} | " + " | ".join(vals) + " |")
    lines.append("")

    def ratio(a, b, m):
        va, vb = med.get(a, {}).get(m), med.get(b, {}).get(m)
        if not va or not vb:
            return None
        return va / vb

    lines.append("| ratio | value | higher is better |")
    lines.append("|---|---|---|")
    pairs = [("xts", "raw"), ("xts", "gocryptfs"), ("gcm", "gocryptfs"), ("clear", "raw"), ("cbc-cs1", "gocryptfs")]
    for a, b in pairs:
        if a not in configs or b not in configs:
            continue
        for m in metrics:
            r = ratio(a, b, m)
            if r is None:
                continue
            better = "no (time)" if m.endswith("_s") else "yes"
            lines.append(f"| {a}/{b} {m} | {r:.2f} | {better} |")
    return "\n".join(lines)


def machine_description():
    cpu = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem = Path("/proc/meminfo").read_text().split()[1]
    return f"{os.cpu_count()} CPUs ({cpu}), {int(mem) // 2**20} GiB RAM, kernel {os.uname().release}"


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--secfs", required=True)
    p.add_argument("--smoke", action="store_true", help="a few seconds per configuration (CI)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--size", type=int, default=512, help="fio file size in MiB")
    p.add_argument("--runtime", type=int, default=10, help="seconds per random fio job")
    p.add_argument("--disk", help="put the ext4 image in this directory instead of a tmpfs")
    p.add_argument("--configs", default=",".join(ALL_CONFIGS))
    p.add_argument("--markdown", help="also write the report to this file")
    p.add_argument("--only", choices=["fio", "metadata"], help="run one half of the workloads")
    args = p.parse_args()
    if args.smoke:
        args.rounds, args.size, args.runtime = 1, 16, 1
    configs = [c for c in args.configs.split(",") if c]
    for c in configs:
        if c not in ALL_CONFIGS:
            sys.exit(f"unknown configuration {c}; choose from {','.join(ALL_CONFIGS)}")

    work = Path(tempfile.mkdtemp(prefix="guardfs-bench-", dir="/var/tmp"))
    holder = mnt = None
    try:
        image_mb = max(4 * args.size + 2048, 3072) if not args.smoke else 1024
        holder, _, mnt = setup_filesystem(work, image_mb, args.disk)
        key = work / "bench.key"
        sh([args.secfs, "genkey", str(key)])
        tarball, tree_files = make_tarball(work if args.disk else holder, args.smoke)
        rows = []
        for r in range(args.rounds):
            # Rotate the order each round so no configuration always runs first.
            order = configs[r % len(configs):] + configs[:r % len(configs)]
            for name in order:
                cfg = Config(name, mnt / name, args.secfs, key)
                print(f"round {r + 1}/{args.rounds}: {name}", file=sys.stderr, flush=True)
                cfg.setup()
                try:
                    res = {}
                    if args.only != "metadata":
                        res.update(fio_workloads(cfg, args.size, args.runtime))
                    if args.only != "fio":
                        res.update(metadata_workload(cfg, tarball))
                finally:
                    cfg.teardown()
                rows += [(r, name, m, v) for m, v in res.items()]
        med = median_table(rows)
        text = report(med, configs, args.rounds, args, machine_description(), tree_files)
        print(text)
        if args.markdown:
            Path(args.markdown).write_text(text + "\n")
    finally:
        if mnt:
            sh(["umount", "-l", str(mnt)], check=False)
        if holder and not args.disk:
            sh(["umount", "-l", str(holder)], check=False)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
