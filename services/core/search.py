"""What a search of the task history means: `parse` turns the text a user types into a
`Query`, which the ledger runs as an SQLite FTS5 match (`Query.fts`) and a client applies
to the tasks it holds (`Query.matches`), with the same rules on both sides.

The rules, kept simple on purpose (it is a filter box, not a query language):
- Words are separated by spaces; a task matches when it has every word (AND), each as a
  whole word of its name, id, arguments, message or result ("sales" matches
  "/home/u/sales.csv"; case and accents do not matter).
- The last word is a prefix while the user is typing it ("sal" matches "sales"); a word
  ending in `*` is a prefix anywhere ("2026*").
- "Double quotes" make a phrase: its words in that order.
- A word that is only punctuation ("/", "-") says nothing and is skipped.

`SearchSyntaxError` says what is wrong with a text (an unbalanced quote, or too long): the
API answers it as a 400 with that message.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass

MAX_QUERY_CHARS = 200
# What FTS5's unicode61 tokenizer keeps together: letters and digits (everything else,
# punctuation and spaces alike, separates tokens). "_" separates too.
_TOKEN = re.compile(r"[^\W_]+")


class SearchSyntaxError(ValueError):
    """The search text cannot be understood; the message says why, for the user."""


def tokens(text: str) -> list[str]:
    """The words of `text` as the index sees them: casefolded, accents removed."""
    folded = unicodedata.normalize("NFKD", text.casefold())
    plain = "".join(ch for ch in folded if not unicodedata.combining(ch))
    return _TOKEN.findall(plain)


@dataclass(frozen=True, slots=True)
class Term:
    """One condition: these words in a row (one word, or a phrase); the last a prefix?"""

    words: tuple[str, ...]
    prefix: bool = False

    def fts(self) -> str:
        phrase = '"' + " ".join(self.words) + '"'  # tokens hold no quote: nothing to escape
        return phrase + ("*" if self.prefix else "")

    def found_in(self, words: list[str]) -> bool:
        n = len(self.words)
        for i in range(len(words) - n + 1):
            if words[i : i + n - 1] == list(self.words[:-1]):
                last = words[i + n - 1]
                if last == self.words[-1] or (self.prefix and last.startswith(self.words[-1])):
                    return True
        return False


@dataclass(frozen=True, slots=True)
class Query:
    """A parsed search: every term must match."""

    terms: tuple[Term, ...]

    def __bool__(self) -> bool:
        return bool(self.terms)

    def fts(self) -> str:
        """The FTS5 MATCH expression (only quoted phrases: no user text is syntax)."""
        return " AND ".join(t.fts() for t in self.terms)

    def matches(self, texts: Iterable[str]) -> bool:
        """Whether a task whose searchable texts are `texts` matches (the client side)."""
        words = [w for text in texts for w in (*tokens(text), "\0")]  # "\0": no phrase spans
        return all(t.found_in(words) for t in self.terms)


def parse(text: str) -> Query:
    """The query a search text means (empty text or only punctuation: an empty query).

    Raises:
        SearchSyntaxError: an unbalanced double quote, or longer than MAX_QUERY_CHARS.
    """
    if len(text) > MAX_QUERY_CHARS:
        raise SearchSyntaxError(f"The search is longer than {MAX_QUERY_CHARS} characters.")
    if text.count('"') % 2:
        raise SearchSyntaxError('The search has an unbalanced double quote (").')
    terms: list[Term] = []
    typing = bool(text) and not text[-1].isspace() and not text.endswith('"')
    parts = text.split('"')
    for i, part in enumerate(parts):
        if i % 2:  # inside quotes: a phrase
            phrase = tuple(tokens(part))
            if phrase:
                terms.append(Term(phrase))
            continue
        for raw in part.split():
            star = raw.endswith("*")
            words = tokens(raw)
            for word in words:
                terms.append(Term((word,)))
            if star and words:
                terms[-1] = Term(terms[-1].words, prefix=True)
    if typing and terms and not parts[-1].rstrip().endswith("*") and parts[-1].strip():
        terms[-1] = Term(terms[-1].words, prefix=True)  # the word being typed
    return Query(tuple(terms))
