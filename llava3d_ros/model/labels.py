"""A short label for each box of an answer: what the box is, in the request's or the answer's words.

Three rules, by task (documented with ``GroundedObject.label`` in docs/interfaces.md):

- ``ground``: the description that was grounded, i.e. the request's question without the
  grounding template's words (:data:`prompts.GROUND_ASK`), quotes and end punctuation.
- ``caption``: the object the caption names: its first noun phrase, after a naming opener
  such as "This is a" or "The object is a" (:func:`caption_label`).
- anything else: the few words just before the box's ``[`` in the same clause
  (:func:`label_before`).

When the ground or caption rule finds no words, the last rule applies; a label may be "" (none).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from llava3d_ros.model.prompts import GROUND_ASK

MAX_WORDS = 4  # a label keeps at most the last 4 words of its noun phrase (the head noun is last)

_WORD = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9'-]|\.(?=\d))*")  # "chair's", "1.5", "x-ray"
_QUOTES = "\"'“”‘’`"
# the template sentences, whole or one by one, wherever a client pasted them
_TEMPLATE = re.compile(
    "|".join(
        re.escape(s)
        for s in [GROUND_ASK, *(t.strip() for t in re.findall(r"[^?.]+[?.]", GROUND_ASK))]
    ),
    re.IGNORECASE,
)
# where a clause ends, looking back from a bracket: a sentence end, a line, a box, a clause mark
_CLAUSE_END = re.compile(r"[.!?](?=\s|$)|[\n\]\[,;:()]")
# a caption's naming opener ("This is a", "The object appears to be the", "There is an")
_NAMING = re.compile(
    r"^\s*(?:(?:this|that|it|there|here)|(?:the|this)\s+(?:object|item|thing))\s+"
    r"(?:is|was|appears\s+to\s+be|seems\s+to\s+be|looks\s+like)\s+",
    re.IGNORECASE,
)


def _wordset(words: str) -> frozenset[str]:
    return frozenset(words.split())


# words that open a noun phrase but are not part of the label
_LEADING = _wordset(
    "a an the this that these those some one and or also then there here it is are "
    "its their his her our your"
)
# words that end the text before a box without naming anything ("The chair is located at")
_TRAILING = _wordset(
    "a an the at is are was were be located positioned placed situated found lies lie sits "
    "sit stands stand in on with its their position coordinates coordinate location box "
    "bounding here there of as by which that"
)
# words where a caption's first noun phrase ends ("a chair with ...", "a lamp standing ...")
_NP_END = _wordset(
    "with that which who whose is are was were has have on in at near next by under above "
    "below behind beside besides between against to from for into onto over along across "
    "and or but placed located positioned situated standing sitting lying hanging leaning "
    "facing made used"
)


def grounding_label(question: str) -> str:
    """The grounded description: the question without template words, quotes or end punctuation."""
    text = _TEMPLATE.sub(" ", question)
    text = " ".join(text.split()).strip(_QUOTES + " ").rstrip(".?!").strip(_QUOTES + " ")
    return text


def caption_label(text: str) -> str:
    """The object a caption names: the first noun phrase of its first clause, after a naming
    opener ("This is a wooden chair with ..." → "wooden chair")."""
    first = _CLAUSE_END.split(text, maxsplit=1)[0]
    first = _NAMING.sub("", first, count=1)
    words = _WORD.findall(first)
    while words and words[0].lower() in _LEADING:
        words.pop(0)
    for i, w in enumerate(words):
        if w.lower() in _NP_END:
            words = words[:i]
            break
    return " ".join(words[-MAX_WORDS:])


def label_before(text: str, start: int) -> str:
    """The words just before ``text[start]`` (a box's ``[``) in the same clause, without the
    words that only place it: "... and a red chair is located at [" → "red chair"."""
    head = text[:start].rstrip().rstrip(":,;=-").rstrip()  # "The lamp: [" names the lamp
    ends = list(_CLAUSE_END.finditer(head))
    if ends:
        head = head[ends[-1].end() :]
    words = _WORD.findall(head)
    while words and words[-1].lower() in _TRAILING:
        words.pop()
    words = words[-MAX_WORDS:]
    while words and words[0].lower() in _LEADING:
        words.pop(0)
    return " ".join(words)


def box_labels(task: str, question: str, text: str, spans: Sequence[tuple[int, int]]) -> list[str]:
    """One label per box (``spans``: each box's bracket group in ``text``), by the rules above."""
    if task == "ground":
        shared = grounding_label(question)
    elif task == "caption":
        shared = caption_label(text)
    else:
        shared = ""
    return [shared or label_before(text, start) for start, _ in spans]
