"""The system prompt of the search stage (SPEC §5): reasoning tags, the search tool, stated confidence.

It extends the base format (`safeladder.format`): the answer still follows `</think>`; searches
happen inside the reasoning; the answer ends with a confidence tag. Use it as the RL config's
`system_prompt` (and at evaluation) for search tasks; `search_example()` shows a well-formed
completion, e.g. for SFT warm-up traces.
"""

from __future__ import annotations

from safeladder.format import THINK_CLOSE, THINK_OPEN

SEARCH_SYSTEM_PROMPT = (
    "Think step by step inside <think> </think>. You do not know facts about the people, places "
    "and organisations you are asked about: search for them. To search, write <search> your query "
    "</search> inside your thinking; results come back inside <information> </information>. "
    "Search again if the results do not answer the question. After </think>, give only the short "
    "final answer followed by <confidence>high</confidence> if the information you found supports "
    "it, or <confidence>low</confidence> if you are not sure."
)


def search_example(question_query: str, information: str, reasoning: str, answer: str, confident: bool = True) -> str:
    """A completion in the search format, e.g. for SFT warm-up traces or tests."""
    level = "high" if confident else "low"
    return (f"{THINK_OPEN}\n<search> {question_query} </search>\n<information>\n{information}\n</information>\n"
            f"{reasoning}\n{THINK_CLOSE}\n{answer} <confidence>{level}</confidence>")
