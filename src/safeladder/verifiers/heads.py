"""Small trained classifiers on sentence embeddings: the learned part of the CPU verifiers.

A head maps embedding features to P(positive class). What it reads (`InputKind`):
  prompt    e(prompt)                                                           (384 values)
  response  [e(response), e(first sentence), e(tail)]                           (1152 values)
  pair      [e(prompt), e(response), e(prompt)*e(response), cos, e(opening)]    (1537 values)
  cross     the request and the answer read together by a LoRA-tuned encoder (cross_encoder.py)
The element-wise product lets the head see how the answer relates to the request, which is
what "off-topic" and "complied with *this* request" depend on. The extra parts each fix a
failure measured on the held-out split:
  - cos(p, r), the product's sum, as its own column: spread over 384 weights the heads did not
    find it (held-out accuracy on off-topic pairs 0.47 without it);
  - e(opening), the answer's first `OPENING_WORDS` words, where refusals and compliance announce
    themselves ("I can't help you ..." / "Sure, here is ..."): mean pooling over an answer that
    restates the request drowns those few words;
  - e(tail), the last `TAIL_WORDS` words after the answer's first sentence: where a decline
    puts its warning and safe alternative, and a bare refusal has nothing (a zero vector).
e(opening), e(first sentence) and e(tail) are not separate encodings: they pool the token states
of the answer's one encoder pass over those words (`answer_spans`, `Embedder.encode_pooled`),
which costs nothing extra; encoding the opening and the tail as texts of their own (up to
HEADS_VERSION 4) had nearly tripled the encoder's work per answer. Pooled from the whole answer's
pass, the tail alone lost 2 points of has_warning held-out accuracy (0.947 -> 0.927, mean of 3
seeds): its tokens also carry the first sentence's context. Adding the pooled first sentence gave
the head that contrast back (0.944).

Training: AdamW with weight decay, class-balanced BCE (positives weighted n_neg / n_pos), early
stopping on a validation slice of the *training* split (the held-out split is only evaluated).
A head is stored as `<name>.safetensors` (weights) + `<name>.json` (what it reads, sizes, threshold,
held-out metrics, training-data hash and counts, encoder) and loaded with safetensors only (no pickle).
"""

from __future__ import annotations

import copy
import json
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable, Literal, Mapping, NamedTuple, Sequence

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from safeladder.data.splits import split_of
from safeladder.errors import SafeLadderError
from safeladder.paths import safeladder_home
from safeladder.cpu import torch_threads
from safeladder.verifiers.cross_encoder import CROSS_ENCODER_TAG, CrossHead, fit_cross_head
from safeladder.verifiers.embeddings import Embedder, Span, encode_with_store, encoder_tag

InputKind = Literal["prompt", "response", "pair", "cross"]  # what a head reads (see training_data.HEAD_SETS)
HEADS_VERSION = 6  # bump when features, data or training change: stored heads are then rebuilt
HEADS_SUBDIR = "verifier_heads"


def heads_dir() -> Path:
    return safeladder_home() / HEADS_SUBDIR


OPENING_WORDS = 8
TAIL_WORDS = 32
_FIRST_SENTENCE = re.compile(r"^.*?[.!?](?:\s+|$)", re.DOTALL)
_WORD = re.compile(r"\S+")
_NO_SPAN: Span = (0, 0)


class AnswerSpans(NamedTuple):
    """Character ranges [start, end) of an answer's parts; (0, 0) when a part is empty."""

    opening: Span  # the first OPENING_WORDS words
    first: Span  # the first sentence (the whole answer when no sentence ends)
    tail: Span  # the last TAIL_WORDS words after the first sentence


def answer_spans(text: str, opening_words: int = OPENING_WORDS, tail_words: int = TAIL_WORDS) -> AnswerSpans:
    """Where the parts of an answer that the heads read lie (ranges, not texts, so the encoder pools
    them from the answer's own pass). The tail is capped: warnings and safe alternatives sit after
    the opening sentence, usually at the end."""
    words = [m.span() for m in _WORD.finditer(text)]
    if not words:
        return AnswerSpans(_NO_SPAN, _NO_SPAN, _NO_SPAN)
    head = words[:opening_words]
    match = _FIRST_SENTENCE.match(text)
    first_end = match.end() if match else len(text)
    first = [w for w in words if w[0] < first_end]
    rest = [w for w in words if w[0] >= first_end][-tail_words:] if match and tail_words > 0 else []
    return AnswerSpans((head[0][0], head[-1][1]) if head else _NO_SPAN, (first[0][0], first[-1][1]),
                       (rest[0][0], rest[-1][1]) if rest else _NO_SPAN)


def _span_text(text: str, span: Span) -> str:
    return " ".join(text[span[0]:span[1]].split())


def opening(text: str, words: int = OPENING_WORDS) -> str:
    """The first words of an answer (whitespace-split): what e(opening) pools."""
    return _span_text(text, answer_spans(text, opening_words=words).opening)


def tail(text: str, words: int = TAIL_WORDS) -> str:
    """The last `words` words after the answer's first sentence ("" for a one-sentence answer): what e(tail) pools."""
    return _span_text(text, answer_spans(text, tail_words=words).tail)


def pair_features(prompt_vecs: torch.Tensor, response_vecs: torch.Tensor, opening_vecs: torch.Tensor) -> torch.Tensor:
    """[e(p), e(r), e(p) * e(r), cos(p, r), e(opening)] row by row (unit vectors: cos = sum of the product)."""
    product = prompt_vecs * response_vecs
    return torch.cat([prompt_vecs, response_vecs, product, product.sum(1, keepdim=True), opening_vecs], dim=1)


def input_dim(reads: InputKind, dim: int) -> int:
    return {"prompt": dim, "response": 3 * dim, "pair": 4 * dim + 1}[reads]


@dataclass(frozen=True)
class Encoded:
    """Embeddings of a batch's distinct texts: what `build_features` assembles head inputs from."""

    prompts: Mapping[str, torch.Tensor]  # text -> e(prompt), (D,)
    answers: Mapping[str, torch.Tensor]  # text -> [e(answer), e(opening), e(first sentence), e(tail)], (4, D)


def needed_inputs(reads: InputKind, prompts: Sequence[str], responses: Sequence[str]) -> tuple[list[str], list[str]]:
    """(prompts, answers) whose embeddings the features of `reads` use (none for a cross head)."""
    return (list(prompts) if reads in ("prompt", "pair") else [],
            list(responses) if reads in ("response", "pair") else [])


def encode_inputs(embedder: Embedder, prompts: Sequence[str], answers: Sequence[str],
                  store: Path | None = None) -> Encoded:
    """Embed each distinct prompt once and each distinct answer once (its opening, first sentence and
    tail pooled from the same pass), all in ONE encoder call; `store` keeps the vectors between runs."""
    p, a = list(dict.fromkeys(prompts)), list(dict.fromkeys(answers))
    texts, spans = [*p, *a], [*([()] * len(p)), *(answer_spans(t) for t in a)]
    if store is None:
        vectors = embedder.encode_pooled(texts, spans)
    else:
        vectors = encode_with_store(embedder, texts, store, spans=spans)
    return Encoded(dict(zip(p, (v[0] for v in vectors[:len(p)]))), dict(zip(a, vectors[len(p):])))


def build_features(reads: InputKind, prompts: Sequence[str], responses: Sequence[str], encoded: Encoded) -> torch.Tensor:
    """The head input for aligned lists of prompts and responses, from precomputed embeddings."""
    def stack(vectors: Iterable[torch.Tensor]) -> torch.Tensor:
        vectors = list(vectors)
        return torch.stack(vectors) if vectors else torch.empty(0, 0)

    if reads == "prompt":
        return stack(encoded.prompts[t] for t in prompts)
    parts = stack(encoded.answers[t] for t in responses)  # (N, 4, D): answer, opening, first sentence, tail
    if not len(parts):
        return torch.empty(0, 0)
    if reads == "response":
        return torch.cat([parts[:, 0], parts[:, 2], parts[:, 3]], dim=1)
    return pair_features(stack(encoded.prompts[t] for t in prompts), parts[:, 0], parts[:, 1])


@dataclass(frozen=True)
class HeadConfig:
    """Hyper-parameters; `hidden=0` makes the head a logistic regression."""

    hidden: int = 128
    dropout: float = 0.1
    lr: float = 2e-3
    weight_decay: float = 1e-2
    batch_size: int = 128
    max_epochs: int = 150
    patience: int = 12
    val_fraction: float = 0.15
    balanced: bool = True  # weight positives by n_neg / n_pos (off only to compare)


def _network(in_dim: int, hidden: int, dropout: float) -> nn.Module:
    if hidden <= 0:
        return nn.Sequential(nn.Linear(in_dim, 1))
    return nn.Sequential(nn.Linear(in_dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, 1))


class Head:
    """A trained classifier plus what it needs to be used and trusted (its meta)."""

    def __init__(self, net: nn.Module, meta: dict[str, Any]):
        self.net = net.eval()
        self.meta = meta

    @property
    def name(self) -> str:
        return str(self.meta["name"])

    @property
    def reads(self) -> InputKind:
        """"prompt", "response" or "pair": which texts the features are built from ("cross" heads are `CrossHead`)."""
        return self.meta["reads"]

    @property
    def threshold(self) -> float:
        return float(self.meta.get("threshold", 0.5))

    @torch.no_grad()
    def predict_proba(self, features: torch.Tensor) -> torch.Tensor:
        """(N,) probabilities of the positive class."""
        if features.ndim != 2 or features.shape[1] != self.meta["in_dim"]:
            raise ValueError(f"head {self.name!r} expects (N, {self.meta['in_dim']}) features, got {tuple(features.shape)}")
        return torch.sigmoid(self.net(features.float()).squeeze(1))

    def save(self, directory: Path) -> Path:
        directory.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in self.net.state_dict().items()}, str(directory / f"{self.name}.safetensors"))
        (directory / f"{self.name}.json").write_text(json.dumps(self.meta, indent=2, sort_keys=True), encoding="utf-8")
        return directory / f"{self.name}.json"

    @classmethod
    def load(cls, directory: Path, meta: dict[str, Any]) -> "Head":
        net = _network(int(meta["in_dim"]), int(meta["config"]["hidden"]), float(meta["config"]["dropout"]))
        net.load_state_dict(load_file(str(directory / f"{meta['name']}.safetensors")))
        return cls(net, meta)


def load_head(directory: Path, name: str) -> "Head | CrossHead":
    """A stored head of either kind (its .json says which)."""
    meta = _meta(directory, name)
    if meta is None:
        raise SafeLadderError(f"no trained head {name!r} in {directory}; build it with train_heads()")
    return (CrossHead if meta.get("reads") == "cross" else Head).load(directory, meta)


# --------------------------------------------------------------------------- fitting

def _example_weights(y: torch.Tensor, w: torch.Tensor | None, balanced: bool) -> torch.Tensor:
    """Per-example loss weights: the given weights, times n_neg / n_pos on positives if balanced
    (counts are weighted too, so both classes carry the same total weight)."""
    w = torch.ones_like(y) if w is None else w.float()
    pos, neg = float((w * y).sum()), float((w * (1 - y)).sum())
    if balanced and pos and neg:
        w = w * torch.where(y > 0.5, neg / pos, 1.0)
    return w


def _weighted_bce(logits: torch.Tensor, y: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    return (nn.functional.binary_cross_entropy_with_logits(logits, y, reduction="none") * w).sum() / w.sum()


def fit_head(
    name: str,
    reads: InputKind,
    x: torch.Tensor,
    y: torch.Tensor,
    x_val: torch.Tensor | None = None,
    y_val: torch.Tensor | None = None,
    config: HeadConfig = HeadConfig(),
    seed: int = 0,
    weights: torch.Tensor | None = None,
    val_weights: torch.Tensor | None = None,
) -> Head:
    """Train one head; with a validation set, keep the weights of the best validation loss.

    `weights` (per example, default 1) up-weight hard cases, e.g. benign look-alike prompts.
    """
    # Many tiny matrix products: extra threads only add synchronisation (on a busy 2-core machine
    # two threads were 15x slower than one, 2.3 s vs 0.15 s per epoch).
    with torch_threads(1):
        return _fit(name, reads, x, y, x_val, y_val, config, seed, weights, val_weights)


def _fit(name: str, reads: InputKind, x: torch.Tensor, y: torch.Tensor, x_val: torch.Tensor | None,
         y_val: torch.Tensor | None, config: HeadConfig, seed: int, weights: torch.Tensor | None,
         val_weights: torch.Tensor | None) -> Head:
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    y = y.float()
    w = _example_weights(y, weights, config.balanced)
    has_val = x_val is not None and y_val is not None and len(y_val) > 0
    if has_val:
        y_val = y_val.float()
        w_val = _example_weights(y_val, val_weights, config.balanced)
    net = _network(x.shape[1], config.hidden, config.dropout)
    opt = torch.optim.AdamW(net.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    best, best_state, bad_epochs, epochs = float("inf"), copy.deepcopy(net.state_dict()), 0, 0
    for epochs in range(1, config.max_epochs + 1):
        net.train()
        for idx in torch.randperm(len(x), generator=gen).split(config.batch_size):
            opt.zero_grad()
            _weighted_bce(net(x[idx]).squeeze(1), y[idx], w[idx]).backward()
            opt.step()
        if not has_val:
            continue
        net.eval()
        with torch.no_grad():
            val = float(_weighted_bce(net(x_val).squeeze(1), y_val, w_val))
        if val < best - 1e-4:
            best, best_state, bad_epochs = val, copy.deepcopy(net.state_dict()), 0
        else:
            bad_epochs += 1
            if bad_epochs >= config.patience:
                break
    if has_val:
        net.load_state_dict(best_state)
    meta = {"name": name, "reads": reads, "in_dim": int(x.shape[1]), "threshold": 0.5,
            "config": asdict(config), "seed": seed, "epochs": epochs, "version": HEADS_VERSION,
            "encoder": encoder_tag(),
            "n_train": int(len(x)), "n_val": int(len(y_val)) if has_val else 0}
    return Head(net, meta)


def binary_metrics(y_true: Sequence[int] | torch.Tensor, y_prob: torch.Tensor, threshold: float = 0.5) -> dict[str, float]:
    """accuracy, precision, recall and F1 of the positive class, and the counts they rest on."""
    gold = torch.as_tensor(y_true).bool()
    pred = torch.as_tensor(y_prob) >= threshold
    n = len(gold)
    tp = int((pred & gold).sum())
    fp = int((pred & ~gold).sum())
    fn = int((~pred & gold).sum())
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"n": n, "positives": int(gold.sum()), "accuracy": float((pred == gold).float().mean()) if n else 0.0,
            "precision": precision, "recall": recall, "f1": f1}


# --------------------------------------------------------------------------- SafeLadder's head set

VAL_SALT = "safeladder-verifier-val"  # a second hash, so the validation slice is independent of dev


def _split_texts(examples: Sequence[Any], reads: InputKind) -> tuple[list[str], list[str]]:
    """(prompts, responses) of a set's examples (one list stays empty for single-text heads)."""
    if reads == "pair":
        return [ex.text[0] for ex in examples], [ex.text[1] for ex in examples]
    texts = [ex.text for ex in examples]
    return (texts, []) if reads == "prompt" else ([], texts)


def _features(examples: Sequence[Any], reads: InputKind, encoded: Encoded) -> torch.Tensor:
    return build_features(reads, *_split_texts(examples, reads), encoded)


def train_heads(
    out_dir: Path | None = None,
    heads: list[str] | None = None,
    seed: int = 0,
    config: HeadConfig = HeadConfig(),
) -> dict[str, dict[str, Any]]:
    """Train every head (or `heads`), evaluate on its held-out split, save, and return the metrics.

    Per head: held-out accuracy/precision/recall/F1/n, the same on the human-labelled held-out
    rows only ("human") and per source, training counts, seconds, and the (shared) embedding
    cost. Embeddings of all texts are computed once and kept in a vector store next to the
    heads, so a rebuild only encodes new texts.
    """
    from safeladder.verifiers.embeddings import get_embedder
    from safeladder.verifiers.training_data import HEAD_SETS, build_set, counts, data_hash, split_examples

    out_dir = Path(out_dir) if out_dir is not None else heads_dir()
    names = list(heads) if heads is not None else list(HEAD_SETS)
    unknown = [n for n in names if n not in HEAD_SETS]
    if unknown:
        raise SafeLadderError(f"unknown heads {unknown}; known: {', '.join(HEAD_SETS)}")
    sets = {name: build_set(name) for name in names}
    started = time.perf_counter()
    prompts: list[str] = []
    answers: list[str] = []
    for name in names:
        p, a = needed_inputs(HEAD_SETS[name][1], *_split_texts(sets[name], HEAD_SETS[name][1]))
        prompts += p
        answers += a
    embedder = get_embedder()
    vectors = encode_inputs(embedder, prompts, answers, store=out_dir / "embeddings")
    n_texts = len(vectors.prompts) + len(vectors.answers)
    embed_seconds = time.perf_counter() - started

    report: dict[str, dict[str, Any]] = {}
    for name in names:
        t0 = time.perf_counter()
        reads = HEAD_SETS[name][1]
        train, held_out = split_examples(sets[name])
        if reads == "cross":  # fine-tuned for fixed epochs on the whole training split (no early stopping)
            fit, val = train, []
            head: Head | CrossHead = _fit_cross_with_progress(name, train, seed)
            probs = head.predict_pairs([e.text[0] for e in held_out], [e.text[1] for e in held_out])
        else:
            fit = [e for e in train if split_of(e.group, config.val_fraction, VAL_SALT) == "train"]
            val = [e for e in train if split_of(e.group, config.val_fraction, VAL_SALT) == "dev"]
            head = fit_head(name, reads, _features(fit, reads, vectors), torch.tensor([e.label for e in fit]),
                            _features(val, reads, vectors), torch.tensor([e.label for e in val]), config, seed,
                            torch.tensor([e.weight for e in fit]), torch.tensor([e.weight for e in val]))
            head.meta["encoder"] = embedder.tag
            probs = head.predict_proba(_features(held_out, reads, vectors))
        metrics = binary_metrics([e.label for e in held_out], probs, head.threshold)
        human = [i for i, e in enumerate(held_out) if e.human]
        if human:
            metrics["human"] = binary_metrics([held_out[i].label for i in human], probs[human], head.threshold)
        metrics["by_source"] = {
            src: binary_metrics([held_out[i].label for i in idx], probs[idx], head.threshold)
            for src in sorted({e.source for e in held_out})
            for idx in [[i for i, e in enumerate(held_out) if e.source == src]]
        }
        head.meta.update({"metrics": metrics, "data_hash": data_hash(sets[name]), "counts": counts(sets[name])})
        head.save(out_dir)
        report[name] = {**{k: v for k, v in metrics.items() if k != "by_source"},
                        "by_source": metrics["by_source"], "n_train": len(fit), "n_val": len(val),
                        "seconds": round(time.perf_counter() - t0, 2),
                        "embedding": {"texts": n_texts, "seconds": round(embed_seconds, 1)}}
    return report


def _fit_cross_with_progress(name: str, train: Sequence[Any], seed: int) -> CrossHead:
    """`fit_cross_head` on a set's training rows, with a progress bar (minutes, not seconds)."""
    from safeladder.train.progress import progress_bar

    with progress_bar(transient=True) as bar:
        task = bar.add_task(f"cross-encoder {name}", total=None, info="")
        return fit_cross_head(name, [e.text for e in train], [e.label for e in train], [e.weight for e in train],
                              seed=seed, on_step=lambda step, total, loss: bar.update(
                                  task, completed=step, total=total, info=f"loss {loss:.3f}"))


PRETRAINED_DIR = Path(__file__).parent / "pretrained_heads"  # heads shipped with the package


def ensure_heads(names: Sequence[str], directory: Path | None = None) -> dict[str, Head]:
    """Load the named heads, training any that are missing, from an older HEADS_VERSION, or trained
    on another encoder configuration (`encoder_tag()`: int8 vs fp32 features differ).

    A missing head is first taken from the heads shipped with the package (`PRETRAINED_DIR`, made
    by `safeladder verifier train --out` from the same packaged data) when they match this
    version, encoder and training data; that saves the ~4 minutes of training on first use.
    """
    directory = Path(directory) if directory is not None else heads_dir()
    stale = [n for n in names if not _is_current(directory, n)]
    stale = [n for n in stale if not install_pretrained(n, directory)]
    if stale:
        train_heads(directory, stale)
    return {n: load_head(directory, n) for n in names}


def pretrained_matches(name: str, source: Path = PRETRAINED_DIR) -> bool:
    """True when the shipped head `name` is current: same HEADS_VERSION, encoder and data hash."""
    if not _is_current(source, name):
        return False
    from safeladder.verifiers.training_data import HEAD_SETS, build_set, data_hash

    if name not in HEAD_SETS:
        return False
    meta = json.loads((source / f"{name}.json").read_text(encoding="utf-8"))
    return meta.get("data_hash") == data_hash(build_set(name))


def install_pretrained(name: str, directory: Path, source: Path = PRETRAINED_DIR) -> bool:
    """Copy the shipped head `name` into `directory` if it is current; False when it is not."""
    if not pretrained_matches(name, source):
        return False
    directory.mkdir(parents=True, exist_ok=True)
    for suffix in (".safetensors", ".json"):  # weights first: the .json is what marks a head present
        tmp = directory / f".{name}{suffix}.tmp"
        tmp.write_bytes((source / f"{name}{suffix}").read_bytes())
        tmp.replace(directory / f"{name}{suffix}")
    return True


def _meta(directory: Path, name: str) -> dict[str, Any] | None:
    """A stored head's metadata, or None when the head is missing or its .json unreadable."""
    meta = directory / f"{name}.json"
    if not meta.is_file() or not (directory / f"{name}.safetensors").is_file():
        return None
    try:
        return json.loads(meta.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        return None


def _is_current(directory: Path, name: str) -> bool:
    """Stored for this HEADS_VERSION and encoder, and (when the package ships a head of that name,
    version and encoder) trained on the same data as the shipped one. The shipped heads are kept
    current by a test, so a data hash that differs from theirs marks a cached head trained on older
    data: one head's data can change without a global version bump."""
    meta = _meta(directory, name)
    expected_encoder = CROSS_ENCODER_TAG if meta and meta.get("reads") == "cross" else encoder_tag()
    if meta is None or meta.get("version") != HEADS_VERSION or meta.get("encoder") != expected_encoder:
        return False
    shipped = _meta(PRETRAINED_DIR, name)
    comparable = shipped is not None and shipped.get("version") == HEADS_VERSION and shipped.get("encoder") == meta["encoder"]
    return not comparable or shipped.get("data_hash") == meta.get("data_hash")
