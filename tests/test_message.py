"""relay.message: the MIME structure split at the bytes level must give what the
standard library's parser gives (type, charset, disposition, file name and decoded
body of every leaf, in the same order), on shapes real and malformed."""

from __future__ import annotations

import email
import email.policy
import random
from email.message import EmailMessage

import pytest

from relay.message import Message, MessageTooComplex
from tests.hostile import quadratic_header


def stdlib_leaves(raw: bytes) -> list[tuple]:
    out: list[tuple] = []

    def walk(m: email.message.Message) -> None:
        if m.is_multipart():
            for sub in m.get_payload():
                walk(sub)
            return
        data = m.get_payload(decode=True)
        out.append((m.get_content_type(), m.get_content_charset(),
                    m.get_content_disposition(), m.get_filename(),
                    data if isinstance(data, bytes) else b""))
    walk(email.message_from_bytes(raw, policy=email.policy.compat32))
    return out


def ours(raw: bytes) -> list[tuple]:
    return [(p.content_type, p.charset, p.disposition, p.raw.get_filename(), p.payload)
            for p in Message(raw).parts]


def generated(rnd: random.Random, depth: int = 0) -> EmailMessage:
    msg = EmailMessage()
    kind = rnd.choice(["text", "html", "bin", "multi", "rfc822"] if depth < 3 else ["text"])
    if kind == "text":
        msg.set_content(rnd.choice(["Xin chào", "plain ascii", "Ủy ban " * 50]),
                        cte=rnd.choice(["8bit", "base64", "quoted-printable"]))
    elif kind == "html":
        msg.set_content("<p>Kính gửi</p>", subtype="html")
    elif kind == "bin":
        msg.set_content(rnd.randbytes(rnd.randint(0, 3000)), maintype="application",
                        subtype="octet-stream", filename=rnd.choice(["a.pdf", "báo cáo.docx"]))
    elif kind == "multi":
        msg.make_mixed()
        for _ in range(rnd.randint(1, 3)):
            msg.attach(generated(rnd, depth + 1))
    else:
        msg.set_content(generated(rnd, depth + 1))
    return msg


@pytest.mark.parametrize("seed", range(60))
def test_generated_messages_split_as_the_stdlib_splits_them(seed):
    msg = generated(random.Random(seed))
    msg["Subject"] = "x"
    for linesep in ("\r\n", "\n"):
        raw = msg.as_bytes(policy=msg.policy.clone(linesep=linesep))
        assert ours(raw) == stdlib_leaves(raw)


MALFORMED = [
    b"Subject: no body",
    b"\r\njust a body, no header\r\n",
    b"Content-Type: multipart/mixed\r\n\r\nno boundary parameter\r\n",
    b"Content-Type: multipart/mixed; boundary=X\r\n\r\nboundary never appears\r\n",
    b"Content-Type: multipart/mixed; boundary=X\r\n\r\n--X\r\n\r\nno close delimiter\r\n",
    b"Content-Type: multipart/mixed; boundary=X\r\n\r\npreamble\r\n--X\r\nContent-Type: "
    b"text/plain\r\n\r\none\r\n--X  \r\n\r\ntwo\r\n--X--\r\nepilogue\r\n",
    b"Content-Type: text/plain\r\nContent-Transfer-Encoding: base64\r\n\r\naGVsbG8\r\n",
    b"Content-Type: text/plain\r\nContent-Transfer-Encoding: base64\r\n\r\naGV*sbG8=\r\n",
    b"Content-Type: text/plain\r\nContent-Transfer-Encoding: base64\r\n\r\naGVsb\r\n",
    b"Content-Type: text/plain\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
    b"caf=C3=A9 =\r\nsoft break =ZZ\r\n",
    b"Content-Type: message/rfc822\r\n\r\nSubject: inner\r\n\r\ninner body\r\n",
]


@pytest.mark.parametrize("raw", MALFORMED)
def test_malformed_shapes_split_as_the_stdlib_splits_them(raw):
    assert ours(raw) == stdlib_leaves(raw)


def test_head_decodes_only_what_it_needs():
    big = EmailMessage()
    big.set_content("x")
    data = random.Random(1).randbytes(3_000_000)
    big.add_attachment(data, maintype="application", subtype="pdf", filename="a.pdf")
    [_, part] = Message(big.as_bytes()).parts
    assert part.head(65536) == data[:65536]
    assert part._payload is None  # the 3 MB were not decoded for it
    assert part.payload == data


def test_too_many_parts_or_too_deep_is_refused_not_half_read():
    many = b"Content-Type: multipart/mixed; boundary=X\r\n\r\n" + b"--X\r\n\r\nx\r\n" * 50
    with pytest.raises(MessageTooComplex):
        _ = Message(many + b"--X--\r\n", max_parts=10).parts
    deep = b"".join(b"Content-Type: multipart/mixed; boundary=B%d\r\n\r\n--B%d\r\n" % (i, i)
                    for i in range(30)) + b"\r\nx\r\n"
    with pytest.raises(MessageTooComplex):
        _ = Message(deep, max_depth=20).parts


def test_the_parameter_parser_is_linear_and_agrees_with_the_stdlibs():
    import email.message as em
    import time

    from relay.message import _parseparam

    rnd = random.Random(7)
    for _ in range(5000):
        s = "".join(rnd.choice(';"\\\\= ab') for _ in range(rnd.randint(0, 30)))
        assert _parseparam(s) == _stdlib_parseparam(s)
    assert em._parseparam is _parseparam
    t0 = time.process_time()
    Message(quadratic_header()).parts[0].raw.get_filename()
    assert time.process_time() - t0 < 2  # the stdlib's took 25-75 s


def _stdlib_parseparam(s: str) -> list[str]:
    """CPython 3.11's email.message._parseparam, quadratic, for comparison."""
    s = ";" + str(s)
    plist = []
    while s[:1] == ";":
        s = s[1:]
        end = s.find(";")
        while end > 0 and (s.count('"', 0, end) - s.count('\\"', 0, end)) % 2:
            end = s.find(";", end + 1)
        if end < 0:
            end = len(s)
        f = s[:end]
        if "=" in f:
            i = f.index("=")
            f = f[:i].strip().lower() + "=" + f[i + 1:].strip()
        plist.append(f.strip())
        s = s[end:]
    return plist
