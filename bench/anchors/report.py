#!/usr/bin/env python3
"""Side-by-side table: Custody's criterion medians against the measured anchors.

Inputs: the anchors' JSON lines (keylime_checkquote.py, nvidia_gpu_offline.py) and the
criterion output directory. Criterion 0.8 stores a benchmark made with
`c.benchmark_group("tpm").bench_function("quote", ..)` under <criterion>/tpm/quote/new/;
one made with `c.bench_function("tpm/quote", ..)` under <criterion>/tpm_quote/new/ (it
replaces '/' in a group name with '_'). Both layouts are accepted. The median point estimate
in estimates.json is in nanoseconds.

Exit status: 2 if a criterion result is missing, unreadable or stale (or an anchor is missing),
1 with --strict if a goal is not met, else 0.
"""

import argparse
import json
import os
import sys

# (criterion id, anchor name it is compared with or None, goal: at least this many times faster)
BENCHES = [
    ("tpm/quote", "keylime checkquote", 4.0),
    # First sight of an AK (Keylime parses the AK on every call; shown for comparison).
    ("tpm/quote-cold", "keylime checkquote", None),
    ("snp/milan-cold", None, None),
    ("nvgpu/hopper-cold", "nv-local-gpu-verifier offline", 8.0),
    ("nvgpu/hopper-warm", "nv-local-gpu-verifier offline", 30.0),
    ("floor/p384-verify", None, None),
]
FLOOR_ID = "floor/p384-verify"
# P-384 ECDSA verifications an appraisal cannot avoid. Cold Hopper: leaf, BROM, provisioner
# ICA and identity certs each checked against their issuer (the root is pinned, compared not
# verified) plus the report signature. Warm: the chain is cached, only the report signature.
FLOOR_SIGS = {
    "nvgpu/hopper-cold": 5,
    "nvgpu/hopper-warm": 1,
}


def _filename_safe(s):
    for c in '?"/\\*<>:|^':
        s = s.replace(c, "_")
    return s


def estimate_paths(criterion_dir, bench_id):
    """Where criterion 0.8 may have written `bench_id` (group/function first)."""
    group, _, function = bench_id.partition("/")
    paths = []
    if function:
        paths.append(os.path.join(criterion_dir, _filename_safe(group), _filename_safe(function)))
    paths.append(os.path.join(criterion_dir, _filename_safe(bench_id)))
    return [os.path.join(p, "new", "estimates.json") for p in paths]


def criterion_median_ns(criterion_dir, bench_id, since=None):
    """(median ns, path) or (None, reason). `since`: epoch seconds the bench run started;
    an older estimates.json is left over from an earlier run and does not count."""
    for path in estimate_paths(criterion_dir, bench_id):
        if not os.path.isfile(path):
            continue
        if since is not None and os.path.getmtime(path) < since:
            return None, f"{path}: stale (older than this bench run)"
        try:
            with open(path, encoding="utf-8") as f:
                v = json.load(f)["median"]["point_estimate"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            return None, f"{path}: unreadable ({e})"
        if not isinstance(v, (int, float)) or v <= 0:
            return None, f"{path}: bad median {v!r}"
        return float(v), path
    return None, "not found: " + " or ".join(estimate_paths(criterion_dir, bench_id))


def load_anchors(lines):
    """One entry per anchor. appraise.sh measures each anchor before and after the criterion
    run (this machine's speed drifts between minutes); the faster run is kept, which can only
    make the anchor look better and Custody's ratio smaller."""
    anchors = {}
    for line in lines:
        line = line.strip()
        if line.startswith("{"):
            a = json.loads(line)
            old = anchors.get(a["anchor"])
            if old is None or a["median_us"] < old["median_us"]:
                a["runs"] = (old or {}).get("runs", 0) + 1
                anchors[a["anchor"]] = a
            else:
                old["runs"] = old.get("runs", 1) + 1
    return anchors


def fmt_ns(ns):
    if ns is None:
        return "-"
    if ns >= 1e6:
        return f"{ns / 1e6:.2f} ms"
    if ns >= 1e3:
        return f"{ns / 1e3:.1f} us"
    return f"{ns:.0f} ns"


def build(criterion_dir, anchors, since=None):
    """Rows, floor lines, problems (missing results)."""
    rows, problems, custody = [], [], {}
    for bench_id, anchor_name, goal in BENCHES:
        ns, where = criterion_median_ns(criterion_dir, bench_id, since)
        if ns is None:
            problems.append(f"{bench_id}: {where}")
        custody[bench_id] = ns
        anchor = anchors.get(anchor_name) if anchor_name else None
        if anchor_name and anchor is None:
            problems.append(f"{bench_id}: anchor '{anchor_name}' was not measured")
        anchor_ns = anchor["median_us"] * 1e3 if anchor else None
        ratio = anchor_ns / ns if (anchor_ns and ns) else None
        met = None if (goal is None or ratio is None) else ratio >= goal
        rows.append(
            {
                "id": bench_id,
                "custody_ns": ns,
                "anchor": f"{anchor_name} {anchor['version']}" if anchor else (anchor_name or ""),
                "anchor_ns": anchor_ns,
                "ratio": ratio,
                "goal": goal,
                "met": met,
            }
        )
    floors = []
    floor_ns = custody.get(FLOOR_ID)
    for bench_id, n in FLOOR_SIGS.items():
        ns = custody.get(bench_id)
        if floor_ns and ns:
            total = n * floor_ns
            floors.append(
                {
                    "id": bench_id,
                    "sigs": n,
                    "floor_ns": total,
                    "custody_ns": ns,
                    "times_floor": ns / total,
                }
            )
    return rows, floors, problems


def render(rows, floors, problems):
    out = []
    head = ("id", "Custody median", "anchor", "anchor median", "ratio", "goal", "met")
    table = [head]
    for r in rows:
        table.append(
            (
                r["id"],
                fmt_ns(r["custody_ns"]) if r["custody_ns"] else "MISSING",
                r["anchor"] or "-",
                fmt_ns(r["anchor_ns"]),
                f"{r['ratio']:.1f}x" if r["ratio"] else "-",
                f">= {r['goal']:g}x" if r["goal"] else "-",
                {True: "yes", False: "no", None: "-"}[r["met"]],
            )
        )
    widths = [max(len(row[i]) for row in table) for i in range(len(head))]
    for i, row in enumerate(table):
        out.append("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
        if i == 0:
            out.append("  ".join("-" * w for w in widths))
    if floors:
        out.append("")
        out.append(f"P-384 verify floor ({FLOOR_ID}):")
        for f in floors:
            plural = "s" if f["sigs"] != 1 else ""
            out.append(
                f"  {f['id']}: {f['sigs']} signature verification{plural} = {f['floor_ns'] / 1e3:.1f} us, "
                f"Custody at {f['times_floor']:.2f}x the floor"
            )
    if problems:
        out.append("")
        out.extend(f"MISSING {p}" for p in problems)
    return "\n".join(out)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--criterion", required=True, help="criterion output dir (target/criterion)")
    ap.add_argument("--anchors", required=True, help="file with the anchors' JSON lines")
    ap.add_argument("--strict", action="store_true", help="exit 1 when a goal is not met")
    ap.add_argument("--since", type=float, help="epoch seconds; reject older estimates.json files")
    args = ap.parse_args(argv)
    with open(args.anchors, encoding="utf-8") as f:
        anchors = load_anchors(f)
    rows, floors, problems = build(args.criterion, anchors, args.since)
    print(render(rows, floors, problems))
    if problems:
        return 2
    if args.strict and any(r["met"] is False for r in rows):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
