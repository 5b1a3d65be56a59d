#!/usr/bin/env python3
"""How a table file's page-cache folios come back after they are evicted, by access pattern.

Maps FILE, and for each pattern: evicts the file from the page cache (POSIX_FADV_DONTNEED,
as reclaim would), reads it back that way, touches every page, and prints the mapping's Rss
and FilePmdMapped (the part mapped in 2 MiB pages) from /proc/self/smaps.

    scripts/folios-after-reclaim.py target/segstore-bench/ld-hash-10000000/store/t-*.sstbl
"""
import mmap, os, sys, random, re
path = sys.argv[1]
fd = os.open(path, os.O_RDONLY)
size = os.fstat(fd).st_size
def smaps(m):
    # FilePmdMapped and Rss of the mapping of `path`
    out = {}
    with open("/proc/self/smaps") as f:
        cur = False
        for line in f:
            if re.match(r"^[0-9a-f]+-[0-9a-f]+ ", line):
                cur = line.rstrip().endswith(path)
            elif cur:
                k, v = line.split(":", 1)
                if k in ("Rss", "FilePmdMapped"):
                    out[k] = out.get(k, 0) + int(v.split()[0]) // 1024
    return out
def fresh_map():
    m = mmap.mmap(fd, size, prot=mmap.PROT_READ)
    return m
def touch_all(m):
    for off in range(0, size, 4096):
        m[off]
def touch_random(m, n, seed=1):
    r = random.Random(seed)
    for _ in range(n):
        m[r.randrange(size)]
def evict():
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
def step(name, fn):
    m = fresh_map()
    if fn: fn(m)
    touch_all(m)
    s = smaps(m)
    print(f"{name:60s} Rss {s.get('Rss',0):5d} MiB  FilePmdMapped {s.get('FilePmdMapped',0):5d} MiB", flush=True)
    m.close()
print(f"{path}: {size/2**20:.0f} MiB")
step("as found in the page cache", None)
evict()
def rnd(m):
    m.madvise(mmap.MADV_RANDOM); touch_random(m, 200000)
step("evicted, then 200k random touches under MADV_RANDOM", rnd)
evict()
def rnd_normal(m):
    touch_random(m, 200000)
step("evicted, then 200k random touches, default advice", rnd_normal)
evict()
def seq(m):
    m.madvise(mmap.MADV_SEQUENTIAL); touch_all(m)
step("evicted, then read in order under MADV_SEQUENTIAL", seq)
evict()
def willneed(m):
    m.madvise(mmap.MADV_WILLNEED)
step("evicted, then MADV_WILLNEED on the whole mapping", willneed)
evict()
def fadv(m):
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_WILLNEED)
step("evicted, then POSIX_FADV_WILLNEED", fadv)
evict()
def readall(m):
    with open(path, "rb", buffering=0) as f:
        while f.read(2 << 20): pass
step("evicted, then read() in 2 MiB calls", readall)
