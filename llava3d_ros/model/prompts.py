"""The llava_v1 prompt, task templates, sentinel tokenisation and the context budget."""

from __future__ import annotations

import re

from llava3d_ros.answer import QueryError, ResultCode
from llava3d_ros.model.tokenizer import SpTokenizer

IMAGE_TOKEN = "<image>"
BOX_TOKEN = "<boxes>"
IMAGE_TOKEN_INDEX = -200
BOX_TOKEN_INDEX = -300
SYSTEM = (
    "A chat between a curious human and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the human's questions."
)
TASKS = ("qa", "caption", "ground")
# what a grounding query adds after the quoted description (model/labels.py strips it again)
GROUND_ASK = "Which object best matches the given description? Please provide its coordinates."
_SENTINELS = re.compile(r"(<image>|<boxes>)")


def click_phrase(n_clicks: int) -> str:
    """The reference wording that introduces click points, one ``<boxes>`` per click."""
    if n_clicks == 1:
        return f"The related object is located at {BOX_TOKEN}."
    return f"The related objects are located at {', '.join([BOX_TOKEN] * n_clicks)}."


def task_query(task: str, question: str, n_clicks: int) -> str:
    """The user turn for a task (qa | caption | ground; "" = qa), with a ``<boxes>`` per click."""
    task = task or "qa"
    if task not in TASKS:
        raise QueryError(ResultCode.BAD_REQUEST, f"unknown task {task!r}; expected one of {TASKS}")
    if IMAGE_TOKEN in question:
        raise QueryError(ResultCode.BAD_REQUEST, f"the question must not contain {IMAGE_TOKEN}")
    question = question.strip()
    inline = question.count(BOX_TOKEN)
    if inline and inline != n_clicks:
        raise QueryError(
            ResultCode.BAD_REQUEST,
            f"the question holds {inline} {BOX_TOKEN} placeholders but {n_clicks} click points were given",
        )
    if task == "ground":
        if not question:
            raise QueryError(ResultCode.BAD_REQUEST, "grounding needs a description")
        if n_clicks:
            raise QueryError(ResultCode.BAD_REQUEST, "grounding takes no click points")
        return f'"{question}" {GROUND_ASK}'
    if task == "caption":
        if n_clicks < 1:
            raise QueryError(
                ResultCode.BAD_REQUEST, "click captioning needs at least one click point"
            )
        ask = question or (
            "Describe the object in detail." if n_clicks == 1 else "Describe the objects in detail."
        )
        return ask if inline else f"{click_phrase(n_clicks)} {ask}"
    if not question:
        raise QueryError(ResultCode.BAD_REQUEST, "empty question")
    if n_clicks and not inline:
        return f"{click_phrase(n_clicks)} {question}"
    return question


def build_prompt(query: str) -> str:
    """llava_v1 conversation with the scene placed before the user's query."""
    return f"{SYSTEM} USER: {IMAGE_TOKEN}\n{query} ASSISTANT:"


def tokenize_prompt(prompt: str, tokenizer: SpTokenizer) -> list[int]:
    """Token ids with −200/−300 sentinels: each text chunk tokenised alone, BOS kept only once."""
    ids: list[int] = []
    for i, chunk in enumerate(_SENTINELS.split(prompt)):
        if chunk == IMAGE_TOKEN:
            ids.append(IMAGE_TOKEN_INDEX)
        elif chunk == BOX_TOKEN:
            ids.append(BOX_TOKEN_INDEX)
        else:
            chunk_ids = tokenizer.encode(chunk)
            # upstream strips the first id of every chunk when the first chunk begins with BOS
            if chunk_ids and chunk_ids[0] == tokenizer.bos_id and tokenizer.add_bos:
                chunk_ids = chunk_ids[1:] if i else chunk_ids
            ids.extend(chunk_ids)
    return ids


def split_at_image(ids: list[int]) -> tuple[list[int], list[int]]:
    """(ids before ``<image>``, ids after it): the prefix is shared by every query on a scene."""
    if ids.count(IMAGE_TOKEN_INDEX) != 1:
        raise QueryError(ResultCode.BAD_REQUEST, "the prompt must hold exactly one <image>")
    k = ids.index(IMAGE_TOKEN_INDEX)
    return ids[:k], ids[k + 1 :]


def scene_token_budget(
    n_text: int, n_clicks: int, max_new_tokens: int, max_scene_tokens: int, context: int
) -> int:
    """How many scene tokens fit: ≤ ``max_scene_tokens`` and text + clicks + scene + answer ≤ context.

    Upstream silently truncated the spliced sequence (losing the question); we instead cap the
    voxel token count (fewer, randomly kept voxels of the same views) and refuse when even a
    minimal scene does not fit.
    """
    room = context - n_text - n_clicks - max_new_tokens
    if room < 1:
        raise QueryError(
            ResultCode.BAD_REQUEST,
            f"prompt of {n_text} text tokens + {n_clicks} clicks + {max_new_tokens} new tokens "
            f"leaves no room for the scene in the {context}-token context",
        )
    return min(max_scene_tokens, room)
