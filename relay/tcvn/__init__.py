"""Vietnamese text per TCVN 6909:2001: find legacy encodings and convert to UTF-8 NFC.

`inspect(bytes, charset)` examines a text part or header word; `inspect_text(str)`
examines text that is already Unicode. Both return a `Detection` whose `.text` is
the Unicode (NFC) form. See `detect.py` for the method.
"""

from relay.tcvn.detect import CANDIDATES, Detection, inspect, inspect_text
from relay.tcvn.markup import legacy_fonts, replace_fonts
from relay.tcvn.syllable import is_syllable

__all__ = ["CANDIDATES", "Detection", "inspect", "inspect_text", "is_syllable",
           "legacy_fonts", "replace_fonts"]
