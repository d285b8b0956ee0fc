"""Detection figures for the TCVN 6909 converter on the generated test set.

    PYTHONPATH=. python bench/tcvn_detection.py [--json]

Per group: found / total, and how many came out exactly right (TCVN3 compared without
case: it has no toned capitals); false alarms on Western European and on correct
Vietnamese text; and the time to inspect 100 KB of text of each kind.
"""

from __future__ import annotations

import json
import sys
import time
import unicodedata
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from relay.tcvn import inspect
from relay.tcvn.tables import encode_legacy
from tests.tcvn_corpus import cases, mojibake, vietnamese, western


def flagged(det: object, expect: str | None) -> str | None:
    if det.legacy:  # type: ignore[attr-defined]
        return det.encoding  # type: ignore[attr-defined]
    if det.not_nfc:  # type: ignore[attr-defined]
        return "nfd"
    return None


def figures() -> dict:
    rows: dict[tuple[str, str], dict[str, int]] = defaultdict(
        lambda: {"total": 0, "found": 0, "wrong_encoding": 0, "exact": 0, "flagged": 0})
    misses: list[str] = []
    for case in cases():
        det = inspect(case.data, case.charset)
        got = flagged(det, case.expect)
        row = rows[(case.group, case.kind)]
        row["total"] += 1
        if case.expect is None:
            if got is not None:
                row["flagged"] += 1
                misses.append(f"false alarm {case.name}: {got}")
            continue
        if got == case.expect:
            row["found"] += 1
            same = det.text == case.text
            if case.expect == "tcvn3" or case.group == "tcvn5712 declared":
                same = det.text.lower() == case.text.lower()
            row["exact"] += same
            if not same:
                misses.append(f"inexact {case.name}")
        elif got is not None:
            row["wrong_encoding"] += 1
            misses.append(f"wrong {case.name}: {got}")
        else:
            misses.append(f"missed {case.name}")
    return {"groups": {f"{g} ({k}s)": r for (g, k), r in sorted(rows.items())},
            "misses": misses, "timing_ms_per_100kb": timing()}


def _repeat(text: str, size: int = 100_000) -> str:
    return (text + "\n") * (size // (len(text.encode()) + 1) + 1)


def timing() -> dict[str, float]:
    vi = "\n".join(vietnamese())
    we = "\n".join(western())
    samples = {
        "vietnamese utf-8 (clean)": (_repeat(vi).encode(), "utf-8"),
        "western windows-1252": (_repeat(we).encode("cp1252"), "windows-1252"),
        "english us-ascii": (_repeat(we.encode("ascii", "ignore").decode()).encode(), "us-ascii"),
        "tcvn3 disguised": (encode_legacy(_repeat(vi), "tcvn3"), None),
        "vni disguised": (encode_legacy(_repeat(vi), "vni"), "windows-1252"),
        "tcvn3 mojibake": (mojibake(encode_legacy(_repeat(vi), "tcvn3")), "utf-8"),
        "nfd utf-8": (unicodedata.normalize("NFD", _repeat(vi)).encode(), "utf-8"),
    }
    out = {}
    for name, (data, charset) in samples.items():
        inspect(data[:2000], charset)  # warm the tables and caches
        runs = 3
        start = time.perf_counter()
        for _ in range(runs):
            inspect(data, charset)
        elapsed = (time.perf_counter() - start) / runs
        out[name] = round(elapsed * 1000 * 100_000 / len(data), 1)
    return out


def main() -> None:
    result = figures()
    if "--json" in sys.argv:
        print(json.dumps(result, ensure_ascii=False, indent=1))
        return
    print(f"{'group':36} {'total':>6} {'found':>6} {'wrong':>6} {'exact':>6} {'false+':>6}")
    for name, r in result["groups"].items():
        print(f"{name:36} {r['total']:6} {r['found']:6} {r['wrong_encoding']:6} "
              f"{r['exact']:6} {r['flagged']:6}")
    print("\nmisses (first 40):")
    for m in result["misses"][:40]:
        print("  " + m)
    print(f"  ... {len(result['misses'])} in all")
    print("\ninspect() time per 100 KB (ms):")
    for name, ms in result["timing_ms_per_100kb"].items():
        print(f"  {name:30} {ms:8.1f}")


if __name__ == "__main__":
    main()
