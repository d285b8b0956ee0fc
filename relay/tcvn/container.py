"""Office documents opened with bounds: zip containers and XML, read and written back.

An attachment is whatever a sender made it, so nothing here trusts a declared size:
the number of zip members is capped before any is read, each member is inflated a
chunk at a time and its real bytes counted (a zip bomb lies about its sizes), and
XML is parsed by libxml2 with entity expansion, DTD loading and network access off and
without `huge_tree`, so it also keeps its own depth and text-node limits. OOXML and ODF
never carry a DOCTYPE; one is refused. Macros are never run: nothing here executes
anything, and `vbaProject.bin` and friends are copied as opaque bytes.
"""

from __future__ import annotations

import io
import zipfile
import zlib
from dataclasses import dataclass

from lxml import etree


class DocumentError(Exception):
    """A document that cannot or may not be opened: corrupt, encrypted, over the limits."""


class OverLimits(DocumentError):
    """The document exceeds the inspection limits (a zip bomb, or simply too big)."""


@dataclass(frozen=True)
class Limits:
    max_entries: int = 2000  # members in one zip
    # one inflated XML member: lxml's tree takes several times the XML, and the worker
    # that runs the policies has a memory budget ([inspection] max_memory)
    max_member_bytes: int = 16 * 1024 * 1024
    max_total_bytes: int = 64 * 1024 * 1024  # everything inflated from one document
    max_xml_elements: int = 2_000_000  # tags in one XML member (a bound on the tree built)


READ_CHUNK = 64 * 1024


class ZipDocument:
    """A zip container read lazily, every inflated byte counted against `limits`."""

    def __init__(self, data: bytes, limits: Limits) -> None:
        self.limits = limits
        self.inflated = 0
        try:
            self.zip = zipfile.ZipFile(io.BytesIO(data))
            self.infos = self.zip.infolist()
        except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError,
                NotImplementedError) as exc:
            raise DocumentError(f"not a readable zip: {exc}") from None
        if len(self.infos) > limits.max_entries:
            raise OverLimits(f"{len(self.infos)} zip members (limit {limits.max_entries})")
        self.names = {info.filename: info for info in self.infos}
        if len(self.names) != len(self.infos):
            raise DocumentError("the zip names a member twice")

    def __contains__(self, name: str) -> bool:
        return name in self.names

    def read(self, name: str) -> bytes:
        """A member's bytes, inflated a chunk at a time with real sizes checked."""
        info = self.names[name]
        if info.flag_bits & 0x1:
            raise DocumentError(f"{name} is encrypted")
        cap = min(self.limits.max_member_bytes,
                  self.limits.max_total_bytes - self.inflated)
        out = bytearray()
        try:
            with self.zip.open(info) as fh:
                while chunk := fh.read(READ_CHUNK):
                    out += chunk
                    if len(out) > cap:
                        raise OverLimits(f"{name} inflates past {cap} bytes")
        except OverLimits:
            raise
        except (zipfile.BadZipFile, zlib.error, OSError, ValueError, EOFError,
                NotImplementedError, RuntimeError) as exc:
            raise DocumentError(f"{name}: {exc}") from None
        self.inflated += len(out)
        return bytes(out)

    def rewrite(self, replaced: dict[str, bytes]) -> bytes:
        """The same container with some members replaced; the others keep their bytes,
        order, names, dates and compression (ODF's uncompressed `mimetype` stays first)."""
        out = io.BytesIO()
        with zipfile.ZipFile(out, "w") as dest:
            for info in self.infos:
                data = replaced[info.filename] if info.filename in replaced \
                    else self.read(info.filename)
                clone = zipfile.ZipInfo(info.filename, date_time=info.date_time)
                clone.compress_type = info.compress_type
                clone.external_attr = info.external_attr
                clone.create_system = info.create_system
                clone.comment = info.comment
                clone.extra = info.extra
                dest.writestr(clone, data)
        return out.getvalue()


def _parser() -> etree.XMLParser:
    return etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False,
                           dtd_validation=False, huge_tree=False, remove_comments=False,
                           remove_pis=False, strip_cdata=False)


def parse_xml(data: bytes, name: str, limits: Limits) -> etree._Element:
    """One XML member as a tree, or DocumentError. Bounded before and during the parse."""
    head = data[:4096]
    if b"<!DOCTYPE" in head or b"<!ENTITY" in data:
        raise DocumentError(f"{name}: a DOCTYPE or entity declaration (never in OOXML/ODF)")
    if data.count(b"<") > limits.max_xml_elements:
        raise OverLimits(f"{name}: more than {limits.max_xml_elements} XML tags")
    try:
        root = etree.fromstring(data, _parser())
    except etree.XMLSyntaxError as exc:  # also libxml2's own depth and size limits
        raise DocumentError(f"{name}: {exc}") from None
    if root is None:
        raise DocumentError(f"{name}: empty XML")
    return root


def serialise(root: etree._Element, original: bytes) -> bytes:
    """The tree written back with the declaration the member had (UTF-8, standalone)."""
    standalone = None
    head = original[:200]
    if b"standalone=\"yes\"" in head or b"standalone='yes'" in head:
        standalone = True
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8",
                          standalone=standalone)
