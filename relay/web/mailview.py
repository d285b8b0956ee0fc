"""An archived message made fit to show: hostile input in, inert text out.

Archived messages are whatever a client sent. They are parsed here with the relay's
bounded parser (`relay.message.Message`: header section and field count capped,
compat32, parse errors kept as problems), and every string that leaves is bounded
and made visible: control characters and bidirectional overrides (which can make
`invoice‮fdp.exe` read as `invoice.pdf`) become visible marks. HTML mail becomes
text here; the page may also show the HTML itself, inside a sandboxed frame under a
CSP that forbids scripts. `render_isolated` runs this in a child process with a wall
time, so a message that makes the email package slow costs its own view only.
"""

from __future__ import annotations

import email.header
import email.message
import html.parser
import multiprocessing
import re
import unicodedata
from dataclasses import dataclass, field
from multiprocessing.connection import Connection

from relay.message import Message, MessageTooComplex, Part, decode_header_value

MAX_TEXT = 512 * 1024  # characters of body text shown
MAX_HTML = 1024 * 1024  # characters of HTML put in the sandboxed frame
MAX_HTML_PARSE = 2 * 1024 * 1024  # characters of HTML turned into text
MAX_HEADER_VALUE = 2000
MAX_ATTACHMENTS = 200
SHOWN_HEADERS = ("Date", "From", "Sender", "Reply-To", "To", "Cc", "Subject", "Message-ID")

# C0/C1 controls but tab and newline, and the bidirectional formatting characters
_INVISIBLE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e"
                        "\u2066-\u2069]")


def visible(text: str, limit: int | None = None) -> str:
    """NFC text with every control and bidi character shown as its code point.

    Raw 8-bit header bytes reach us as surrogate escapes: read them as UTF-8 (what
    SMTPUTF8 clients send), anything else as U+FFFD."""
    text = text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    text = unicodedata.normalize("NFC", text)
    if limit is not None and len(text) > limit:
        text = text[:limit] + "…"
    return _INVISIBLE.sub(lambda m: f"\u2039U+{ord(m.group()):04X}\u203a", text)


def one_line(text: str, limit: int = MAX_HEADER_VALUE) -> str:
    return visible(re.sub(r"[\r\n\t]+", " ", text), limit)


@dataclass
class Attachment:
    path: str
    filename: str
    content_type: str
    size: int


@dataclass
class Rendered:
    headers: list[tuple[str, str]] = field(default_factory=list)
    text: str = ""
    text_from_html: bool = False
    truncated: bool = False
    html: str | None = None
    attachments: list[Attachment] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def decode_text(payload: bytes, charset: str | None) -> str:
    for cs in (charset, "utf-8"):
        if not cs:
            continue
        try:
            return payload.decode(cs)
        except (LookupError, UnicodeDecodeError, ValueError):
            continue
    return payload.decode("utf-8", "replace")


_BLOCK = {"p", "div", "br", "tr", "li", "h1", "h2", "h3", "h4", "h5", "h6", "table",
          "blockquote", "pre", "hr", "section", "article", "header", "footer", "ul", "ol"}
_HIDDEN = {"script", "style", "head", "title", "template", "noscript", "iframe", "object"}


class _TextOfHtml(html.parser.HTMLParser):
    """What a person reads in an HTML mail: the text, a line per block, links spelled out;
    nothing of scripts, styles or the head."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self.hidden = 0
        self.size = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _HIDDEN:
            self.hidden += 1
        elif tag in _BLOCK:
            self.out.append("\n")
        elif tag == "img":
            alt = dict(attrs).get("alt")
            if alt:
                self.out.append(f"[{alt}]")

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in _HIDDEN:
            self.handle_starttag(tag, attrs)

    def handle_endtag(self, tag: str) -> None:
        if tag in _HIDDEN:
            self.hidden = max(0, self.hidden - 1)
        elif tag in _BLOCK:
            self.out.append("\n")

    def handle_data(self, data: str) -> None:
        if not self.hidden and self.size < MAX_TEXT:
            self.out.append(data)
            self.size += len(data)


def html_to_text(markup: str) -> str:
    parser = _TextOfHtml()
    try:
        parser.feed(markup[:MAX_HTML_PARSE])
        parser.close()
    except Exception:  # the parser is lenient; if it still gives up, keep what it had
        pass
    text = "".join(parser.out)
    text = re.sub(r"[ \t\r\f\v]+", " ", text)
    return re.sub(r"\n\s*\n+", "\n\n", text).strip()


def _filename(part: Part) -> str:
    """The part's file name; raw UTF-8 in the header (SMTPUTF8 mail) read as UTF-8.

    compat32 hands 8-bit header bytes back as U+FFFD; the header it keeps still has
    them, as an `unknown-8bit` Header, from which the name is parsed again."""
    name = part.filename or ""
    if "\ufffd" not in name:
        return name
    for field_name in ("content-disposition", "content-type"):
        value = part.raw.get(field_name)
        if not isinstance(value, email.header.Header):
            continue
        text = "".join(chunk.decode("utf-8", "replace") if isinstance(chunk, bytes) else chunk
                       for chunk, _charset in email.header.decode_header(value))
        again = email.message.Message()
        again[field_name] = text
        found = again.get_filename()
        if found:
            return decode_header_value(str(found))
    return name


def render(raw: bytes) -> Rendered:
    msg = Message(raw)
    out = Rendered()
    for name in SHOWN_HEADERS:
        for value in msg.get_all(name)[:20]:
            out.headers.append((name, one_line(decode_header_value(value))))
    try:
        parts = msg.parts
    except MessageTooComplex as exc:  # the relay refuses such mail; an old entry may be one
        out.problems.append(one_line(str(exc), 300))
        parts = []
    plain = [p for p in parts if p.is_text and p.content_type == "text/plain"]
    html_parts = [p for p in parts if p.is_text and p.content_type == "text/html"]
    if plain:
        text = "\n\n".join(decode_text(p.payload, p.charset) for p in plain)
    elif html_parts:
        text = "\n\n".join(html_to_text(decode_text(p.payload, p.charset)) for p in html_parts)
        out.text_from_html = True
    else:
        text = ""
    out.truncated = len(text) > MAX_TEXT
    out.text = visible(text, MAX_TEXT)
    if html_parts:
        markup = decode_text(html_parts[0].payload, html_parts[0].charset)
        out.html = markup[:MAX_HTML]
    shown = set(id(p) for p in plain + html_parts)
    for part in parts:
        if id(part) in shown or not part.is_attachment:
            continue
        if len(out.attachments) >= MAX_ATTACHMENTS:
            out.problems.append(f"more than {MAX_ATTACHMENTS} attachments; the rest not listed")
            break
        out.attachments.append(Attachment(part.path, one_line(_filename(part), 300),
                                          one_line(part.content_type, 100), len(part.payload)))
    out.problems += [one_line(p, 300) for p in msg.problems[:50]]
    return out


# --- in a child process, with a deadline ---------------------------------------------------
class RenderTimeout(Exception):
    pass


_context = multiprocessing.get_context("forkserver")
_context.set_forkserver_preload(["relay.web.mailview"])


def _child(conn: Connection, raw: bytes, memory: int) -> None:
    try:
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    except (OSError, ValueError):  # a seccomp filter may refuse it; the unit's MemoryMax holds
        pass
    try:
        conn.send(("ok", render(raw)))
    except MemoryError:
        conn.send(("error", "the message needs more memory than a view may use"))
    except Exception as exc:
        conn.send(("error", f"{type(exc).__name__}: {exc}"[:300]))
    finally:
        conn.close()


def render_isolated(raw: bytes, timeout: float, memory: int = 1 << 30) -> Rendered:
    """render(raw) in a child process killed after `timeout` seconds."""
    receive, send = _context.Pipe(duplex=False)
    child = _context.Process(target=_child, args=(send, raw, memory), daemon=True)
    child.start()
    send.close()
    try:
        if not receive.poll(timeout):
            raise RenderTimeout(f"the message could not be shown within {timeout:g} s")
        status, value = receive.recv()
    except EOFError:
        raise RenderTimeout("the message could not be shown (the parser died)") from None
    finally:
        receive.close()
        if child.is_alive():
            child.kill()
        child.join(5)
    if status != "ok":
        raise RenderTimeout(f"the message could not be shown: {value}")
    return value
