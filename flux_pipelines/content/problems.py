"""What is wrong with a content file or package, classified by a rule of the one catalogue.

Every problem carries a ``content.*`` rule (``model.CONTENT_RULES``) or, for a path that is
not a plain file (a link, a FIFO, a hard link), the ``delivery.*`` rule confinement raised
(``model.DELIVERY_RULES``), and a reason naming the file and what to do. ``load.py`` writes
fatal ones to the dataset's quarantine and warnings to its warnings table, in the same
columns row violations use, so agency reports show them beside the rows.
"""

from __future__ import annotations

from dataclasses import dataclass

from flux_pipelines.contracts.model import CONTENT_RULES, DELIVERY_RULES, Severity

# The only content rule under which the file is still stored (its facts came from the bytes).
WARNING_RULES = frozenset({"content.audio_header"})
MAX_SHOWN = 300  # characters of an agency-written value repeated in a reason


def shown(value: str) -> str:
    """An agency-written path or value as it can be printed: escaped, bounded."""
    text = value.encode("unicode_escape").decode("ascii")
    return text if len(text) <= MAX_SHOWN else text[: MAX_SHOWN - 3] + "..."


@dataclass(frozen=True)
class Problem:
    """One classified problem: a file (or a record's link) and why it is not stored."""

    rule_id: str
    file: str  # as seen from the day folder (``content/data/a.jpg``); a record's link as written
    reason: str  # names the file, says what was found and what to do
    value: str | None = None  # the value provided (declared type, manifest checksum, link)
    record_key: str | None = None  # the record it concerns, when one is known
    sha256: str = ""  # the file's sha256, when it could be read

    @property
    def severity(self) -> Severity:
        return "warning" if self.rule_id in WARNING_RULES else "fatal"

    @property
    def expected(self) -> str:
        """The rule's expected value, from the catalogue (agencies see the same words)."""
        words = CONTENT_RULES.get(self.rule_id) or DELIVERY_RULES.get(self.rule_id)
        return words[1] if words else "an acceptable content file"

    def message(self, agency: str, dataset: str) -> str:
        """The reason (which names the file) prefixed with whose delivery it is."""
        return f"{agency}/{dataset}: {self.reason}"
