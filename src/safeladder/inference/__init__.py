"""Inference: batched generation, value-guided step search, human edits of the chain of thought, serving.

`generate.py` (batched greedy/sampled generation), `steps.py` (splitting reasoning into steps),
`value.py` (value functions from verifiers), `step_search.py` (step search and Best-of-N at equal
budget), `intervention.py` (edit step k, resume in the same assistant turn), `server.py`
(OpenAI-compatible API + the web page), `chat_cli.py` (`safeladder chat`).
"""
