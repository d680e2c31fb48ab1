"""The semantic cache's index: the nearest earlier request by embedding, and the guards that keep
a near neighbour that means something else from answering.

What is embedded (`semantic_text`): the last user turn, or the whole conversation as
role-tagged lines, as the model's `semantic.text` says.

The guards (`guard_terms`): an embedding puts "turn the alarm on" right beside "turn the alarm
off", and "transfer 100 to Bob" beside "transfer 100 to Alice". So a semantic hit also needs both
texts to carry the same guard terms, in the same order (so "from Oslo to Paris" and "to Oslo
from Paris", or "is 3 more than 5" and "is 5 more than 3", differ):

- numbers, normalised (1,000 = 1000, 2.50 = 2.5, "five" = 5, "first" = 1st), with the unit
  written on or right after them ("5km" = "5 km" = "5 kilometres", "10%" = "10 percent",
  "$5" = "5 dollars" = "5 usd"); any other token holding a digit, whole ("gpt-4o", "v2");
- units and currencies standing alone ("convert miles to km");
- negations: not and every n't form ("don't" = "do not"), no, never, none, nothing, nobody,
  nowhere, neither, nor, without, unless, except;
- polar and ordering words, each a term of its own: on/off, yes/no, true/false,
  enable/disable, increase/decrease, before/after, open/close, start/stop, min/max,
  above/below, over/under, more/less, most/least, up/down, add/remove, allow/deny,
  buy/sell, import/export, lock/unlock, first/last/next/previous, left/right, today/tomorrow/
  yesterday, weekdays and months, "from" and "or" (so "from A to B" and "A or B" keep their
  sense), and a few more (the WORDS table below);
- names: capitalised words not at the start of a sentence (the pronoun I aside), compared
  without case. A name that starts a sentence, or is written in lower case, is not one: it is
  left to the similarity threshold.

The guards are deliberately coarse: a pair they keep apart that meant the same is only a miss
(the call goes to the provider), while a pair they let through that meant something else is a
wrong answer.

The index (`SemanticIndex`): in this process, at most `max_entries` entries (the oldest added
goes first), each pointing at the exact cache entry (its key) that answers it. Entries are kept
apart by scope, by the settings that must match exactly (`shape`), by their guard terms and by
their vectors' length, in a contiguous float32 matrix each; a lookup is one matrix-vector
product over its own group (numpy brute force: exact, no recall loss; the choice and its
figures are in benchmarks/README.md, "Semantic cache index"). About max_entries x dims x 4
bytes, at most twice that while groups grow: 10,000 entries of 1,536 dimensions, 61 MB.

Across replicas: the index is per process and each replica learns its own. The entries it points
to may live in Redis, shared, so an exact repeat hits on every replica, but a paraphrase hits
only on a replica that has itself stored (or looked up and then stored) a near request since it
started; elsewhere it misses semantically, goes to the provider, and that replica then learns
it. A pointer to an entry that expired or was evicted from the store is removed when a lookup
finds it gone. A restart starts empty.

Plain Python and numpy, not thread-safe (the event loop's thread only).
"""

from __future__ import annotations

import collections
import dataclasses
import re
import unicodedata
from collections.abc import Iterable, Sequence
from decimal import Decimal, InvalidOperation

import numpy as np
import numpy.typing as npt

from hapaxd.core.types import Message, Role

Guards = tuple[str, ...]  # guard terms in the order they appear
Vector = npt.NDArray[np.float32]

# A similarity computed in float32 may fall a few ulps short of 1.0 for identical vectors.
_TOLERANCE = 1e-6


def semantic_text(messages: Sequence[Message], mode: str) -> str:
    """The text a request is embedded by: its last user turn ("last_user"), or its whole
    conversation ("conversation"), one `role: text` line per turn, an assistant's tool calls as
    `assistant: call name(arguments)` lines. Empty when there is no such turn."""
    if mode == "last_user":
        last = next((m for m in reversed(messages) if m.role is Role.USER), None)
        return "" if last is None else last.content
    if mode != "conversation":
        raise ValueError(f"unknown semantic text mode {mode!r}")
    lines: list[str] = []
    for message in messages:
        if message.content or not message.tool_calls:
            lines.append(f"{message.role.value}: {message.content}")
        lines.extend(
            f"{message.role.value}: call {c.name}({c.arguments})" for c in message.tool_calls
        )
    return "\n".join(lines)


# --- guard terms ---------------------------------------------------------------------------------


def _table(groups: Iterable[str]) -> dict[str, str]:
    """`"canonical other other"` per group -> {each word: canonical}."""
    table: dict[str, str] = {}
    for group in groups:
        words = group.split()
        for word in words:
            table[word] = words[0]
    return table


# Units and currencies -> one spelling. After a number any of them counts ("5 m", "5 s", "3 pm");
# standing alone only those not in _AFTER_NUMBER_ONLY, which are also ordinary words or letters.
UNITS = _table(
    [
        "km kms kilometer kilometers kilometre kilometres",
        "m meter meters metre metres",
        "cm centimeter centimeters centimetre centimetres",
        "mm millimeter millimeters millimetre millimetres",
        "mi mile miles",
        "ft foot feet",
        "in inch inches",
        "yd yard yards",
        "kg kgs kilo kilos kilogram kilograms kilogramme kilogrammes",
        "g gram grams gramme grammes",
        "mg milligram milligrams",
        "lb lbs",
        "pound pounds",  # mass or money: its own term
        "oz ounce ounces",
        "t ton tons tonne tonnes",
        "l liter liters litre litres",
        "ml milliliter milliliters millilitre millilitres",
        "gal gallon gallons",
        "cup cups",
        "tsp teaspoon teaspoons",
        "tbsp tablespoon tablespoons",
        "deg degree degrees",
        "c celsius centigrade",
        "f fahrenheit",
        "k kelvin",
        "% percent pct percentage",
        "ms millisecond milliseconds",
        "s sec secs second seconds",
        "min mins minute minutes",
        "h hr hrs hour hours",
        "day days",
        "week weeks wk wks",
        "month months",
        "year years yr yrs",
        "am a.m",
        "pm p.m",
        "b byte bytes",
        "kb kilobyte kilobytes",
        "mb megabyte megabytes",
        "gb gigabyte gigabytes",
        "tb terabyte terabytes",
        "bit bits",
        "w watt watts",
        "kw kilowatt kilowatts",
        "kwh",
        "v volt volts",
        "hz hertz",
        "khz",
        "mhz",
        "ghz",
        "mph",
        "kph kmh",
        "knot knots",
        "cal calorie calories",
        "kcal",
        "px pixel pixels",
        "usd $ dollar dollars buck bucks",
        "eur € euro euros",
        "gbp £ sterling",
        "jpy ¥ yen",
        "cent cents",
        "chf franc francs",
        "inr ₹ rupee rupees",
        "cny rmb yuan",
        "btc bitcoin bitcoins",
        "eth ether",
        "cad",
        "aud",
    ]
)
_AFTER_NUMBER_ONLY = frozenset(
    "m in g t l c f k s sec secs second min mins h b w v am a.m pm p.m cup cups bit bits "
    "day days week weeks month months year years".split()
)
_CURRENCY_SYMBOLS = frozenset("$€£¥₹")
_ORDINAL_SUFFIXES = frozenset({"st", "nd", "rd", "th"})

NUMBER_WORDS = {
    **{
        word: str(value)
        for value, word in enumerate(
            "zero one two three four five six seven eight nine ten eleven twelve thirteen "
            "fourteen fifteen sixteen seventeen eighteen nineteen twenty".split()
        )
    },
    **{
        word: str(10 * tens)
        for tens, word in enumerate("thirty forty fifty sixty seventy eighty ninety".split(), 3)
    },
    "hundred": "100",
    "thousand": "1000",
    "million": "1000000",
    "billion": "1000000000",
    "trillion": "1000000000000",
    "dozen": "12",
    "half": "0.5",
    "quarter": "0.25",
    "double": "2x",
    "twice": "2x",
    "triple": "3x",
    "thrice": "3x",
    **{
        word: f"{value}{suffix}"
        for value, word, suffix in zip(
            range(1, 11),
            "first second third fourth fifth sixth seventh eighth ninth tenth".split(),
            ("st", "nd", "rd", *("th",) * 7),
            strict=True,
        )
    },
}

_NOT = frozenset(
    "not cannot dont doesnt didnt isnt arent wasnt werent cant couldnt wont wouldnt shouldnt "
    "hasnt havent hadnt mustnt neednt aint".split()
)

# Words whose change flips a request's sense while barely moving its embedding: each group is
# one term (its first word), and every group a different term.
WORDS = _table(
    [
        *"no never none nothing nobody nowhere neither nor without unless except".split(),
        *"on off yes true false or from".split(),
        "enable enables enabled enabling activate activates activated",
        "disable disables disabled disabling deactivate deactivates deactivated",
        "increase increases increased increasing raise raises raised",
        "decrease decreases decreased decreasing reduce reduces reduced",
        "before earlier",
        "after later",
        "open opens opened opening",
        "close closes closed closing",
        "start starts started starting begin begins began",
        "stop stops stopped stopping end ends ended",
        "max maximum maximal maximize maximise",
        "min minimum minimal minimize minimise",
        "above",
        "below",
        "over",
        "under",
        "more",
        "less fewer",
        "most",
        "least",
        "up",
        "down",
        "higher high highest",
        "lower low lowest",
        "bigger big biggest larger large largest greater greatest",
        "smaller small smallest",
        "add adds added adding",
        "remove removes removed removing delete deletes deleted deleting",
        "allow allows allowed allowing permit permits permitted",
        "deny denies denied denying block blocks blocked blocking forbid forbids forbidden",
        "accept accepts accepted accepting",
        "reject rejects rejected rejecting",
        "buy buys bought buying purchase purchases purchased",
        "sell sells sold selling",
        "import imports imported importing",
        "export exports exported exporting",
        "upload uploads uploaded uploading",
        "download downloads downloaded downloading",
        "encrypt encrypts encrypted encrypting",
        "decrypt decrypts decrypted decrypting",
        "lock locks locked locking",
        "unlock unlocks unlocked unlocking",
        "include includes included including",
        "exclude excludes excluded excluding",
        "win wins won winning",
        "lose loses lost losing",
        "last latest final",
        "next following",
        "previous prev preceding",
        "left",
        "right",
        "north",
        "south",
        "east",
        "west",
        "ascending asc",
        "descending desc",
        "positive",
        "negative",
        "plus",
        "minus",
        "always",
        "all every",
        "some",
        "only",
        "same",
        "different",
        "correct",
        "incorrect wrong",
        "valid",
        "invalid",
        "safe",
        "unsafe",
        "legal",
        "illegal",
        "possible",
        "impossible",
        "likely",
        "unlikely",
        "male",
        "female",
        "input",
        "output",
        "hot",
        "cold",
        "today",
        "tomorrow",
        "yesterday",
        "tonight",
        "now",
        "past",
        "future",
        *"monday tuesday wednesday thursday friday saturday sunday".split(),
        # May is also a verb: only capitalised, and so only as a name (below).
        *"january february march april june july august september october november".split(),
        "december",
    ]
)
_PRONOUN_I = frozenset({"i", "i'm", "i'd", "i've", "i'll"})
# A full stop after these does not end a sentence ("Dr. Smith" keeps Smith a name).
_ABBREVIATIONS = frozenset("mr mrs ms dr prof st jr sr vs etc approx e.g i.e".split())

# A compound: letters and digits joined by - . / : , ' (1,000.5, 10:30, gpt-4o, don't, on/off),
# with a leading minus on a number; or a symbol; or what ends a sentence.
_TOKEN = re.compile(
    r"(?P<compound>(?:(?<![\w.,])[-\u2212](?=\d))?\w+(?:['\-./:,]\w+)*)"
    r"|(?P<symbol>[$€£¥₹%])"
    r"|(?P<stop>[.!?;:\n…]+)"
)
# A number with, maybe, letters written on it (5km, 3p.m, 1st, 4o).
_NUMBER = re.compile(r"(?P<num>[-\u2212]?\d+(?:[.,:]\d+)*)(?P<suffix>[^\W\d_]+(?:\.[^\W\d_])?)?")
_WHOLE_WORDS = frozenset({"a.m", "p.m", "e.g", "i.e"})
_WORD_SPLIT = re.compile(r"[-./:,_]")
_DEGREES = re.compile(r"°\s*([cCfF])\b")
_THOUSANDS = re.compile(r"\d{1,3}(?:,\d{3})+(?:\.\d+)?")


@dataclasses.dataclass(frozen=True, slots=True)
class _Token:
    kind: str  # num, ident (holds a digit: whole), word, symbol, stop
    text: str
    suffix: str = ""


def _tokens(text: str) -> list[_Token]:
    text = unicodedata.normalize("NFKC", text).replace("\u2019", "'").replace("\u2018", "'")
    # Degrees as words: "5°C" = "5 celsius", "90°" = "90 degrees".
    text = _DEGREES.sub(lambda m: " celsius" if m[1] in "cC" else " fahrenheit", text)
    text = text.replace("°", " degrees ")
    tokens = []
    for match in _TOKEN.finditer(text):
        compound = match["compound"]
        if compound is None:
            kind = "symbol" if match["symbol"] is not None else "stop"
            tokens.append(_Token(kind, match[0]))
        elif number := _NUMBER.fullmatch(compound):
            tokens.append(_Token("num", number["num"], number["suffix"] or ""))
        elif any(c.isdigit() for c in compound):
            tokens.append(_Token("ident", compound))
        elif compound.casefold() in _WHOLE_WORDS:
            tokens.append(_Token("word", compound))
        else:
            tokens.extend(_Token("word", w) for w in _WORD_SPLIT.split(compound) if w)
    return tokens


def _number(text: str) -> str:
    """A number written one way: no thousands separators, leading zeros or trailing decimal
    zeros; a minus kept. Anything else (a time, a European decimal) as written."""
    text = text.replace("\u2212", "-")
    if _THOUSANDS.fullmatch(text.lstrip("-")):
        text = text.replace(",", "")
    try:
        value = Decimal(text)
    except InvalidOperation:
        return text
    normal = format(value.normalize(), "f")
    return "0" if normal == "-0" else normal


def _unit(word: str, after_number: bool) -> str | None:
    unit = UNITS.get(word.casefold())
    if unit is None or (not after_number and word.casefold() in _AFTER_NUMBER_ONLY):
        return None
    return unit


def guard_terms(text: str) -> Guards:
    """The terms two texts must share, in the same order, for one to answer the other
    semantically: numbers with their units, units, negations, polar words and names (see the
    module's docstring). Deterministic; empty for a text with none of them."""
    tokens = _tokens(text)
    terms: list[str] = []
    start = True  # at the start of a sentence
    previous = ""
    i = 0
    while i < len(tokens):
        token = tokens[i]
        following = tokens[i + 1] if i + 1 < len(tokens) else None
        i += 1
        if token.kind == "stop":
            if not (token.text == "." and previous in _ABBREVIATIONS):
                start = True
            continue
        previous = token.text.casefold()
        was_start, start = start, False
        value: str | None = None
        unit: str | None = None
        if token.kind == "symbol":
            if token.text in _CURRENCY_SYMBOLS and following is not None:
                if following.kind == "num" and not following.suffix:
                    value, unit = _number(following.text), UNITS[token.text]
                    i += 1
                elif following.kind == "word" and following.text.casefold() in NUMBER_WORDS:
                    value, unit = NUMBER_WORDS[following.text.casefold()], UNITS[token.text]
                    i += 1
            if value is None:
                terms.append(UNITS[token.text])
                continue
        elif token.kind == "num":
            value = _number(token.text)
            if token.suffix:
                suffix = token.suffix.casefold()
                unit = _unit(suffix, after_number=True)
                if unit is None:
                    # An ordinal (1st), or an identifier with a digit in it (4o, v2): whole.
                    whole = (token.text + token.suffix).casefold()
                    terms.append(value + suffix if suffix in _ORDINAL_SUFFIXES else whole)
                    continue
        elif token.kind == "ident":
            terms.append(token.text.casefold())
            continue
        else:
            word = token.text.casefold()
            if word in NUMBER_WORDS:
                value = NUMBER_WORDS[word]
                if not value[-1].isdigit():  # an ordinal or a multiple: no unit
                    terms.append(value)
                    continue
            elif word in _NOT or word.endswith("n't"):
                terms.append("not")
                continue
            elif word in WORDS:
                terms.append(WORDS[word])
                continue
            elif (unit := _unit(word, after_number=False)) is not None:
                terms.append(unit)
                continue
            elif token.text[0].isupper() and not was_start and word not in _PRONOUN_I:
                terms.append(word.removesuffix("'s"))
                continue
            else:
                continue
        # A number: with the unit right after it, if there is one.
        if unit is None and i < len(tokens):
            unit, taken = _unit_after(tokens, i)
            i += taken
        terms.append(value if unit is None else f"{value} {unit}")
    return tuple(terms)


def _unit_after(tokens: list[_Token], i: int) -> tuple[str | None, int]:
    """The unit that tokens[i:] start with, and how many tokens it takes."""
    token = tokens[i]
    if token.kind == "symbol":
        return UNITS[token.text], 1
    if token.kind != "word":
        return None, 0
    word = token.text.casefold()
    after = tokens[i + 1].text.casefold() if i + 1 < len(tokens) else ""
    if word == "per" and after == "cent":
        return "%", 2
    unit = _unit(word, after_number=True)
    if unit == "deg" and UNITS.get(after) in ("c", "f", "k"):
        return UNITS[after], 2  # "20 degrees celsius" = "20°C" = "20 celsius"
    return (unit, 1) if unit is not None else (None, 0)


# --- the index -----------------------------------------------------------------------------------


@dataclasses.dataclass(slots=True, eq=False)
class _Entry:
    key: str
    group: _Group
    row: int = -1


class _Group:
    """The entries of one (scope, shape, guards, dims): their unit vectors, one matrix row each,
    rows 0..len-1 in use; capacity doubles as it fills (up to the index's max_entries) and halves
    when three quarters empty."""

    __slots__ = ("entries", "limit", "matrix", "name")

    def __init__(self, name: tuple[str, str, Guards, int], limit: int) -> None:
        self.name = name
        self.limit = limit  # never more rows than the index holds entries
        self.matrix: Vector = np.empty((1, name[3]), dtype=np.float32)
        self.entries: list[_Entry] = []

    def append(self, entry: _Entry, unit: Vector) -> None:
        count = len(self.entries)
        if count == len(self.matrix):
            self._resize(min(2 * count, self.limit))
        self.matrix[count] = unit
        entry.row = count
        self.entries.append(entry)

    def delete(self, entry: _Entry) -> None:
        last = self.entries.pop()
        if last is not entry:  # the last row fills the hole
            self.matrix[entry.row] = self.matrix[last.row]
            last.row = entry.row
            self.entries[entry.row] = last
        count = len(self.entries)
        if count and 4 * count <= len(self.matrix):
            self._resize(2 * count)

    def _resize(self, capacity: int) -> None:
        matrix = np.empty((capacity, self.matrix.shape[1]), dtype=np.float32)
        count = len(self.entries)
        matrix[:count] = self.matrix[:count]
        self.matrix = matrix

    def nearest(self, unit: Vector) -> tuple[_Entry, float]:
        similarities = self.matrix[: len(self.entries)] @ unit
        best = int(np.argmax(similarities))
        return self.entries[best], float(similarities[best])


def _unit_vector(vector: Sequence[float]) -> Vector | None:
    """`vector` scaled to length 1, as float32; None when it cannot be (empty, zero, not finite)."""
    array = np.asarray(vector, dtype=np.float32)
    if array.ndim != 1 or not array.size:
        return None
    norm = float(np.linalg.norm(array.astype(np.float64)))
    if not np.isfinite(norm) or norm == 0.0:
        return None
    unit: Vector = (array / np.float32(norm)).astype(np.float32, copy=False)
    return unit


class SemanticIndex:
    """Request embeddings in this process, each pointing at the exact cache entry (its key)
    that answers it; at most `max_entries`, the oldest added evicted first.

    Only entries with the same scope, the same shape (the settings that must match exactly),
    the same guard terms and vectors of the same length are ever compared. Vectors are scaled to
    length 1 (the similarity is the cosine); one that cannot be (zero, not finite) is not stored
    and finds nothing."""

    def __init__(self, max_entries: int) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self.max_entries = max_entries
        self._entries: collections.OrderedDict[str, _Entry] = collections.OrderedDict()
        self._groups: dict[tuple[str, str, Guards, int], _Group] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def add(
        self, scope: str, shape: str, vector: Sequence[float], guards: Guards, key: str
    ) -> None:
        """Store `vector` pointing at `key` (replacing what `key` had), evicting the oldest entry
        when full."""
        unit = _unit_vector(vector)
        self.remove(key)
        if unit is None:
            return
        while len(self._entries) >= self.max_entries:
            self.remove(next(iter(self._entries)))
        name = (scope, shape, tuple(guards), len(unit))
        group = self._groups.get(name)
        if group is None:
            group = self._groups[name] = _Group(name, self.max_entries)
        entry = _Entry(key, group)
        group.append(entry, unit)
        self._entries[key] = entry

    def nearest(
        self, scope: str, shape: str, vector: Sequence[float], guards: Guards, threshold: float
    ) -> tuple[str, float] | None:
        """The key and cosine similarity of the nearest entry with the same scope, shape and
        guard terms, if its similarity is at least `threshold`; else None."""
        unit = _unit_vector(vector)
        if unit is None:
            return None
        group = self._groups.get((scope, shape, tuple(guards), len(unit)))
        if group is None:
            return None
        entry, similarity = group.nearest(unit)
        if similarity < threshold - _TOLERANCE:
            return None
        return entry.key, min(1.0, similarity)

    def remove(self, key: str) -> None:
        """Forget the entry pointing at `key`, if there is one."""
        entry = self._entries.pop(key, None)
        if entry is None:
            return
        group = entry.group
        group.delete(entry)
        if not group.entries:
            del self._groups[group.name]
