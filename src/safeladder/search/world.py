"""A generated fictional world: an encyclopedia corpus and QA about it (train / dev / test).

Search RL needs questions whose answers are in the corpus but *not* in any model's weights, so
that searching is necessary and its effect measurable. Every name here is made of random
syllables and every fact is drawn from a seeded RNG: countries, cities, organisations and
people, one encyclopedia passage each, written from a few templates so that reading (not string
matching) is needed. Questions are one-hop ("In which city was X born?") and two-hop ("In which
city was the founder of Y born?", which needs two searches). The same seed gives the same world.

Splits: a question's split depends only on its id (test: a separate 10% hash bucket; the rest
by `safeladder.data.splits.split_of`, 20% dev), so `take_split` on the written files agrees
with the file they are in, and any RL task config can point at them with the usual `split`.

`adapt_qa` turns a user's QA JSONL (`question` + `answer`/`answers`/`golden_answers`, e.g.
Search-R1's NQ/HotpotQA files) and corpus into the same layout.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

from safeladder.data.loaders import read_jsonl, write_jsonl
from safeladder.data.sample import Sample
from safeladder.data.splits import split_of
from safeladder.errors import DataError
from safeladder.search.corpus import Document, load_corpus, write_corpus

LABEL = "search_qa"
SPLITS = ("train", "dev", "test")
TEST_FRACTION, DEV_FRACTION = 0.1, 0.2

_ONSETS = ["b", "br", "d", "dr", "f", "g", "gr", "h", "k", "kr", "l", "m", "n", "p", "pr", "r", "s", "st",
           "t", "th", "tr", "v", "z", "sh", "w", "y", "j", "qu", "sk", "c"]
_VOWELS = ["a", "e", "i", "o", "u", "ae", "ei", "ou", "ia", "y"]
_CODAS = ["", "", "", "n", "r", "l", "s", "th", "m", "nd", "rk", "x", "sk", "v", "t", "ll"]
_OCCUPATIONS = ["cartographer", "glassblower", "astronomer", "shipwright", "poet", "engineer", "botanist",
                "clockmaker", "composer", "physician", "architect", "weaver", "historian", "chemist",
                "sculptor", "navigator", "printer", "mathematician", "brewer", "lawyer"]
_ORG_KINDS = ["Trading Company", "Guild of Cartographers", "Observatory", "Shipyard", "Academy", "Bank",
              "Theatre Company", "Printing House", "Botanical Society", "Railway Company", "Conservatory",
              "Glassworks", "Museum", "Hospital", "Chamber of Commerce"]
_PRODUCTS = ["glass", "salt", "silk", "clockwork", "paper", "copper", "wool", "porcelain", "rope", "ink",
             "cheese", "timber", "dye", "bells", "lenses", "maps", "tea", "soap", "candles", "carpets"]
_ADJECTIVES = ["Silent", "Hollow", "Amber", "Seventh", "Drowned", "Patient", "Crooked", "Northern", "Lesser",
               "Burning", "Quiet", "Distant", "Iron", "Glass", "Last", "Winter", "Borrowed", "Painted"]
_NOUNS = ["Lantern", "Orchard", "Harbour", "Compass", "Ledger", "Tide", "Bridge", "Archive", "Meridian",
          "Garden", "Mirror", "Engine", "Chorus", "Atlas", "Tower", "Voyage", "Letter", "Map"]
_CURRENCY = ["crown", "mark", "florin", "tael", "shell", "ducat"]


@dataclass(frozen=True)
class WorldSpec:
    """How big a world to generate. One passage per entity."""

    seed: int = 0
    countries: int = 12
    cities: int = 120  # at least `countries`: the first ones are the capitals
    organisations: int = 300
    people: int = 1500
    two_hop: bool = True

    def __post_init__(self) -> None:
        if min(self.countries, self.organisations, self.people) < 1 or self.cities < self.countries:
            raise ValueError("a world needs >= 1 country, organisation and person, and at least as many cities as countries")

    @classmethod
    def for_passages(cls, passages: int, seed: int = 0) -> "WorldSpec":
        """A world of about `passages` passages, in the default proportions."""
        countries = max(4, passages // 200)
        cities = max(countries * 2, passages // 14)
        organisations = max(4, passages // 6)
        return cls(seed, countries, cities, organisations, max(4, passages - countries - cities - organisations))

    @property
    def passages(self) -> int:
        return self.countries + self.cities + self.organisations + self.people


@dataclass
class World:
    spec: WorldSpec
    documents: list[Document]
    samples: list[Sample]
    entities: dict[str, dict[str, Any]] = field(default_factory=dict)  # id -> facts (for tests / analysis)


class _Names:
    """Unique invented names (no two entities share a word-for-word name)."""

    def __init__(self, rng: random.Random):
        self.rng, self.used = rng, set()

    def word(self, lo: int = 2, hi: int = 3) -> str:
        parts = [self.rng.choice(_ONSETS) + self.rng.choice(_VOWELS) for _ in range(self.rng.randint(lo, hi))]
        return ("".join(parts) + self.rng.choice(_CODAS)).capitalize()

    def unique(self, make: Any) -> str:
        for _ in range(1000):
            name = make()
            if name.lower() not in self.used:
                self.used.add(name.lower())
                return name
        raise RuntimeError("could not invent a new name; the world is too big for the syllable tables")


def _pick(rng: random.Random, options: Sequence[str], **facts: Any) -> str:
    return rng.choice(options).format(**facts)


def generate_world(spec: WorldSpec = WorldSpec()) -> World:
    """Entities, their passages and every question about them (deterministic in `spec`)."""
    rng = random.Random(f"safeladder-world:{spec.seed}")
    names = _Names(rng)
    ents: dict[str, dict[str, Any]] = {}
    countries = [f"country-{i:04d}" for i in range(spec.countries)]
    cities = [f"city-{i:05d}" for i in range(spec.cities)]
    orgs = [f"org-{i:05d}" for i in range(spec.organisations)]
    people = [f"person-{i:06d}" for i in range(spec.people)]

    for cid in countries:
        name = names.unique(lambda: names.word(2, 3))
        ents[cid] = {"type": "country", "name": name, "language": name.rstrip("aeiouy") + "ish",
                     "currency": f"{names.unique(lambda: names.word(1, 2))} {rng.choice(_CURRENCY)}",
                     "founded": rng.randint(900, 1700)}
    for i, cid in enumerate(cities):  # city i < #countries is the capital of country i
        country = countries[i] if i < len(countries) else rng.choice(countries)
        ents[cid] = {"type": "city", "name": names.unique(lambda: names.word(2, 3)), "country": country,
                     "river": f"{names.unique(lambda: names.word(1, 2))} River", "founded": rng.randint(800, 1800),
                     "population": rng.randint(2, 900) * 1000, "product": rng.choice(_PRODUCTS)}
        if i < len(countries):
            ents[country]["capital"] = cid
    for pid in people:
        ents[pid] = {"type": "person", "name": names.unique(lambda: f"{names.word(1, 2)} {names.word(2, 3)}"),
                     "born": rng.randint(1700, 1950), "birthplace": rng.choice(cities),
                     "occupation": rng.choice(_OCCUPATIONS), "employer": None,
                     "work": f"The {rng.choice(_ADJECTIVES)} {rng.choice(_NOUNS)}"}
    for oid in orgs:
        founder = rng.choice(people)
        kind = rng.choice(_ORG_KINDS)
        ents[oid] = {"type": "organisation", "name": names.unique(lambda: f"{names.word(2, 3)} {kind}"),
                     "founder": founder, "founded": ents[founder]["born"] + rng.randint(22, 60),
                     "headquarters": rng.choice(cities)}
    for pid in people:
        ents[pid]["employer"] = rng.choice(orgs) if orgs else None

    docs = [Document(eid, ents[eid]["name"], _passage(rng, eid, ents)) for eid in (*countries, *cities, *orgs, *people)]
    samples = [s for eid in (*countries, *cities, *orgs, *people) for s in _questions(spec, eid, ents)]
    return World(spec, docs, samples, ents)


def _name(ents: dict[str, dict[str, Any]], eid: str | None) -> str:
    return ents[eid]["name"] if eid else "an unknown organisation"


def _passage(rng: random.Random, eid: str, ents: dict[str, dict[str, Any]]) -> str:
    e = ents[eid]
    kind = e["type"]
    if kind == "country":
        return " ".join([
            _pick(rng, ["{n} is a country whose capital is {cap}.", "The capital of {n} is the city of {cap}."],
                  n=e["name"], cap=_name(ents, e["capital"])),
            _pick(rng, ["Its people speak {lang} and pay in the {cur}.", "{lang} is spoken there, and the currency is the {cur}."],
                  lang=e["language"], cur=e["currency"]),
            f"{e['name']} became a kingdom in {e['founded']}.",
        ])
    if kind == "city":
        return " ".join([
            _pick(rng, ["{n} is a city in {c}, on the banks of the {r}.", "The {r} flows through {n}, a city of {c}."],
                  n=e["name"], c=_name(ents, e["country"]), r=e["river"]),
            _pick(rng, ["It was founded in {y} and has about {p:,} inhabitants.", "Founded in {y}, it is home to roughly {p:,} people."],
                  y=e["founded"], p=e["population"]),
            _pick(rng, ["{n} is known for its {x}.", "The city is famous for producing {x}."], n=e["name"], x=e["product"]),
        ])
    if kind == "organisation":
        return " ".join([
            _pick(rng, ["The {n} was founded in {y} by {f}.", "{f} founded the {n} in {y}."],
                  n=e["name"], y=e["founded"], f=_name(ents, e["founder"])),
            _pick(rng, ["It is based in {h}.", "Its headquarters are in the city of {h}."], h=_name(ents, e["headquarters"])),
        ])
    surname = e["name"].split()[-1]
    return " ".join([
        _pick(rng, ["{n} (born {y} in {c}) is a {o}.", "{n} is a {o} who was born in {c} in {y}.",
                    "Born in {c} in {y}, {n} became a {o}."],
              n=e["name"], y=e["born"], c=_name(ents, e["birthplace"]), o=e["occupation"]),
        _pick(rng, ["{s} works for the {org}.", "{s} is a member of the {org}."], s=surname, org=_name(ents, e["employer"])),
        _pick(rng, ["{s} is best known for the work {w}.", "{s}'s best-known work is {w}."], s=surname, w=e["work"]),
    ])


def _aliases(*names: str) -> str:
    return "|".join(dict.fromkeys(n for n in names if n))


def _questions(spec: WorldSpec, eid: str, ents: dict[str, dict[str, Any]]) -> list[Sample]:
    e = ents[eid]
    n = e["name"]
    qa: list[tuple[str, str, str, list[str]]] = []  # relation, question, reference, gold doc ids
    if e["type"] == "country":
        qa += [("capital", f"What is the capital of {n}?", _name(ents, e["capital"]), [eid]),
               ("currency", f"What is the currency of {n}?", _aliases(e["currency"], e["currency"].split()[0]), [eid]),
               ("language", f"What language is spoken in {n}?", e["language"], [eid])]
    elif e["type"] == "city":
        qa += [("country", f"In which country is the city of {n}?", _name(ents, e["country"]), [eid]),
               ("river", f"Which river flows through {n}?", _aliases(e["river"], e["river"].removesuffix(" River")), [eid]),
               ("founded", f"In what year was the city of {n} founded?", str(e["founded"]), [eid]),
               ("product", f"What is the city of {n} known for producing?", e["product"], [eid])]
    elif e["type"] == "organisation":
        founder = ents[e["founder"]]
        qa += [("founder", f"Who founded the {n}?", founder["name"], [eid]),
               ("founded", f"In what year was the {n} founded?", str(e["founded"]), [eid]),
               ("headquarters", f"In which city is the {n} based?", _name(ents, e["headquarters"]), [eid])]
        if spec.two_hop:
            qa.append(("founder_birthplace", f"In which city was the founder of the {n} born?",
                       _name(ents, founder["birthplace"]), [eid, e["founder"]]))
    else:
        qa += [("birthplace", f"In which city was {n} born?", _name(ents, e["birthplace"]), [eid]),
               ("born", f"In what year was {n} born?", str(e["born"]), [eid]),
               ("occupation", f"What is the occupation of {n}?", e["occupation"], [eid]),
               ("employer", f"Which organisation does {n} work for?", _name(ents, e["employer"]), [eid]),
               ("work", f"What is the best-known work of {n}?", e["work"], [eid])]
    return [
        Sample(id=f"world{spec.seed}-{eid}-{rel}", prompt=question, label=LABEL, reference=ref,
               metadata={"relation": rel, "entity": eid, "gold_docs": gold, "hops": len(gold), "source": "world"})
        for rel, question, ref, gold in qa
    ]


# ------------------------------------------------------------------------------------- splits & files

def split_of_question(sample_id: str) -> str:
    """train / dev / test from the id alone (test: its own 10% hash bucket; dev: split_of's 20%)."""
    digest = hashlib.sha256(f"safeladder-world-test:{sample_id}".encode()).digest()
    if int.from_bytes(digest[:8], "big") / 2**64 < TEST_FRACTION:
        return "test"
    return split_of(sample_id, DEV_FRACTION)


def write_dataset(output: str | os.PathLike[str], documents: Iterable[Document], samples: Sequence[Sample],
                  manifest: dict[str, Any]) -> dict[str, Path]:
    """corpus.jsonl + train/dev/test.jsonl + dataset.json into `output`; returns the paths."""
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"corpus": out / "corpus.jsonl", **{s: out / f"{s}.jsonl" for s in SPLITS}}
    n_docs = write_corpus(paths["corpus"], documents)
    counts = {}
    for split in SPLITS:
        rows = [s for s in samples if split_of_question(s.id) == split]
        counts[split] = write_jsonl(paths[split], rows)
    (out / "dataset.json").write_text(json.dumps({**manifest, "documents": n_docs, "questions": counts}, indent=2) + "\n")
    return paths


def write_world(output: str | os.PathLike[str], spec: WorldSpec = WorldSpec()) -> dict[str, Path]:
    """Generate a world and write it (see `write_dataset`)."""
    world = generate_world(spec)
    return write_dataset(output, world.documents, world.samples, {"source": "world", "spec": asdict(spec)})


# ------------------------------------------------------------------------------------- adapter

_ANSWER_FIELDS = ("answer", "answers", "golden_answers")


def _reference(value: Any, path: str, line: int, field_name: str) -> str:
    if isinstance(value, str) and value.strip():
        return value.strip()
    if isinstance(value, list) and value and all(isinstance(v, str) and v.strip() for v in value):
        return json.dumps([v.strip() for v in value], ensure_ascii=False)  # rules.reference_aliases reads JSON lists
    raise DataError(path, line, field_name, "expected a non-empty string or a non-empty list of strings")


def load_qa(path: str | os.PathLike[str], question_field: str = "question", answer_field: str | None = None,
            id_field: str = "id", label: str = LABEL) -> list[Sample]:
    """A user's QA JSONL → Samples (label `label`, reference = the answer or a JSON list of aliases)."""
    shown, samples, seen = str(path), [], {}
    for line, row in read_jsonl(path):
        if not isinstance(row, dict):
            raise DataError(shown, line, None, f"expected a JSON object, got {type(row).__name__}")
        question = row.get(question_field)
        if not isinstance(question, str) or not question.strip():
            raise DataError(shown, line, question_field, "missing or not a non-empty string")
        fields = [answer_field] if answer_field else [f for f in _ANSWER_FIELDS if f in row][:1]
        if not fields or fields[0] not in row:
            raise DataError(shown, line, answer_field or "answer", f"missing (looked for {', '.join(fields or _ANSWER_FIELDS)})")
        reference = _reference(row[fields[0]], shown, line, fields[0])
        ident = row.get(id_field, f"{Path(shown).stem}-{line}")
        ident = str(ident) if isinstance(ident, (str, int)) and not isinstance(ident, bool) and str(ident).strip() else None
        if ident is None:
            raise DataError(shown, line, id_field, "expected a non-empty string or integer")
        if ident in seen:
            raise DataError(shown, line, id_field, f"duplicate id {ident!r} (first seen at line {seen[ident]})")
        seen[ident] = line
        samples.append(Sample(id=ident, prompt=question.strip(), label=label, reference=reference,
                              metadata={"source": Path(shown).name}))
    if not samples:
        raise DataError(shown, None, None, "no questions")
    return samples


def adapt_qa(qa_path: str | os.PathLike[str], corpus_path: str | os.PathLike[str], output: str | os.PathLike[str],
             **options: Any) -> dict[str, Path]:
    """A user's QA file + corpus → the world's layout (corpus validated and normalised)."""
    docs = load_corpus(corpus_path)
    samples = load_qa(qa_path, **options)
    return write_dataset(output, docs, samples, {"source": "adapted", "qa": str(qa_path), "corpus": str(corpus_path)})
