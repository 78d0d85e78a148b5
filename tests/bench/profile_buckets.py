"""Turns tests/bench/profile.sh's raw output into per-event figures.

Every perf sample goes into one bucket, by its thread and its leaf function
(first rule that matches, in the order below); a bucket's µs per event is
its share of the samples times the bridge's CPU per event. Callgrind's two
runs (1,000 and 3,000 requests) give instructions and allocator calls per
event as the difference over the 2,000 extra requests.

usage: profile_buckets.py POINTS.jsonl WORKDIR OUT.json
"""

import json
import os
import re
import sys

# (bucket, pattern on the symbol or the library). Order matters: a generic
# function is named after what it handles (drop_in_place<serde_json::Value>
# is JSON work), so the specific crates come first.
RULES = [
    ("crypto", r"\baes\b|aes::|cbc::|sha2::|sha256|base64::|hex::|soft::fixslice|aesni|cipher::|digest::|subtle::"),
    ("json", r"serde_json|serde::|ryu::|itoa::|json"),
    ("metrics", r"prometheus::"),
    ("dedup", r"feishu_kafka_bridge::dedup|feishu_kafka_bridge::follower"),
    ("chat line", r"feishu_kafka_bridge::order"),
    ("hashing", r"sip::|SipHasher|core::hash|hashbrown|ahash|foldhash"),
    ("logging", r"tracing"),
    ("kafka client (request path)", r"rdkafka|rd_kafka|librdkafka|lz4|LZ4|crc32"),
    ("http", r"hyper::|axum::|http::|httparse|tower|http_body|bytes::|matchit"),
    ("allocation", r"\bmi_|_mi_|mimalloc|__rust_alloc|__rust_dealloc|__rust_realloc|__rdl_|__rg_|\bmalloc\b|\bfree\b|cfree|realloc|calloc|_int_malloc|_int_free"),
    ("memcpy/memset", r"memcpy|memmove|memset|memcmp|__memcpy|__memmove|__memset"),
    ("async runtime", r"tokio::|parking_lot|futures_|std::sync|std::thread|core::task|futex|__lll_|pthread_"),
    ("bridge (other)", r"feishu_kafka_bridge"),
]
ORDER = [b for b, _ in RULES] + ["kafka client threads", "kernel", "other"]
COMPILED = [(b, re.compile(p)) for b, p in RULES]


def bucket(comm, dso, kernel, sym):
    if comm.startswith("rdk:"):
        return "kafka client threads"
    if kernel:
        return "kernel"
    text = sym + " " + dso
    for b, rx in COMPILED:
        if rx.search(text):
            return b
    return "other"


def perf_buckets(report_path):
    shares, top = {}, []
    line_rx = re.compile(r"^\s*([\d.]+)%\s+(\S+)\s+(\S+)\s+\[([.k])\]\s+(.*)$")
    with open(report_path, errors="replace") as f:
        for line in f:
            m = line_rx.match(line)
            if not m:
                continue
            pct, comm, dso, kind, sym = float(m[1]), m[2], m[3], m[4], m[5].strip()
            b = bucket(comm, dso, kind == "k", sym)
            shares[b] = shares.get(b, 0.0) + pct
            if len(top) < 25:
                top.append((pct, comm, b, sym[:110]))
    return shares, top


def callgrind_totals(path):
    """Total instructions, allocator calls, and instructions by bucket."""
    names, total, allocs, by_bucket = {}, 0, 0, {}
    # Rust's allocator shims (mangled `__rustc::` names in newer compilers),
    # and the C library's for librdkafka.
    alloc_rx = re.compile(r"^(__rustc::)?(__rust_alloc|__rust_alloc_zeroed|__rust_realloc|malloc|calloc|realloc)$")
    cur_fn, pending_cfn = None, None
    id_rx = re.compile(r"^\((\d+)\)(?: (.*))?$")

    def name_of(spec):
        m = id_rx.match(spec)
        if not m:
            return spec
        if m[2]:
            names[m[1]] = m[2]
        return names.get(m[1], spec)

    in_calls = False
    with open(path, errors="replace") as f:
        for line in f:
            line = line.rstrip("\n")
            if line.startswith("fn="):
                cur_fn = name_of(line[3:])
                continue
            if line.startswith("cfn="):
                pending_cfn = name_of(line[4:])
                continue
            if line.startswith(("cfi=", "cfl=")):
                # File names: their own id space, not needed here.
                continue
            if line.startswith("calls="):
                if pending_cfn and alloc_rx.match(pending_cfn):
                    allocs += int(line.split("=")[1].split()[0])
                in_calls = True
                continue
            if line and (line[0].isdigit() or line[0] in "+-*"):
                parts = line.split()
                if len(parts) >= 2:
                    if in_calls:
                        # The inclusive cost of a call: not this function's own.
                        in_calls = False
                        continue
                    ir = int(parts[1])
                    total += ir
                    if cur_fn is not None:
                        b = bucket("", "", False, cur_fn)
                        by_bucket[b] = by_bucket.get(b, 0) + ir
    return total, allocs, by_bucket


def main():
    points_path, work, out = sys.argv[1:]
    points = [json.loads(l) for l in open(points_path)]
    result = {"points": [], "callgrind": None}
    for p in points:
        shares, top = perf_buckets(p.pop("report"))
        total = sum(shares.values()) or 1.0
        cpu = p["cpu_us_per_event"]
        p["us_per_event_by_bucket"] = {b: round(cpu * shares.get(b, 0.0) / total, 2) for b in ORDER if b in shares}
        p["top_functions"] = [{"pct": t[0], "thread": t[1], "bucket": t[2], "function": t[3]} for t in top]
        result["points"].append(p)
        v = p.get("verified") or {}
        print(f"\nconcurrency {p['concurrency']}: {p['throughput_rps']:.0f} events/s, p50 {p['p50_ms']:.2f} ms, "
              f"CPU {cpu:.1f} µs/event, {p['switches_per_event']:.2f} context switches/event, "
              f"{p['syscalls_per_event']:.2f} syscalls/event, lost {v.get('lost', '-')}, duplicated {v.get('duplicated', '-')}")
        for b in ORDER:
            if b in shares:
                print(f"  {b:<30} {cpu * shares[b] / total:7.2f} µs  ({100 * shares[b] / total:4.1f} %)")
        print("  top functions (self):")
        for t in top[:12]:
            print(f"    {t[0]:5.2f} %  {t[1]:<16} {t[2]:<22} {t[3]}")
    small, large = os.path.join(work, "cg.1000.out"), os.path.join(work, "cg.3000.out")
    if os.path.exists(small) and os.path.exists(large):
        t1, a1, b1 = callgrind_totals(small)
        t2, a2, b2 = callgrind_totals(large)
        n = 2000
        cg = {
            "instructions_per_event": round((t2 - t1) / n),
            "allocations_per_event": round((a2 - a1) / n, 1),
            "instructions_per_event_by_bucket": {b: round((b2.get(b, 0) - b1.get(b, 0)) / n) for b in ORDER if b in b2},
        }
        result["callgrind"] = cg
        print(f"\ncallgrind (c=1, every thread, no kernel): {cg['instructions_per_event']:,} instructions/event, "
              f"{cg['allocations_per_event']} allocations/event")
        for b, v in sorted(cg["instructions_per_event_by_bucket"].items(), key=lambda kv: -kv[1]):
            print(f"  {b:<30} {v:>9,} instructions")
    with open(out, "w") as f:
        json.dump(result, f, indent=1)
    print(f"\nprofile: written to {out}")


if __name__ == "__main__":
    main()
