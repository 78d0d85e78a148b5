#!/usr/bin/env python3
"""Instructions per delivery by stage, from a callgrind file of
tests/bench/instructions.rs (tests/bench/instructions.sh prints it).

    python3 tests/bench/stages.py CALLGRIND_OUT DELIVERIES

A stage is the inclusive cost of the functions that do it (callgrind_annotate
--inclusive=yes), divided by the deliveries. Functions the compiler inlined
into their caller have no line of their own and count in the caller's stage;
what no stage names is "the rest" (the harness's loop, the answer, inlined
glue). The names cover the builds before and after the typed envelope
(`parse_object`/`classify_event` read a serde_json tree; `envelope::read`
reads the typed envelope), so two builds' tables compare line by line.
"""
import os
import re
import subprocess
import sys

# (stage, function names; the stage is the sum of those present)
STAGES = [
    ("verify the signature (SHA-256)", ["protocol::crypto::EncryptKey::verify_decoded"]),
    ("decrypt (base64, AES-256-CBC)", ["protocol::crypto::EncryptKey::decrypt"]),
    ("read the envelope", ["protocol::parse_object", "protocol::classify_event", "protocol::envelope::read"]),
    ("route", ["routing::Routing::route"]),
    ("claim the event_id", ["dedup::Dedup::claim"]),
    ("build the message (record, headers)", ["message::build"]),
    ("settle the claim", ["dedup::Owner::settle"]),
]


def inclusive(path, root):
    out = subprocess.run(
        ["callgrind_annotate", "--inclusive=yes", "--threshold=100", path],
        check=True, capture_output=True, text=True,
    ).stdout
    # A function's inclusive cost is its entry under its own source file in
    # this repository's src/ (absolute or relative) ("12,345 (1.2%)
    # /repo/src/message.rs:crate::message::build [binary]"); the entries of
    # the same function under other files are its inlined code, already in
    # that total.
    costs = {}
    line_re = re.compile(r"^\s*([\d,]+)\s+\(\s*[\d.]+%\)\s+([^:\s]+):(\S+)(?:\s+\[.*)?$")
    for line in out.splitlines():
        m = line_re.match(line)
        if m and (m.group(2).startswith(root + "/src/") or m.group(2).startswith("src/")):
            name, cost = m.group(3), int(m.group(1).replace(",", ""))
            costs[name] = max(costs.get(name, 0), cost)
    total = re.search(r"^\s*([\d,]+)\s+\(100.0%\)\s+PROGRAM TOTALS", out, re.M)
    return costs, int(total.group(1).replace(",", "")) if total else 0


def main():
    path, deliveries = sys.argv[1], int(sys.argv[2])
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    costs, total = inclusive(path, root)
    named = 0
    print(f"{'stage':40} {'instructions per delivery':>26}")
    for stage, names in STAGES:
        cost = sum(c for n, c in costs.items() for want in names if n.endswith("::" + want) or n == want)
        named += cost
        print(f"{stage:40} {cost / deliveries:>26,.0f}")
    print(f"{'the rest':40} {(total - named) / deliveries:>26,.0f}")
    print(f"{'total':40} {total / deliveries:>26,.0f}")


if __name__ == "__main__":
    main()
