"""The built-in provider: keyword and rule based, offline, deterministic.

classify counts keywords per label (the label's own words, the keywords given for it, and a small built-in
vocabulary for common business documents); extract finds e-mails, phone numbers, URLs, dates, money amounts,
identifiers such as invoice numbers, and ``key: value`` lines; summarize keeps the leading sentences; enrich
adds counts, keywords, found entities and, with labels, a category. It does not translate.
"""

from __future__ import annotations

import contextlib
import re
from collections import Counter
from datetime import date
from typing import Any

from temporalio.exceptions import ApplicationError

from activities.ai.provider import AiAnswer, AiJob, as_text, enriched, field_types, label_keywords
from workflows import errors

_VOCABULARY: dict[str, tuple[str, ...]] = {
    "invoice": (
        "invoice",
        "invoice number",
        "bill to",
        "amount due",
        "due date",
        "payment terms",
        "remit",
        "vat",
    ),
    "receipt": (
        "receipt",
        "paid",
        "thank you for your purchase",
        "cashier",
        "change",
        "card ending",
        "store",
    ),
    "contract": (
        "contract",
        "agreement",
        "parties",
        "party",
        "hereby",
        "whereas",
        "shall",
        "termination",
        "governing law",
        "signature",
    ),
    "purchase_order": ("purchase order", "po number", "ship to", "deliver to", "order date"),
    "complaint": ("complaint", "disappointed", "refund", "broken", "unacceptable", "not working", "damaged"),
    "question": ("how do", "how can", "what is", "could you", "can you", "?"),
    "urgent": ("urgent", "asap", "immediately", "critical", "emergency"),
    "positive": ("great", "excellent", "love", "happy", "thank you", "good"),
    "negative": ("bad", "terrible", "hate", "angry", "poor", "worst"),
}
_STOP_WORDS = frozenset(
    {
        "a",
        "an",
        "and",
        "are",
        "as",
        "at",
        "be",
        "by",
        "for",
        "from",
        "has",
        "have",
        "i",
        "in",
        "is",
        "it",
        "its",
        "of",
        "on",
        "or",
        "our",
        "that",
        "the",
        "this",
        "to",
        "was",
        "we",
        "were",
        "will",
        "with",
        "you",
        "your",
    }
)
_MONTHS = {
    name: index
    for index, names in enumerate(
        [
            ("jan", "january"),
            ("feb", "february"),
            ("mar", "march"),
            ("apr", "april"),
            ("may",),
            ("jun", "june"),
            ("jul", "july"),
            ("aug", "august"),
            ("sep", "sept", "september"),
            ("oct", "october"),
            ("nov", "november"),
            ("dec", "december"),
        ],
        start=1,
    )
    for name in names
}
_MONTH = "|".join(sorted(_MONTHS, key=len, reverse=True))
_CURRENCIES = {"$": "USD", "€": "EUR", "£": "GBP", "¥": "JPY"}
_CODES = "USD|EUR|GBP|CHF|JPY|CAD|AUD|SEK|NOK|DKK|PLN|INR"

EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
URL = re.compile(r"https?://[^\s<>\"')\]]+")
PHONE = re.compile(
    r"(?<![\w+/-])(?:\+\d{1,3}[\s.-]?)?(?:\(\d{1,4}\)[\s.-]?)?\d{2,4}(?:[\s.-]\d{2,8}){1,4}(?!\w)"
)
_ISO_DATE = re.compile(r"\b(\d{4})-(\d{1,2})-(\d{1,2})\b")
_NUMERIC_DATE = re.compile(r"\b(\d{1,2})[/.](\d{1,2})[/.](\d{4})\b")
_DAY_MONTH = re.compile(rf"\b(\d{{1,2}})(?:st|nd|rd|th)?\s+({_MONTH})\.?,?\s+(\d{{4}})\b", re.IGNORECASE)
_MONTH_DAY = re.compile(rf"\b({_MONTH})\.?\s+(\d{{1,2}})(?:st|nd|rd|th)?,?\s+(\d{{4}})\b", re.IGNORECASE)
MONEY = re.compile(
    rf"(?P<pre>[$€£¥]|\b(?:{_CODES})\b)?\s?"
    r"(?P<num>-?\d{1,3}(?:[,.']\d{3})+(?:[.,]\d{1,2})?|-?\d+(?:[.,]\d{1,2})?)"
    rf"(?:\s?(?P<post>[€$£]|\b(?:{_CODES})\b))?"
)
_KEY_VALUE = re.compile(r"^\s*([A-Za-z][\w .#/()-]{0,48}?)\s*[:=]\s*(.+?)\s*$")
_IDENTIFIER = re.compile(r"[A-Za-z0-9][A-Za-z0-9\-/_.]*\d[A-Za-z0-9\-/_]*|\d+")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[\"'(\[]?[A-Z0-9])")

_SYNONYMS = {"no": "number", "nr": "number", "num": "number", "#": "number", "amt": "amount", "tel": "phone"}
_MONEY_WORDS = frozenset(
    {"total", "amount", "price", "cost", "subtotal", "tax", "vat", "balance", "fee", "sum"}
)
_ID_WORDS = frozenset({"number", "id", "ref", "reference", "code"})


class LocalProvider:
    """Rules and regular expressions; needs no network and answers the same way every time."""

    name = "local"

    async def run(self, job: AiJob) -> AiAnswer:
        """Run the job's task on its text (see the module docstring)."""
        config = job.config
        text = as_text(config.content)
        if config.task == "classify":
            return AiAnswer(classify(text, label_keywords(config)))
        if config.task == "extract":
            return AiAnswer(extract(text, field_types(config)))
        if config.task == "summarize":
            return AiAnswer({"summary": summarize(text, config.max_sentences)})
        if config.task == "enrich":
            text = as_text(config.content, keys=False)
            added: dict[str, Any] = {
                "word_count": len(_words(text)),
                "char_count": len(text),
                "keywords": keywords(text),
                "entities": {k: v for k, v in extract(text, {})["fields"].items() if k in _ENTITY_KEYS and v},
            }
            if not isinstance(config.content, dict):
                added["normalized_text"] = " ".join(text.lower().split())
            if config.labels:
                added["category"] = classify(text, label_keywords(config))["label"]
            return AiAnswer(enriched(config.content, added))
        raise ApplicationError(
            f"the local AI provider cannot {config.task}; configure an OpenAI-compatible provider "
            "(CONVEYOR_AI_PROVIDER=openai, or provider: openai on the step)",
            type=errors.AI_UNSUPPORTED,
            non_retryable=True,
        )


def classify(text: str, labels: dict[str, list[str]]) -> dict[str, Any]:
    """``{label, confidence, scores}``: the label whose keywords occur most (None when nothing matches)."""
    lowered = text.lower()
    raw: dict[str, float] = {}
    for label, given in labels.items():
        name = label.lower().replace("_", " ").replace("-", " ")
        terms = {name: 2.0}
        for term in (*given, *_VOCABULARY.get(name.replace(" ", "_"), ())):
            terms.setdefault(term.lower(), 1.0)
        raw[label] = sum(weight * _occurrences(lowered, term) for term, weight in terms.items())
    total = sum(raw.values())
    scores = {label: round(score / total, 3) if total else 0.0 for label, score in raw.items()}
    if not total:
        return {"label": None, "confidence": 0.0, "scores": scores}
    best = max(raw, key=lambda label: raw[label])  # the first label wins a tie
    return {"label": best, "confidence": scores[best], "scores": scores}


def _occurrences(text: str, term: str) -> int:
    if not term.strip():
        return 0
    if not term[0].isalnum():
        return text.count(term)
    # Phrases count by their words, so "amount due" outweighs a stray "due"; plurals count too.
    return len(re.findall(rf"(?<!\w){re.escape(term)}(?:s|es)?(?!\w)", text)) * len(term.split())


def summarize(text: str, sentences: int) -> str:
    """The leading ``sentences`` sentences, whitespace collapsed; short lines without a full stop (headings)
    are left out."""
    lines = [line.strip() for line in text.splitlines()]
    body = [line for line in lines if line and (line[-1] in ".!?:;\"'" or len(line.split()) > 8)]
    flat = " ".join(" ".join(body or lines).split())
    return " ".join(_SENTENCE_END.split(flat)[:sentences]) if flat else ""


def keywords(text: str, top: int = 5) -> list[str]:
    """The most frequent words that are not stop words, most frequent first."""
    counts = Counter(
        w for w in _words(text.lower()) if w not in _STOP_WORDS and not w.isdigit() and len(w) > 2
    )
    return [word for word, _ in counts.most_common(top)]


def _words(text: str) -> list[str]:
    return re.findall(r"\w+", text)


# -- extraction ------------------------------------------------------------------------------------------

_ENTITY_KEYS = ("emails", "phones", "urls", "dates", "amounts")


def extract(text: str, fields: dict[str, str | None]) -> dict[str, Any]:
    """``{fields, missing}`` for the named fields, or every recognised field when none are named."""
    pairs = _key_values(text)
    if not fields:
        found: dict[str, Any] = {
            "emails": _unique(EMAIL.findall(text)),
            "phones": _phones(text),
            "urls": _unique(URL.findall(text)),
            "dates": _unique(d for d, _ in _dates(text)),
            "amounts": [a for a, _ in _amounts(text, anywhere=False)],
        }
        for name in ("invoice_number", "total", "currency"):
            found[name] = _field(name, None, text, pairs)
        for key, value in pairs.items():
            sort = _kind(key.split("_"), None)
            converted = _convert(value, sort) if sort in {"date", "money"} else None
            found.setdefault(key, value if converted is None else converted)
        return {"fields": found, "missing": []}
    values = {name: _field(name, kind, text, pairs) for name, kind in fields.items()}
    return {"fields": values, "missing": [name for name, value in values.items() if value is None]}


def _field(name: str, kind: str | None, text: str, pairs: dict[str, str]) -> Any:
    tokens = _tokens(name)
    sort = _kind(tokens, kind)
    if sort == "currency":
        amounts = _amounts(text, anywhere=False)
        return next((currency for _, currency in amounts if currency), None)
    raw = pairs.get("_".join(tokens))
    if raw is not None:
        value = _convert(raw, sort)
        if value is not None:
            return _typed(value, kind)
    lines = [line for line in text.splitlines() if tokens and all(_has_word(line, t) for t in tokens)]
    if sort == "money":
        for line in reversed(lines):  # totals come last on a document
            after = _after(line, tokens[-1])
            # An amount with a currency beats a bare number (the 20 of "VAT 20%: $25.00").
            amounts = _amounts(after, anywhere=False) or _amounts(line, anywhere=False)
            amounts = amounts or _amounts(after, anywhere=True)
            if amounts:
                return _typed(amounts[0][0], kind)
        return None
    for line in lines:
        value = _convert(_after(line, tokens[-1]), sort)
        if value is not None:
            return _typed(value, kind)
    if sort in {"email", "phone", "url", "date"}:
        value = _convert(text, sort)
        if value is not None:
            return _typed(value, kind)
    return None


def _kind(tokens: list[str], kind: str | None) -> str:
    if kind in {"email", "date"}:
        return kind
    names = set(tokens)
    if "email" in names or "mail" in names:
        return "email"
    if names & {"phone", "mobile", "fax"}:
        return "phone"
    if names & {"url", "website", "link", "site"}:
        return "url"
    if "date" in names or "day" in names:
        return "date"
    if "currency" in names:
        return "currency"
    if names & _MONEY_WORDS or kind in {"number", "integer"}:
        return "money"
    if names & _ID_WORDS:
        return "identifier"
    return "text"


def _convert(text: str, sort: str) -> Any:
    """The first value of ``sort`` in ``text``, or None."""
    if sort == "email":
        match = EMAIL.search(text)
        return match.group(0) if match else None
    if sort == "url":
        match = URL.search(text)
        return match.group(0) if match else None
    if sort == "phone":
        phones = _phones(text)
        return phones[0] if phones else None
    if sort == "date":
        dates = _dates(text)
        return dates[0][0] if dates else None
    if sort == "money":
        amounts = _amounts(text, anywhere=False) or _amounts(text, anywhere=True)
        return amounts[0][0] if amounts else None
    if sort == "identifier":
        match = _IDENTIFIER.search(text.lstrip(" .:#-=\t"))
        return match.group(0).rstrip(".") if match else None
    value = text.strip(" :=\t")
    return value or None


def _typed(value: Any, kind: str | None) -> Any:
    if kind == "integer" and isinstance(value, float):
        return round(value)
    if kind == "string" and not isinstance(value, str):
        return str(value)
    if kind == "boolean" and isinstance(value, str):
        return value.strip().lower() in {"yes", "true", "1", "y", "x"}
    if kind == "list" and not isinstance(value, list):
        return [value]
    return value


def _key_values(text: str) -> dict[str, str]:
    pairs: dict[str, str] = {}
    for line in text.splitlines():
        match = _KEY_VALUE.match(line)
        if match and not URL.match(line.strip()):
            pairs.setdefault("_".join(_tokens(match.group(1))), match.group(2))
    return pairs


def _tokens(name: str) -> list[str]:
    words = re.findall(r"[a-z0-9]+|#", name.lower())
    return [_SYNONYMS.get(word, word) for word in words]


def _has_word(line: str, token: str) -> bool:
    variants = [token, *(k for k, v in _SYNONYMS.items() if v == token)]
    return any(
        re.search(rf"(?<!\w){re.escape(v)}(?!\w)" if v.isalnum() else re.escape(v), line, re.I)
        for v in variants
    )


def _after(line: str, token: str) -> str:
    """The part of ``line`` after the last occurrence of ``token`` (or a synonym of it)."""
    variants = [token, *(k for k, v in _SYNONYMS.items() if v == token)]
    end = 0
    for variant in variants:
        for match in re.finditer(
            rf"(?<!\w){re.escape(variant)}\.?(?!\w)" if variant.isalnum() else re.escape(variant), line, re.I
        ):
            end = max(end, match.end())
    return line[end:]


def _phones(text: str) -> list[str]:
    found = []
    dates = {m.group(0) for m in _ISO_DATE.finditer(text)} | {
        m.group(0) for m in _NUMERIC_DATE.finditer(text)
    }
    for match in PHONE.finditer(text):
        candidate = match.group(0).strip()
        digits = sum(c.isdigit() for c in candidate)
        if 7 <= digits <= 15 and candidate not in dates and not _ISO_DATE.search(candidate):
            found.append(candidate)
    return _unique(found)


def _dates(text: str) -> list[tuple[str, int]]:
    """Dates in ``text`` as ISO strings (as written when day and month are ambiguous), by position."""
    found: list[tuple[str, int]] = []
    for match in _ISO_DATE.finditer(text):
        _add_date(found, int(match.group(1)), int(match.group(2)), int(match.group(3)), match)
    for match in _NUMERIC_DATE.finditer(text):
        first, second, year = int(match.group(1)), int(match.group(2)), int(match.group(3))
        if first > 12:
            _add_date(found, year, second, first, match)
        elif second > 12:
            _add_date(found, year, first, second, match)
        else:
            found.append((match.group(0), match.start()))
    for match in _DAY_MONTH.finditer(text):
        month = _MONTHS[match.group(2).lower()]
        _add_date(found, int(match.group(3)), month, int(match.group(1)), match)
    for match in _MONTH_DAY.finditer(text):
        month = _MONTHS[match.group(1).lower()]
        _add_date(found, int(match.group(3)), month, int(match.group(2)), match)
    return sorted(found, key=lambda item: item[1])


def _add_date(found: list[tuple[str, int]], year: int, month: int, day: int, match: re.Match[str]) -> None:
    with contextlib.suppress(ValueError):  # not a real date (31 February)
        found.append((date(year, month, day).isoformat(), match.start()))


def _amounts(text: str, *, anywhere: bool) -> list[tuple[float, str | None]]:
    """Money amounts with their currency code; bare numbers count only when ``anywhere`` (a known line)."""
    found = []
    for match in MONEY.finditer(text):
        symbol = match.group("pre") or match.group("post")
        if symbol is None and not anywhere:
            continue
        if symbol is None and _inside_date(text, match):
            continue
        number = _number(match.group("num"))
        if number is not None:
            found.append((number, _CURRENCIES.get(symbol, symbol) if symbol else None))
    return found


def _inside_date(text: str, match: re.Match[str]) -> bool:
    for pattern in (_ISO_DATE, _NUMERIC_DATE, _DAY_MONTH, _MONTH_DAY):
        for found in pattern.finditer(text):
            if found.start() <= match.start("num") < found.end():
                return True
    return False


def _number(raw: str) -> float | None:
    digits = raw.replace(" ", "").replace("'", "")
    last_dot, last_comma = digits.rfind("."), digits.rfind(",")
    if last_dot >= 0 and last_comma >= 0:
        decimal = "." if last_dot > last_comma else ","
    elif last_comma >= 0:
        decimal = "," if len(digits) - last_comma - 1 in {1, 2} else ""
    elif last_dot >= 0:
        decimal = "." if len(digits) - last_dot - 1 in {1, 2} or digits.count(".") == 1 else ""
    else:
        decimal = ""
    thousands = {",", "."} - {decimal}
    cleaned = "".join(c for c in digits if c not in thousands)
    try:
        return float(cleaned.replace(",", ".")) if decimal else float(cleaned)
    except ValueError:
        return None


def _unique(values: Any) -> list[Any]:
    return list(dict.fromkeys(values))
