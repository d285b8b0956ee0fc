"""Detection figures for the TCVN 6909 converter.

    PYTHONPATH=. python bench/tcvn_detection.py [--json] [--locale N]

1. The generated test set (tests/data/tcvn, tests/tcvn_corpus.py): per group found /
   total, and how many came out exactly right (TCVN3 compared without case: it has no
   toned capitals); false alarms on Western European and on correct Vietnamese text.
2. With --locale N: N real sentences per language from the system's gettext catalogues
   (/usr/share/locale/*/LC_MESSAGES/*.mo): French, German, Spanish, Portuguese, Italian,
   Dutch, Swedish, Danish, Finnish as Windows-1252, undeclared and UTF-8 (false alarms),
   and Vietnamese as UTF-8 (false alarms) and encoded with each table (found / total).
3. Short subjects (2-6 words, tests/tcvn_corpus.py `subjects()`): TCVN3 and VNI as raw
   8-bit, Q-encoded words and UTF-8 mojibake (found / total, exact), Western European
   and correct Vietnamese ones (false alarms); with --locale N also N runs of 2-6 words
   cut from each Western catalogue.
4. The time inspect() takes per 100 KB of text of each kind.

Office documents and other attachments: bench/tcvn_attachments.py.
"""

from __future__ import annotations

import gettext
import glob
import json
import random
import sys
import time
import unicodedata
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from relay.tcvn import inspect
from relay.tcvn.tables import encode_legacy
from tests.tcvn_corpus import b_word, cases, mojibake, q_word, subjects, vietnamese, western


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


WESTERN_LOCALES = ("fr", "de", "es", "pt", "pt_BR", "it", "nl", "sv", "da", "fi")


def catalogue(lang: str) -> list[str]:
    """Distinct translated lines of three words or more from the system's .mo files."""
    out: dict[str, None] = {}
    for path in sorted(glob.glob(f"/usr/share/locale/{lang}/LC_MESSAGES/*.mo")):
        try:
            with open(path, "rb") as fh:
                catalog = gettext.GNUTranslations(fh)._catalog  # type: ignore[attr-defined]
        except Exception:
            continue
        for key, value in catalog.items():
            if not key or not isinstance(value, str):
                continue
            for line in value.split("\n"):
                line = unicodedata.normalize("NFC", line.strip())
                if len(line.split()) >= 3:
                    out[line] = None
    return list(out)


def locale_figures(n: int) -> dict:
    rnd = random.Random(1)
    result: dict = {"western": {}, "vietnamese": {}}
    for lang in WESTERN_LOCALES:
        lines = catalogue(lang)
        rnd.shuffle(lines)
        flagged = total = 0
        for line in lines[:n]:
            data = line.encode("cp1252", "ignore")
            for raw, charset in ((data, "windows-1252"), (data, None), (line.encode(), "utf-8")):
                total += 1
                flagged += inspect(raw, charset).found
        result["western"][lang] = {"texts": total, "false_alarms": flagged}
    lines = catalogue("vi")
    rnd.shuffle(lines)
    lines = lines[:n]
    vi = result["vietnamese"]
    vi["utf-8 (must stay clean)"] = {
        "total": len(lines), "flagged": sum(inspect(t.encode(), "utf-8").found for t in lines)}
    for enc in ("tcvn3", "vni", "viscii", "vps", "cp1258"):
        total = found = moji = wrong = 0
        for line in lines:
            data = encode_legacy(line, enc)
            if data.isascii():
                continue  # nothing Vietnamese in it
            total += 1
            got = inspect(data, None).encoding
            found += got == enc
            wrong += got not in (enc, None)
            if enc in ("tcvn3", "vni"):
                moji += inspect(mojibake(data), "utf-8").encoding == enc
        vi[f"{enc} undeclared"] = {"total": total, "found": found, "wrong": wrong}
        if enc in ("tcvn3", "vni"):
            vi[f"{enc} mojibake"] = {"total": total, "found": moji}
    return result


def subject_figures(locale: int = 0) -> dict:
    from relay.tcvn.message import inspect_chunks
    from relay.tcvn.mime import header_chunks

    rows: dict[str, dict[str, int]] = defaultdict(
        lambda: {"total": 0, "found": 0, "exact": 0, "false_alarms": 0})
    misses: list[str] = []
    for case in subjects():
        det = inspect_chunks(header_chunks(case.value), None)
        row = rows[case.group]
        row["total"] += 1
        if case.expect is None:
            row["false_alarms"] += det.found
            if det.found:
                misses.append(f"false alarm {case.name}: {case.text}")
        elif det.encoding == case.expect:
            row["found"] += 1
            row["exact"] += det.text.lower() == case.text.lower()
        else:
            misses.append(f"missed {case.name}: {case.text} ({det.encoding})")
    if locale:
        rnd = random.Random(5)
        row = rows["western catalogue runs (8-bit, Q, UTF-8)"]
        for lang in WESTERN_LOCALES:
            lines = [line.split() for line in catalogue(lang)]
            for _ in range(locale):
                words = rnd.choice(lines)
                k = rnd.randint(2, 6)
                i = rnd.randint(0, max(0, len(words) - k))
                text = " ".join(words[i:i + k])
                data = text.encode("cp1252", "replace")
                row["total"] += 1
                for value in (data.decode("utf-8", "surrogateescape"),
                              q_word(data, "iso-8859-1"), b_word(text.encode())):
                    if inspect_chunks(header_chunks(value), None).found:
                        row["false_alarms"] += 1
                        misses.append(f"false alarm {lang}: {text}")
                        break
    return {"groups": dict(rows), "misses": misses}


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
    locale = int(sys.argv[sys.argv.index("--locale") + 1]) if "--locale" in sys.argv else 0
    if locale:
        result["locale"] = locale_figures(locale)
    result["subjects"] = subject_figures(locale)
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
    if "locale" in result:
        print("\nsystem gettext catalogues (real sentences):")
        for lang, r in result["locale"]["western"].items():
            print(f"  {lang:6} false alarms {r['false_alarms']} / {r['texts']}")
        for name, r in result["locale"]["vietnamese"].items():
            got = r.get("found", r.get("flagged"))
            wrong = f" (wrong table: {r['wrong']})" if r.get("wrong") else ""
            print(f"  vi {name:24} {got} / {r['total']}{wrong}")
    print(f"\nshort subjects (2-6 words)\n{'group':42} {'total':>6} {'found':>6} {'exact':>6} "
          f"{'false+':>6}")
    for name, r in result["subjects"]["groups"].items():
        print(f"{name:42} {r['total']:6} {r['found']:6} {r['exact']:6} {r['false_alarms']:6}")
    for m in result["subjects"]["misses"][:30]:
        print("  " + m)
    print("\ninspect() time per 100 KB (ms):")
    for name, ms in result["timing_ms_per_100kb"].items():
        print(f"  {name:30} {ms:8.1f}")


if __name__ == "__main__":
    main()
