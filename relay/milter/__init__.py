"""Milter front: the same engine inside an existing Postfix (`smtpd_milters`).

Postfix opens one milter connection per SMTP session and reports each command;
we answer each with continue or with our bilingual reply (SMFIR_REPLYCODE), and
at end of message with the header and body edits that `tag` and `convert` made.

Milter protocol version 6 with option negotiation. `kilter.protocol` is the
codec for packet contents (message classes, packing); the rest is ours, for
reasons found reading and trying it against Postfix 3.7:

- framing: a packet length is checked (1..MAX_PACKET) before its bytes are read,
  so a bogus length neither stalls a session nor grows a buffer (kilter's
  `Message.unpack` mis-frames a zero length);
- Connect and Macro are decoded here: kilter decodes the client hostname as IDNA
  and macro values as ASCII and raises on anything else (a PTR name such as
  `xn--abc.example`, a UTF-8 SASL login), which would refuse real clients;
- the session is a plain loop with one answer per event: kilter's
  `FilterProtocol` table has no SMFIC_QUIT_NC and forbids answers Postfix takes.

Anything that does not decode closes that connection (Postfix then applies
`milter_default_action`); the server keeps serving the others.
"""

from relay.milter.codec import MalformedPacket, message_edits, pack
from relay.milter.server import MilterServer
from relay.milter.session import MilterSession

__all__ = ["MalformedPacket", "MilterServer", "MilterSession", "message_edits", "pack"]
