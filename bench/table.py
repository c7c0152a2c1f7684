#!/usr/bin/env python3
"""Print the results table of bench/results/*.json (what docs/benchmarks.md quotes)."""
import json
import os

R = os.environ.get("EG_BENCH_RESULTS",
                   os.path.join(os.path.dirname(os.path.abspath(__file__)), "results"))


def load(name):
    try:
        with open(os.path.join(R, name)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


rows = []
g = load("gatekeeping.json")
if g:
    m = g["main"]
    rows.append(("gatekeeping N=%d M=%d L=%d C=%d" % (m["n"], m["m"], m["latency_ms"],
                                                     m["concurrency"]),
                 "%.2f s" % m["wall_s"],
                 "<= 1.25x floor", "%.2fx of 2L floor %.2f s; %.2fx of 1L floor %.2f s" % (
                     m["ratio_to_floor_2L"], m["floor_2L_s"], m["ratio_to_floor_1L"],
                     m["floor_1L_s"])))
    n = g["naive"] or {}
    if n:
        rows.append(("naive (no coalescing, C=1), N=%d measured" % n["n"],
                     "%.1f s -> %.0f s at N=%d" % (n["wall_s"], n["extrapolated_wall_s"],
                                                     n["extrapolated_to_n"]),
                     "-", "coalesced is %.0fx faster" % g["speedup_vs_naive"]))
    for r in g["growth"]:
        rows.append(("  growth N=%d M=%d" % (r["n"], r["m"]), "%.2f s" % r["wall_s"], "-",
                     "%.2fx of 2L floor %.2f s, %d Set-CASMailbox" % (
                         r["ratio_to_floor_2L"], r["floor_2L_s"], r["set_casmailbox_calls"])))
i = load("ingest.json")
if i:
    for r in i["runs"]:
        tgt = 3000 if r["batch"] == 1 else 20000
        rows.append(("ingest %s (%d client threads)" % (r["mode"], r["client_threads"]),
                     "%.0f/s p50 %.2f ms p99 %.2f ms" % (r["commands_per_s"], r["p50_ms"],
                                                          r["p99_ms"]),
                     ">= %d/s, p99 < 10 ms" % tgt,
                     "%.2fx rate target, p99 %.2fx" % (r["commands_per_s"] / tgt,
                                                       r["p99_ms"] / 10)))
e = load("enforcement.json")
if e:
    rows.append(("enforcement L=%d, bg %.0f/s over %d mailboxes" % (
        e["latency_ms"], e["background_rate_achieved"], e.get("background_mailboxes", 0)),
        "p50 %.0f ms p99 %.0f ms (%d samples)" % (e["p50_ms"], e["p99_ms"], e["samples"]),
        "p99 < 1000 ms", "%.2fx" % (e["p99_ms"] / 1000)))
c = load("codec.json")
if c:
    rows.append(("codec %d Get-MobileDevice objects (%.0f MB)" % (c["objects"],
                                                                 c["input_bytes"] / 1e6),
                 "%.1f MB/s, %.0f objects/s" % (c["mb_per_s_median"], c["objects_per_s_median"]),
                 "-", "decode adds %d KiB RSS" % c["decode_extra_kib"]))
for name in ("inventory-50000.json", "inventory-100000.json", "inventory.json"):
    v = load(name)
    if not v:
        continue
    for phase in ("initial", "unchanged"):
        r = v[phase]
        up = ("; uploaded %.1f MB in %d records" % (r["uploaded_bytes"] / 1e6,
                                                     r["uploaded_records"])
              if "uploaded_bytes" in r else "")
        rows.append(("inventory %s full sync, %d devices" % (phase, v["devices"]),
                     "%.1f s, peak RSS %.1f MiB%s" % (r["wall_s"], r["rss_peak_kb"] / 1024.0, up),
                     "RSS < 100 MB" + ("; heartbeat only" if phase == "unchanged" else ""),
                     "%.2fx of the RSS limit" % (r["rss_peak_kb"] * 1024 / 100e6)))
w = max((len(r[0]) for r in rows), default=10)
for r in rows:
    print("%-*s | %-40s | %-22s | %s" % (w, r[0], r[1], r[2], r[3]))
