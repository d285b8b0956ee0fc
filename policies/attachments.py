"""`attachments`: executables, scripts and installers are not mailed around (Điều 5.1:
the Office protects the system against viruses; Điều 7.5: nobody spreads them).

Each attachment's real type comes from its decoded bytes (libmagic, through
`python-magic`), never from its name or declared Content-Type, which the sender
chooses. Findings:

- `attachments.type_denied`: the real type is in `deny_types` (PE/ELF executables,
  scripts, installers, shortcuts by default);
- `attachments.extension_denied`: the file name ends in one of `deny_extensions`
  (`report.pdf.exe`, `run.js`, …), whatever the content;
- `attachments.disguised`: content of a denied type under a name or declared type that
  claims something harmless (an executable named `report.pdf`);
- zip archives are opened one level deep and their members checked the same way
  (the finding says which archive); an archive inside is not opened.
  `attachments.archive_limits`: more than `max_archive_entries` members, or more than
  `max_archive_bytes` once decompressed (real bytes counted while decompressing,
  never the sizes the archive declares: a zip bomb lies about those);
  `attachments.archive_encrypted`: members that cannot be inspected;
  `attachments.archive_corrupt`: an archive that does not decompress.

The inspection runs in a worker thread so the event loop keeps serving.
"""

from __future__ import annotations

import asyncio
import bz2
import fnmatch
import io
import struct
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import magic
from pydantic import Field, StrictBool, StrictInt, field_validator

from policies.base import Policy, PolicyOptions
from relay.message import Part
from relay.model import Finding, Stage, Transaction

ARTICLE = "Điều 7.5"

# libmagic (file 5.44) names; glob patterns allowed
DEFAULT_DENY_TYPES = [
    # Windows executables and libraries
    "application/vnd.microsoft.portable-executable",
    "application/x-dosexec",
    "application/x-msdownload",
    "application/x-ms-dos-executable",
    # ELF and Mach-O executables and shared objects
    "application/x-executable",
    "application/x-pie-executable",
    "application/x-sharedlib",
    "application/x-elf",
    "application/x-mach-binary",
    # scripts
    "text/x-shellscript",
    "text/x-msdos-batch",
    "application/x-bat",
    "text/x-script.*",
    "text/x-perl",
    "text/x-python",
    "text/x-php",
    "application/javascript",
    "text/javascript",
    "application/hta",
    # installers, Java, shortcuts
    "application/x-msi",
    "application/x-ms-installer",
    "application/vnd.ms-msi",
    "application/java-archive",
    "application/x-java-applet",
    "application/x-ms-shortcut",
]

DEFAULT_DENY_EXTENSIONS = [
    "exe", "com", "scr", "pif", "cpl", "dll", "sys", "msi", "msp", "mst",
    "bat", "cmd", "vbs", "vbe", "js", "jse", "wsf", "wsh", "wsc", "ps1", "psm1",
    "hta", "lnk", "jar", "reg", "scf", "inf", "iso", "img", "vhd", "vhdx",
]

# declared types that claim nothing; a denied real type under these is not "disguised"
NEUTRAL_DECLARED = {"application/octet-stream", "application/x-download"}

SNIFF_BYTES = 16 * 1024  # what libmagic is shown: its rules for executables, scripts and
# Office/zip files look at the first few KB; its text analysis costs per byte shown
READ_CHUNK = 64 * 1024

_magic = magic.Magic(mime=True)  # python-magic serialises calls with its own lock


class Options(PolicyOptions):
    deny_types: list[str] = DEFAULT_DENY_TYPES
    deny_extensions: list[str] = DEFAULT_DENY_EXTENSIONS
    inspect_archives: StrictBool = True
    max_archive_entries: StrictInt = Field(1000, ge=1, le=1_000_000)
    max_archive_bytes: StrictInt = Field(50 * 1024 * 1024, ge=1024)

    @field_validator("deny_types")
    @classmethod
    def _types(cls, value: list[str]) -> list[str]:
        for t in value:
            if "/" not in t:
                raise ValueError(f"expected a MIME type such as application/x-dosexec, got {t!r}")
        return [t.lower() for t in value]

    @field_validator("deny_extensions")
    @classmethod
    def _extensions(cls, value: list[str]) -> list[str]:
        return [e.lower().lstrip(".") for e in value]


@dataclass(frozen=True)
class Item:
    """One thing to judge: an attachment, or a member of a zip attachment."""

    where: str  # "part 2" or "part 2: archive.zip"
    name: str | None
    declared: str | None  # the Content-Type the sender declared (None inside archives)
    real: str
    archive: str | None = None  # the zip it was found in

    def label(self, lang: str) -> str:
        label = self.name or self.where
        if self.archive:
            label += f" ({'trong' if lang == 'vi' else 'in'} {self.archive})"
        return label


def extension(name: str | None) -> str:
    # Windows drops trailing dots and spaces: "a.exe. " runs as a.exe
    name = (name or "").rstrip(". ").rsplit("/", 1)[-1].rsplit("\\", 1)[-1]
    stem, dot, ext = name.rpartition(".")
    return ext.lower() if dot and stem else ""


def real_type(data: bytes) -> str:
    if not data:
        return "application/x-empty"
    try:
        return _magic.from_buffer(data[:SNIFF_BYTES]).lower()
    except magic.MagicException:
        return "application/octet-stream"


class AttachmentsPolicy(Policy):
    name = "attachments"
    articles = ('Điều 7.5',)
    stages = frozenset({Stage.DATA})
    Options = Options
    codes = {
        "attachments.type_denied": "attachment whose real type is denied (executable, script…)",
        "attachments.extension_denied": "attachment whose file name has a denied extension",
        "attachments.disguised": "denied content under a harmless-looking name or type",
        "attachments.archive_limits": "zip with too many members or too many bytes (zip bomb)",
        "attachments.archive_encrypted": "zip with encrypted members that cannot be inspected",
        "attachments.archive_corrupt": "zip that cannot be read",
    }

    async def check(
        self, stage: Stage, tx: Transaction, recipient: str | None = None
    ) -> Sequence[Finding]:
        assert tx.message is not None
        parts = [p for p in tx.message.parts if p.is_attachment]  # parsed here, in the loop
        if not parts:
            return []
        return await asyncio.to_thread(self.inspect, parts)

    def inspect(self, parts: Sequence[Part]) -> list[Finding]:
        out: list[Finding] = []
        for part in parts:
            item = Item(f"part {part.path}", part.filename, part.content_type,
                        real_type(part.head(SNIFF_BYTES)))
            out.extend(self.judge(item))
            if self.opts.inspect_archives and item.real == "application/zip":
                out.extend(self.inspect_zip(part, item))
        return out

    @property
    def opts(self) -> Options:
        assert isinstance(self.options, Options)
        return self.options

    def denied_type(self, real: str) -> bool:
        return any(fnmatch.fnmatchcase(real, pattern) for pattern in self.opts.deny_types)

    def judge(self, item: Item) -> list[Finding]:
        out = []
        vi, en = item.label("vi"), item.label("en")
        ext = extension(item.name)
        details = {"where": item.where, "name": item.name, "real_type": item.real,
                   "declared_type": item.declared, "archive": item.archive}
        bad_type = self.denied_type(item.real)
        bad_ext = ext in self.opts.deny_extensions
        if bad_type:
            out.append(self._finding(
                "attachments.type_denied",
                f"Không được gửi tệp loại {item.real}: {vi}",
                f"Files of type {item.real} are not allowed: {en}", details))
        if bad_ext:
            out.append(self._finding(
                "attachments.extension_denied",
                f"Không được gửi tệp có đuôi .{ext}: {vi}",
                f"Files named .{ext} are not allowed: {en}", details))
        claims_ext = bool(ext) and not bad_ext
        claims_type = (item.declared is not None and item.declared not in NEUTRAL_DECLARED
                       and not self.denied_type(item.declared))
        if bad_type and (claims_ext or claims_type):
            claim = f".{ext}" if claims_ext else str(item.declared)
            out.append(self._finding(
                "attachments.disguised",
                f"Tệp {vi} giả dạng {claim} nhưng thực chất là {item.real}",
                f"File {en} claims to be {claim} but really is {item.real}", details))
        return out

    def inspect_zip(self, part: Part, outer: Item) -> list[Finding]:
        name = part.filename or f"part {part.path}"
        where = f"part {part.path}: {name}"
        details: dict[str, object] = {"where": where, "name": part.filename}
        opts = self.opts
        declared = _declared_entries(part.payload)
        if declared is not None and declared > opts.max_archive_entries:
            # refused before zipfile reads a central directory of that size
            return [self._limits(name, f"{declared} members", details)]
        try:
            zf = zipfile.ZipFile(io.BytesIO(part.payload))
            members = zf.infolist()
        except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError,
                EOFError, NotImplementedError) as exc:
            return [self._corrupt(name, str(exc), details)]
        if len(members) > opts.max_archive_entries:
            return [self._limits(name, f"{len(members)} members", details)]
        out: list[Finding] = []
        total = 0
        encrypted: list[str] = []
        with zf:
            for info in members:
                if info.is_dir():
                    continue
                member = Item(where, info.filename, None, "", archive=name)
                if info.flag_bits & 0x1:
                    encrypted.append(info.filename)
                    out.extend(self.judge(member))  # the name can still be judged
                    continue
                if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED,
                                              zipfile.ZIP_BZIP2):
                    return [*out, self._limits(
                        name, f"{info.filename}: compression method {info.compress_type} "
                        "is not inspected", details)]
                try:
                    head = b""
                    for chunk in _read(zf, info, part.payload):
                        if len(head) < SNIFF_BYTES:
                            head += chunk[: SNIFF_BYTES - len(head)]
                        total += len(chunk)
                        if total > opts.max_archive_bytes:
                            return [*out, self._limits(
                                name, f"more than {opts.max_archive_bytes} bytes", details)]
                except (zipfile.BadZipFile, OSError, ValueError, EOFError,
                        NotImplementedError, RuntimeError) as exc:
                    return [*out, self._corrupt(name, f"{info.filename}: {exc}", details)]
                out.extend(self.judge(Item(where, info.filename, None, real_type(head), name)))
        if encrypted:
            out.append(self._finding(
                "attachments.archive_encrypted",
                f"Tệp nén {name} có tệp mã hoá, không kiểm tra được: {', '.join(encrypted[:5])}",
                f"Archive {name} has encrypted members that cannot be inspected: "
                f"{', '.join(encrypted[:5])}",
                {**details, "members": encrypted[:50]}))
        return out

    def _limits(self, name: str, why: str, details: dict[str, object]) -> Finding:
        return self._finding(
            "attachments.archive_limits",
            f"Tệp nén {name} vượt giới hạn kiểm tra ({why})",
            f"Archive {name} exceeds the inspection limits ({why})", {**details, "why": why})

    def _corrupt(self, name: str, why: str, details: dict[str, object]) -> Finding:
        return self._finding(
            "attachments.archive_corrupt",
            f"Tệp nén {name} bị hỏng, không đọc được",
            f"Archive {name} is corrupt and cannot be read", {**details, "error": why})

    def _finding(self, code: str, vi: str, en: str, details: dict[str, object]) -> Finding:
        return self.finding(code, ARTICLE, vi, en, reply_code=554, status="5.7.1",
                            details=details)


def _read(zf: zipfile.ZipFile, info: zipfile.ZipInfo, data: bytes) -> Iterator[bytes]:
    """A member's real bytes, a bounded chunk at a time.

    zipfile inflates deflate incrementally, but hands bzip2 the whole compressed
    member at once: a few hundred bytes of bzip2 become hundreds of megabytes in one
    call (a zip bomb). bzip2 members are therefore decompressed here from their raw
    bytes, never more than READ_CHUNK at a time."""
    if info.compress_type != zipfile.ZIP_BZIP2:
        with zf.open(info) as fh:
            while chunk := fh.read(READ_CHUNK):
                yield chunk
        return
    start = _member_data_offset(data, info)
    raw = memoryview(data)[start:start + info.compress_size]
    decompressor = bz2.BZ2Decompressor()
    for i in range(0, len(raw), READ_CHUNK):
        chunk = decompressor.decompress(raw[i:i + READ_CHUNK], READ_CHUNK)
        yield chunk
        while not decompressor.needs_input and not decompressor.eof:
            yield decompressor.decompress(b"", READ_CHUNK)
        if decompressor.eof:
            return


_LOCAL_HEADER = struct.Struct("<4s22xHH")
_EOCD = b"PK\x05\x06"


def _member_data_offset(data: bytes, info: zipfile.ZipInfo) -> int:
    signature, name_len, extra_len = _LOCAL_HEADER.unpack_from(data, info.header_offset)
    if signature != b"PK\x03\x04":
        raise zipfile.BadZipFile(f"{info.filename}: bad local header")
    return info.header_offset + _LOCAL_HEADER.size + name_len + extra_len


def _declared_entries(data: bytes) -> int | None:
    """The member count the end-of-central-directory record declares (None: not found,
    or zip64), read before zipfile parses every central-directory entry."""
    at = data.rfind(_EOCD, max(0, len(data) - 65_557))
    if at < 0 or at + 22 > len(data):
        return None
    (total,) = struct.unpack_from("<H", data, at + 10)
    return None if total == 0xFFFF else total
