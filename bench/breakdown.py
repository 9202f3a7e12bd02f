#!/usr/bin/env python3
"""Buckets a `perf script -F comm,tid,ip,sym` dump of the daemon by what each sample was doing.

Used by bench/profile.sh for BENCHMARKS.md's per-machine breakdown of figure 1. Each sample
goes to the FIRST bucket (in the order below) with a frame anywhere in its stack matching the
bucket's pattern, so a log line written while a SQLite call is on the stack counts as SQLite,
and an RSA sign inside the HTTP client's future counts as RSA.
"""
import collections
import re
import sys

BUCKETS = [
    ("RSA sign", r"MerchantKey::sign_b64|KeyPair::sign|rsa_default_private_transform"),
    ("RSA verify", r"verify_b64|verify_rsa_signature|rsa_verify"),
    ("SQLite (with fsync)", r"^sqlite3|rusqlite|::ledger::"),
    ("logging", r"tracing_subscriber|tracing_core|::logging::|worker::log"),
    ("HTTP (client, loopback TCP)", r"hyper|reqwest|h2::|tcp_|sock_|__GI___writev|recvfrom|sendto|inet_"),
    ("JSON and answer reading", r"serde_json|gateway::classify|gateway::reader|gateway::envelope"),
    ("scheduling (tokio, futex, wake-ups)", r"tokio::runtime|futex|park|schedule|epoll|finish_task_switch|mio::"),
]


def samples(path):
    stack, out = [], []
    for line in open(path, errors="replace"):
        line = line.rstrip("\n")
        if not line.strip():
            if stack:
                out.append(stack)
            stack = []
        elif line[0] in " \t":
            parts = line.split(None, 1)
            stack.append(re.sub(r"\+0x[0-9a-f]+$", "", parts[1] if len(parts) > 1 else "?"))
    if stack:
        out.append(stack)
    return out


def main():
    all_samples = samples(sys.argv[1])
    counts = collections.Counter()
    compiled = [(name, re.compile(pattern)) for name, pattern in BUCKETS]
    for stack in all_samples:
        for name, pattern in compiled:
            if any(pattern.search(frame) for frame in stack):
                counts[name] += 1
                break
        else:
            counts["other"] += 1
    total = len(all_samples)
    print(f"{total} samples")
    for name, _ in BUCKETS + [("other", "")]:
        print(f"{100 * counts[name] / max(total, 1):5.1f} %  {name}")


if __name__ == "__main__":
    main()
