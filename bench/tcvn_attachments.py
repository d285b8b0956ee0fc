"""TCVN 6909 in attached documents: detection per format, conversion, time, hostile input.

    PYTHONPATH=. python bench/tcvn_attachments.py [--json] [--per-variant N]

1. The generated documents (tests/tcvn_documents.py): per format, legacy documents found
   / total (TCVN3 and VNI in their fonts, TCVN3 whose font was changed), false alarms on
   clean ones (Unicode Vietnamese, Western European), and conversions that read back as
   the original text (TCVN3 compared without the toned capitals it cannot hold, except
   the .VnTimeH heading, which must come back in capitals).
2. The time to inspect and to convert a 1 MB attachment of each format (TCVN3 in
   .VnTime; the file is 1 MB as attached, so a zipped format holds several MB of XML).
3. Hostile documents with the default limits: a zip bomb named .docx, 3,000 zip
   members, 10,000 runs, XML nested 100,000 deep, entity expansion, RTF groups nested
   10,000 deep: what comes back and how long it takes.
"""

from __future__ import annotations

import io
import json
import random
import sys
import time
import tracemalloc
import zipfile
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from relay.tcvn.attachment import inspect_document
from relay.tcvn.tables import encode_legacy, read_1252
from tests.tcvn_corpus import vietnamese
from tests.tcvn_documents import FORMATS, blocks, build, documents, same


def detection(per_variant: int) -> dict:
    rows: dict[str, dict[str, int]] = defaultdict(
        lambda: {"legacy": 0, "found": 0, "clean": 0, "false_alarms": 0, "exact": 0})
    misses = []
    for doc in documents(per_variant=per_variant):
        row = rows[doc.format]
        report = inspect_document(doc.data, f"file.{doc.format}", convert=doc.expect is not None)
        assert report is not None
        if doc.expect is None:
            row["clean"] += 1
            if report.found:
                row["false_alarms"] += 1
                misses.append(f"false alarm {doc.name}")
            continue
        row["legacy"] += 1
        if report.found and doc.expect in report.label:
            row["found"] += 1
        else:
            misses.append(f"missed {doc.name}: {report.label} {report.error or ''}")
        if report.converted is not None and same(blocks(doc.format, report.converted),
                                                 doc.paragraphs, doc.expect):
            row["exact"] += 1
        else:
            misses.append(f"inexact {doc.name}")
    return {"formats": dict(rows), "misses": misses}


def one_megabyte(fmt: str) -> bytes:
    """A TCVN3 document of about 1 MB as attached. Paragraphs are words of the test text
    in random order, so a zipped format compresses them about as much as real text
    (the same lines repeated would deflate a hundredfold)."""
    rnd = random.Random(fmt)
    words = " ".join(vietnamese()).split()

    def paragraphs(n: int) -> list[str]:
        return [" ".join(rnd.choice(words) for _ in range(rnd.randint(8, 40))) for _ in range(n)]

    sample = build(fmt, paragraphs(300), "tcvn3", ".VnTime", ".VnTimeH")
    count = int(300 * 1_000_000 / len(sample))
    return build(fmt, paragraphs(count), "tcvn3", ".VnTime", ".VnTimeH")


def timing() -> dict[str, dict[str, float]]:
    out = {}
    for fmt in FORMATS:
        data = one_megabyte(fmt)
        inspect_document(data[:2000] if fmt in ("txt", "csv") else data, f"f.{fmt}")  # warm
        # CPU time beside wall time: on a shared two-core machine the wall clock measures
        # the neighbours too
        start, cpu = time.perf_counter(), time.process_time()
        report = inspect_document(data, f"f.{fmt}")
        found, found_cpu = time.perf_counter() - start, time.process_time() - cpu
        start, cpu = time.perf_counter(), time.process_time()
        converted = inspect_document(data, f"f.{fmt}", convert=True)
        conv, conv_cpu = time.perf_counter() - start, time.process_time() - cpu
        tracemalloc.start()  # a run of its own: tracing slows Python down several times
        inspect_document(data, f"f.{fmt}", convert=True)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert report is not None and report.found and converted is not None
        out[fmt] = {"bytes": len(data), "inspect_ms": round(found * 1000),
                    "inspect_cpu_ms": round(found_cpu * 1000),
                    "convert_ms": round(conv * 1000), "convert_cpu_ms": round(conv_cpu * 1000),
                    "convert_peak_mb": round(peak / 2**20, 1), "runs": report.nodes}
    return out


def _zip(members: list[tuple[str, bytes]]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members:
            zf.writestr(name, data)
    return buf.getvalue()


def hostile() -> dict[str, dict[str, object]]:
    types = ("[Content_Types].xml", b"<Types/>")
    run = ('<w:r><w:rPr><w:rFonts w:hAnsi=".VnTime"/></w:rPr><w:t>'
           + read_1252(encode_legacy("Điện Biên ", "tcvn3")) + "</w:t></w:r>")
    w = 'xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main"'
    cases = {
        "zip bomb .docx (300 MB inflated)": _zip(
            [types, ("word/document.xml", b"<w:document " + b" " * (300 << 20) + b"/>")]),
        "3,000 zip members": _zip([types] + [(f"word/m{i}.xml", b"<x/>") for i in range(3000)]),
        "10,000 runs": _zip([types, ("word/document.xml", (
            f"<w:document {w}><w:body><w:p>" + run * 10_000 + "</w:p></w:body></w:document>"
        ).encode())]),
        "XML nested 100,000 deep": _zip(
            [types, ("word/document.xml", b"<a>" * 100_000 + b"</a>" * 100_000)]),
        "entity expansion": _zip([types, ("word/document.xml",
                                          b'<!DOCTYPE x [<!ENTITY a "aaaaaaaaaa">'
                                          b'<!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;">]><x>&b;</x>')]),
        "RTF groups nested 10,000 deep": b"{\\rtf1" + b"{" * 10_000 + b"x" + b"}" * 10_001,
    }
    out = {}
    for name, data in cases.items():
        filename = "x.rtf" if name.startswith("RTF") else "x.docx"
        start = time.perf_counter()
        report = inspect_document(data, filename, convert=True)
        elapsed = time.perf_counter() - start
        tracemalloc.start()
        inspect_document(data, filename, convert=True)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert report is not None
        outcome = f"not inspected: {report.error}" if report.error else \
            f"inspected: {report.nodes} runs converted"
        out[name] = {"attachment_bytes": len(data), "ms": round(elapsed * 1000, 1),
                     "peak_mb": round(peak / 2**20, 1), "outcome": outcome[:120]}
    return out


def main() -> None:
    per = int(sys.argv[sys.argv.index("--per-variant") + 1]) if "--per-variant" in sys.argv \
        else 6
    result = {"detection": detection(per), "one_megabyte": timing(), "hostile": hostile()}
    if "--json" in sys.argv:
        print(json.dumps(result, ensure_ascii=False, indent=1))
        return
    print(f"{'format':8} {'found':>9} {'false+':>9} {'exact':>9}")
    for fmt, r in result["detection"]["formats"].items():
        print(f"{fmt:8} {r['found']:4}/{r['legacy']:<4} {r['false_alarms']:4}/{r['clean']:<4} "
              f"{r['exact']:4}/{r['legacy']:<4}")
    for m in result["detection"]["misses"][:20]:
        print("  " + m)
    print("\n1 MB attachment (TCVN3 in .VnTime):")
    print(f"{'format':8} {'bytes':>9} {'runs':>7} {'inspect ms (cpu)':>17} "
          f"{'convert ms (cpu)':>17} {'peak MB':>8}")
    for fmt, r in result["one_megabyte"].items():
        inspect = f"{r['inspect_ms']} ({r['inspect_cpu_ms']})"
        convert = f"{r['convert_ms']} ({r['convert_cpu_ms']})"
        print(f"{fmt:8} {r['bytes']:9} {r['runs']:7} {inspect:>17} {convert:>17} "
              f"{r['convert_peak_mb']:8}")
    print("\nhostile documents (default limits):")
    for name, r in result["hostile"].items():
        print(f"  {name:34} {r['attachment_bytes']:>9} B {r['ms']:>8} ms {r['peak_mb']:>6} MB  "
              f"{r['outcome']}")


if __name__ == "__main__":
    main()
