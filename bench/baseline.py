#!/usr/bin/env python3
"""The baseline for BENCHMARKS.md: what a merchant would otherwise write.

A cron-run script (one run processes everything due, then exits) doing the same work as the
daemon, with requests, cryptography and sqlite3: for each due refund, a signed /refundQuery,
the answer's signature verified, the amount/currency/refund number checked, and the attempt
plus the outcome committed in one transaction with a compare-and-set on REFUND_PENDING, on the
same ledger schema and with the same durability (WAL, synchronous=FULL). Queries are sent one
after another, as such scripts usually are; one requests.Session keeps the connection alive.

Prints one JSON line: {"finalized", "rescheduled", "failed", "loop_cpu_s", "loop_wall_s"}.
"""

import argparse
import base64
import datetime as dt
import json
import sqlite3
import time
from decimal import Decimal

import requests
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding


def ts(t):
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--ledger", required=True)
    p.add_argument("--base-url", required=True)
    p.add_argument("--merchant-key", required=True)
    p.add_argument("--gateway-key", required=True)
    p.add_argument("--app-id", default="SANDBOX-APP")
    p.add_argument("--merchant-no", default="SANDBOX-MERCHANT")
    p.add_argument("--batch", type=int, default=1000)
    a = p.parse_args()

    with open(a.merchant_key, "rb") as f:
        merchant = serialization.load_pem_private_key(f.read(), password=None)
    with open(a.gateway_key, "rb") as f:
        gateway = serialization.load_pem_public_key(f.read())

    db = sqlite3.connect(a.ledger, isolation_level=None, timeout=5)
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("PRAGMA synchronous = FULL")
    session = requests.Session()
    url = a.base_url.rstrip("/") + "/refundQuery"
    counts = {"finalized": 0, "rescheduled": 0, "failed": 0}

    cpu0, wall0 = time.process_time(), time.monotonic()
    while True:
        now = dt.datetime.now(dt.timezone.utc)
        due = db.execute(
            "SELECT out_refund_no, amount, currency, attempts FROM refunds"
            " WHERE status = 'REFUND_PENDING' AND next_query_at <= ?"
            " ORDER BY next_query_at, id LIMIT ?",
            (ts(now), a.batch),
        ).fetchall()
        if not due:
            break
        for no, amount, currency, attempts in due:
            at = dt.datetime.now(dt.timezone.utc)
            body = json.dumps(
                {
                    "version": "1.4",
                    "keyVersion": "1",
                    "requestTime": at.isoformat(timespec="milliseconds"),
                    "appId": a.app_id,
                    "merchantNo": a.merchant_no,
                    "data": {"outRefundNo": no},
                },
                separators=(",", ":"),
            ).encode()
            sign = merchant.sign(body, padding.PKCS1v15(), hashes.SHA256())
            started = time.monotonic()
            outcome, status, http, code, data_status, error = "retryable", None, None, None, None, None
            try:
                r = session.post(
                    url,
                    data=body,
                    headers={"Content-Type": "application/json", "sign": base64.b64encode(sign).decode()},
                    timeout=15,
                    allow_redirects=False,
                )
                http = r.status_code
                answer = r.json()
                code = answer.get("code")
                if http == 200 and code == "APPLY_SUCCESS":
                    gateway.verify(base64.b64decode(r.headers["sign"]), r.content, padding.PKCS1v15(), hashes.SHA256())
                    d = answer["data"]
                    data_status = d["status"]
                    if (
                        d["outRefundNo"] != no
                        or Decimal(str(d["refundAmount"])) != Decimal(amount)
                        or d["refundCurrency"] != currency
                    ):
                        outcome, error = "mismatch", "answer does not match the ledger"
                    elif data_status in ("REFUND_SUCCESS", "REFUND_FAILED"):
                        outcome, status = "final", data_status
                    else:
                        outcome = "pending"
                else:
                    error = f"gateway code {code}"
            except (requests.RequestException, ValueError, KeyError, InvalidSignature) as e:
                error = f"{type(e).__name__}: {e}"[:200]
            latency_ms = int((time.monotonic() - started) * 1000)
            at_text = ts(at)
            db.execute("BEGIN IMMEDIATE")
            db.execute(
                "INSERT INTO attempts (out_refund_no, attempted_at, outcome, http_status, gateway_code,"
                " data_status, latency_ms, error) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (no, at_text, outcome, http, code, data_status, latency_ms, error),
            )
            if status is not None:
                db.execute(
                    "UPDATE refunds SET status = ?, final_source = 'query', finalized_at = ?,"
                    " next_query_at = NULL, attempts = attempts + 1, last_attempt_at = ?,"
                    " last_outcome = 'final', last_error = NULL"
                    " WHERE out_refund_no = ? AND status = 'REFUND_PENDING'",
                    (status, at_text, at_text, no),
                )
                counts["finalized"] += 1
            else:
                nxt = ts(dt.datetime.now(dt.timezone.utc) + dt.timedelta(minutes=1))
                db.execute(
                    "UPDATE refunds SET next_query_at = ?, attempts = attempts + ?,"
                    " last_attempt_at = ?, last_outcome = ?, last_error = ?"
                    " WHERE out_refund_no = ? AND status = 'REFUND_PENDING'",
                    (nxt, 1 if outcome in ("pending", "mismatch") else 0, at_text, outcome, error, no),
                )
                counts["rescheduled" if outcome != "retryable" else "failed"] += 1
            db.execute("COMMIT")
    counts["loop_cpu_s"] = time.process_time() - cpu0
    counts["loop_wall_s"] = time.monotonic() - wall0
    print(json.dumps(counts))


if __name__ == "__main__":
    main()
