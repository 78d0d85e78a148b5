"""The figures the targets are about, from one run of tests/bench/run.sh:
per concurrency (1 user, no duplicates), each system's median throughput,
p50 and CPU µs per event (its own processes only), and the bridge against
the bare server and the Node SDK peer; at concurrency 1, each run of the
bridge against the Node peer's run of the same number.

usage: ratios.py RESULTS.jsonl
"""

import json
import statistics
import sys


def main():
    rows = [json.loads(l) for l in open(sys.argv[1])]
    by = {}
    for r in rows:
        x = r.get("result")
        if not x or x.get("rate") or x["users"] != 1 or x["dup_rate"] != 0 or r.get("half_peak"):
            continue
        by.setdefault((r["system"], x["concurrency"]), []).append(x)
    if not by:
        return
    med = lambda xs, f: statistics.median(f(x) for x in xs)
    cpu = lambda x: x.get("cpu_us_per_request", {}).get("system", float("nan"))
    print("\n== per concurrency, medians (CPU: µs per event of the system's own processes)")
    systems = sorted({s for s, _ in by})
    for c in sorted({c for _, c in by}):
        line = [f"c={c:<4}"]
        for s in systems:
            xs = by.get((s, c))
            if xs:
                line.append(f"{s} {med(xs, lambda x: x['throughput_rps']):,.0f}/s p50 {med(xs, lambda x: x['p50_ms']):.2f} ms CPU {med(xs, cpu):.1f} µs")
        print("  " + " | ".join(line))
        b, bare, node = by.get(("bridge", c)), by.get(("bare", c)), by.get(("node", c))
        if b and bare:
            print(f"    bridge / bare: CPU per event {med(b, cpu) / med(bare, cpu):.2f}x (target <= 2.5x), "
                  f"throughput {med(b, lambda x: x['throughput_rps']) / med(bare, lambda x: x['throughput_rps']):.0%}")
        if b and node:
            print(f"    bridge / node: throughput {med(b, lambda x: x['throughput_rps']) / med(node, lambda x: x['throughput_rps']):.2f}x, "
                  f"p50 {med(b, lambda x: x['p50_ms']):.2f} vs {med(node, lambda x: x['p50_ms']):.2f} ms")
        if c == 1 and b and node:
            for i, (x, y) in enumerate(zip(b, node), 1):
                print(f"    round {i}: bridge {x['throughput_rps']:,.0f}/s p50 {x['p50_ms']:.2f} ms, node {y['throughput_rps']:,.0f}/s "
                      f"p50 {y['p50_ms']:.2f} ms: {x['throughput_rps'] / y['throughput_rps']:.2f}x")


if __name__ == "__main__":
    main()
