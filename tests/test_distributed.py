"""In-batch losses under DDP (`gather_across_devices`) must equal one process on the whole global batch.

Misaligned labels under gathering shipped as a bug elsewhere (sentence-transformers #3453 trained anchors towards
their hard negatives); these tests make it impossible here. Two gloo processes on CPU each take half of an 8-row
batch (rank r: rows 4r..4r+3), with the loss built by `st_bge.losses.build_loss(world_size=2)`, so the code path
under test is st-bge's own. They are compared with one process on all 8 rows (world_size=1, nothing gathered).

What "equal" means under gathering: each rank embeds its own 4 rows, gathers every rank's candidates, and scores
only its own anchors against all 8 (or 16 with a negative column) candidates; the target of local anchor i is
global column 4r + i. Its loss is the mean over its own anchors, so a rank's loss is not the global loss: the mean
of the ranks' losses is (equal shards), and each rank's loss is the mean of the global per-anchor losses over its
rows. The all-gather's backward sends each rank the gradient that every rank's loss puts on its embeddings, so
after DDP averages the parameter gradients (sum / world size) they equal the one-process gradients. GIST's
anchor-anchor term (`contrast_anchors`) is tested both ways: sentence-transformers leaves it per process, st-bge
gathers the anchors for it (`st_bge.losses._GISTSimilarities`). BGE-M3's unified loss gathers every head's
candidates (dense, sparse vectors, ColBERT vectors padded to the longest): tested the same way, and against
FlagEmbedding's dense-only gathering.

Only one spawn is paid for: the two workers run every configuration and save their results, and the tests compare
them with the one-process reference computed in the pytest process.
"""

from __future__ import annotations

import socket
import warnings
from pathlib import Path
from typing import NamedTuple
from unittest import mock

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from conftest import TOPICS, redraw_weights
from datasets import Dataset
from sentence_transformers.sentence_transformer.data_collator import SentenceTransformerDataCollator

from st_bge.config import LossArguments, ModelArguments
from st_bge.guide import precompute_guide
from st_bge.losses import build_loss
from st_bge.modeling import frozen_copy, load_model

WORLD_SIZE = 2
PER_RANK = 4
MINI_BATCH_SIZE = 2  # below the per-rank batch, so the cached losses really split it (and replay it in backward)
# float32 rounding: the two layouts sum in different orders (8-row vs 4-row matmuls, the all-gather's backward).
# Measured: losses within ~1e-6 of values ~4-7, gradients within ~6e-6 of entries up to ~8. A label or gradient-flow
# bug moves them by 0.5 or more (see the mutation check).
LOSS_RTOL, LOSS_ATOL = 1e-5, 1e-6
GRAD_RTOL, GRAD_ATOL = 1e-4, 3e-5

# (anchor, positive, hard negative): the first 8 fixture topics, each negative a near miss of its positive.
NEAR_MISSES = [
    "def sort_numbers(xs):\n    return reversed(xs)",
    "def reverse(s):\n    return s[1:]",
    "def is_prime(n):\n    return n % 2 == 1",
    "def total(xs):\n    return len(xs)",
    "def largest(xs):\n    return min(xs)",
    "def vowels(w):\n    return len(w)",
    "def evens(xs):\n    return [x for x in xs if x % 2]",
    "def squares(xs):\n    return [x + x for x in xs]",
]
ROWS = [
    (query, code, negative) for (query, code), negative in zip(list(TOPICS.values())[:8], NEAR_MISSES, strict=True)
]
assert len(ROWS) == WORLD_SIZE * PER_RANK


class Config(NamedTuple):
    loss: str
    columns: int  # 2: (anchor, positive); 3: with a hard-negative column
    contrast_anchors: bool = False  # GIST only: the anchor-anchor term (on by default in recipes)
    precomputed_guide: bool = False  # GIST only: the guide answers from a table (`st_bge.guide`); the reference not
    mini_batch_size: int = MINI_BATCH_SIZE

    def __str__(self) -> str:
        anchors = "-contrast_anchors" if self.contrast_anchors else ""
        precomputed = "-precomputed_guide" if self.precomputed_guide else ""
        mini_batch = f"-mini_batch_{self.mini_batch_size}" if self.mini_batch_size != MINI_BATCH_SIZE else ""
        return f"{self.loss}-{'triplets' if self.columns == 3 else 'pairs'}{anchors}{precomputed}{mini_batch}"


CONFIGS = [Config(loss, columns) for loss in ("mnrl", "cached_mnrl") for columns in (2, 3)] + [
    Config(loss, columns, anchors)
    for loss in ("gist", "cached_gist")
    for columns in (2, 3)
    for anchors in (False, True)
]
# The precomputed guide on each rank, and cached GIST's one pass: a rank's 4 rows fit in one mini-batch of 4, while
# the one-process reference splits its 8 rows into two (GradCache), with the guide run at the step.
CONFIGS += [
    Config("gist", 3, True, precomputed_guide=True),
    Config("cached_gist", 3, True, precomputed_guide=True),
    Config("cached_gist", 3, True, mini_batch_size=PER_RANK),
    Config("cached_gist", 3, True, precomputed_guide=True, mini_batch_size=PER_RANK),
]
# BGE-M3's unified loss (dense + sparse + ColBERT + ensemble + self-distillation) runs on the tiny XLM-R with heads.
M3_CONFIGS = [Config(loss, columns) for loss in ("m3_unified", "cached_m3_unified") for columns in (2, 3)]
CONFIGS += M3_CONFIGS
ANCHOR_CONTRAST = [config for config in CONFIGS if config.contrast_anchors]


def is_m3(config: Config) -> bool:
    return config.loss.endswith("m3_unified")


def _model_and_guide(model_path: str):
    """The fixture's tiny BGE model with its weights redrawn wider, and a frozen copy of it as the GIST guide.

    At the fixture's initialisation (std 0.02) every text gets nearly the same CLS embedding (cosine 1.000 to three
    decimals), so every loss sits at log(number of candidates) whatever the labels: a test of label alignment would
    pass with the labels shuffled. Redrawn with std 0.25 the cosines spread over about 0.5-1.0.
    The guide gets weights of its own (another seed), as a base model's would differ from the model in training:
    a guide identical to the model masks every candidate it scores above the target, whichever column the target
    is, and GIST would be almost blind to misaligned labels.
    Dropout is off (eval mode) so that both layouts see the very same forward pass.
    """
    model = load_model(ModelArguments(model_name_or_path=model_path))
    model.eval()
    guide = frozen_copy(model)
    redraw_weights(model, seed=0)
    redraw_weights(guide, seed=1)
    return model, guide


def _features(model, rows: slice, columns: int) -> list[dict]:
    """The tokenised columns of `ROWS[rows]`, every column padded to the same width.

    Every text of the global batch is tokenised in one call and the rows are sliced out afterwards, so a rank's
    4 rows carry exactly the token ids and padding that those rows have in the 8-row batch. Padding each rank to
    its own longest text would change the sequence width, and with it the float sums of the attention kernels:
    the embeddings would already differ by rounding before any label is involved. (The cached losses trim each
    mini-batch's trailing padding, the same way in both layouts: mini-batches of 2 rows hold the same rows.)
    """
    texts = [row[column] for column in range(columns) for row in ROWS]
    tokens = model.preprocess(texts)
    features = []
    for column in range(columns):
        start = column * len(ROWS)
        features.append(
            {  # tensors are sliced; metadata such as `modality` is kept as is
                key: value[start : start + len(ROWS)][rows] if isinstance(value, torch.Tensor) else value
                for key, value in tokens.items()
            }
        )
    return features


def _m3_model(model_path: str):
    """The tiny BGE-M3 (heads included) with its weights redrawn as `_model_and_guide` explains, dropout off."""
    model = load_model(ModelArguments(model_name_or_path=model_path))
    model.eval()
    redraw_weights(model, seed=0)
    return model


def _build(model, guide, config: Config, world_size: int, **fields):
    args = LossArguments(
        loss=config.loss,
        mini_batch_size=config.mini_batch_size,
        gist_contrast_anchors=config.contrast_anchors,
        **fields,
    )
    loss_fn = build_loss(model, args, guide=guide, world_size=world_size)
    # st-bge turns gathering on by itself
    assert loss_fn.get_config_dict()["gather_across_devices"] is (world_size > 1)
    if config.precomputed_guide:
        # The table every rank builds from the whole training set, as `st_bge.training` does.
        columns = {name: [row[i] for row in ROWS] for i, name in enumerate(["anchor", "positive", "negative"])}
        data = Dataset.from_dict(dict(list(columns.items())[: config.columns]))
        collator = SentenceTransformerDataCollator(preprocess_fn=model.preprocess)
        loss_fn.guide = precompute_guide(loss_fn, collator, data, use_cache=False)
    return loss_fn


def _loss_and_grads(model, guide, config: Config, rows: slice, world_size: int, **fields):
    """One training step's loss and parameter gradients (the cached losses backpropagate in a hook on the loss)."""
    loss_fn = _build(model, guide, config, world_size, **fields)
    model.zero_grad(set_to_none=True)
    loss = loss_fn(_features(model, rows, config.columns), labels=None)
    loss.backward()
    grads = {name: p.grad.detach().clone() for name, p in model.named_parameters() if p.grad is not None}
    return loss.item(), grads, loss_fn


def _loss_with_rank_offset_zero(model, guide, config: Config, rows: slice) -> float:
    """The loss with the bug class of sentence-transformers #3453 injected: labels not offset by the rank.

    The losses place local anchor i's target at gathered column `get_rank() * local_batch + i`; with the module's
    `get_rank` answering 0, rank 1's anchors target rank 0's positives. The tests require this to change the loss,
    which proves that the equality assertions would catch misaligned labels.
    """
    loss_fn = _build(model, guide, config, WORLD_SIZE)
    # Where the labels meet the rank: st-bge's M3 loss, st-bge's GIST gathering (it rolls this process's columns
    # first), sentence-transformers' MNRL.
    module = "st_bge.m3.loss" if is_m3(config) else "st_bge.losses" if "gist" in config.loss else None
    module = module or next(
        cls.__module__ for cls in type(loss_fn).__mro__ if cls.__module__.startswith("sentence_transformers.")
    )
    with mock.patch(f"{module}.get_rank", return_value=0), torch.no_grad():
        return loss_fn(_features(model, rows, config.columns), labels=None).item()


def _loss_with_local_anchors(model, guide, config: Config, rows: slice) -> float:
    """sentence-transformers' own GIST loss under gathering: its anchor-anchor term sees this process's anchors only.

    The tests require it to differ from one process, which proves that the equality test would catch a per-device
    term, and that st-bge's gathering (`st_bge.losses._GISTSimilarities`) is still needed.
    """
    ours = _build(model, guide, config, WORLD_SIZE)
    theirs = next(cls for cls in type(ours).__mro__ if cls.__module__.startswith("sentence_transformers."))
    loss_fn = theirs(model, **{**ours.get_config_dict(), "gather_across_devices": True})  # its config is its kwargs
    with torch.no_grad():
        return loss_fn(_features(model, rows, config.columns), labels=None).item()


def _ddp_step(model, guide, config: Config, rows: slice, **fields):
    """This rank's loss, and the gradients as DDP's reducer leaves them: averaged over the ranks."""
    loss, grads, loss_fn = _loss_and_grads(model, guide, config, rows, WORLD_SIZE, **fields)
    for grad in grads.values():
        dist.all_reduce(grad)
        grad /= WORLD_SIZE
    return loss, grads, loss_fn


def _worker(rank: int, port: int, model_path: str, m3_path: str, out_dir: str) -> None:
    warnings.filterwarnings("ignore", category=FutureWarning)  # torch deprecates the all_gather ST calls
    torch.set_num_threads(1)  # two processes on a shared 2-core machine
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD_SIZE)
    try:
        model, guide = _model_and_guide(model_path)
        m3_model = _m3_model(m3_path)
        rows = slice(rank * PER_RANK, (rank + 1) * PER_RANK)
        results = {}
        for config in CONFIGS:
            config_model, config_guide = (m3_model, None) if is_m3(config) else (model, guide)
            loss, grads, loss_fn = _ddp_step(config_model, config_guide, config, rows)
            results[str(config)] = {"loss": loss, "grads": grads}
            if config.precomputed_guide:
                results[str(config)]["guide_misses"] = loss_fn.guide.misses
            results[str(config)]["misaligned_loss"] = _loss_with_rank_offset_zero(config_model, guide, config, rows)
            if config.contrast_anchors:
                results[str(config)]["local_anchors_loss"] = _loss_with_local_anchors(model, guide, config, rows)
            if is_m3(config):  # FlagEmbedding's gathering: dense candidates only
                dense_only, *_ = _ddp_step(m3_model, None, config, rows, m3_flagembedding_compatible=True)
                results[str(config)]["dense_only_gathered_loss"] = dense_only
        torch.save(results, Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def ranks(tiny_bert_path, tiny_xlmr_path, tmp_path_factory) -> list[dict]:
    """Each rank's results for every configuration, from one `mp.spawn` of two gloo workers."""
    out_dir = tmp_path_factory.mktemp("ddp")
    paths = (str(tiny_bert_path), str(tiny_xlmr_path), str(out_dir))
    mp.spawn(_worker, args=(_free_port(), *paths), nprocs=WORLD_SIZE, join=True)
    return [torch.load(out_dir / f"rank{rank}.pt") for rank in range(WORLD_SIZE)]


@pytest.fixture(scope="module")
def model_and_guide(tiny_bert_path):
    return _model_and_guide(str(tiny_bert_path))


@pytest.fixture(scope="module")
def one_process(model_and_guide, tiny_xlmr_path) -> dict[str, tuple[float, dict[str, torch.Tensor]]]:
    """The reference: loss and gradients of one process (no process group) on all 8 rows, per configuration.

    Computed on one thread, as the workers are, so that both sides run the same CPU kernels.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    m3 = (_m3_model(str(tiny_xlmr_path)), None)
    try:
        return {
            str(c): _loss_and_grads(
                *(m3 if is_m3(c) else model_and_guide), c._replace(precomputed_guide=False), slice(None), world_size=1
            )[:2]
            for c in CONFIGS
        }
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize("config", CONFIGS, ids=str)
def test_ddp_loss_and_gradients_equal_one_process(ranks, one_process, config):
    """The mean of the ranks' losses is the one-process loss; the DDP-averaged gradients are its gradients."""
    loss, grads = one_process[str(config)]
    rank_losses = [r[str(config)]["loss"] for r in ranks]
    assert sum(rank_losses) / WORLD_SIZE == pytest.approx(loss, rel=LOSS_RTOL, abs=LOSS_ATOL)
    for r in ranks:
        ddp_grads = r[str(config)]["grads"]
        assert ddp_grads.keys() == grads.keys()
        for name, grad in grads.items():
            torch.testing.assert_close(
                ddp_grads[name], grad, rtol=GRAD_RTOL, atol=GRAD_ATOL, msg=lambda m, n=name: f"{n}: {m}"
            )
    # The gradients are far from zero, so matching them within GRAD_ATOL is not vacuous.
    assert max(grad.abs().max().item() for grad in grads.values()) > 100 * GRAD_ATOL


def test_precomputed_guide_answers_every_input_on_each_rank(ranks):
    for config in (c for c in CONFIGS if c.precomputed_guide):
        assert [r[str(config)]["guide_misses"] for r in ranks] == [0] * WORLD_SIZE, config


@pytest.mark.parametrize("config", CONFIGS, ids=str)
def test_misaligned_labels_would_be_caught(ranks, one_process, config):
    """Mutation check: with the labels not offset by the rank, rank 1's loss (and the mean) moves far off.

    Rank 0's offset is 0 either way, so its loss must not move: the change is rank 1's anchors now targeting
    rank 0's positives, exactly the misalignment the equality test must rule out.
    """
    loss, _ = one_process[str(config)]
    rank0, rank1 = (r[str(config)] for r in ranks)
    assert rank0["misaligned_loss"] == pytest.approx(rank0["loss"], rel=LOSS_RTOL, abs=LOSS_ATOL)
    # Measured shifts: 0.5-3.6 (the fixture's tokenizer, hence the exact texts' ids, varies from run to run);
    # 0.01 is four orders of magnitude above the float noise the equality test tolerates.
    assert abs(rank1["misaligned_loss"] - rank1["loss"]) > 0.01
    misaligned_mean = (rank0["misaligned_loss"] + rank1["misaligned_loss"]) / WORLD_SIZE
    assert misaligned_mean != pytest.approx(loss, rel=LOSS_RTOL, abs=LOSS_ATOL)


@pytest.mark.parametrize("columns", [2, 3])
def test_each_rank_scores_its_own_anchors_against_the_global_candidates(ranks, model_and_guide, columns):
    """Each rank's MNRL loss, recomputed by hand from the one-process embeddings.

    Rank r's loss is the mean cross-entropy of its own anchors over all 8 positives (and 8 negatives), the target
    of local anchor i being global row 4r + i: a rank-1 anchor's target is its own rank-1 positive.
    """
    model, _ = model_and_guide
    with torch.no_grad():
        embeddings = [model(feature)["sentence_embedding"] for feature in _features(model, slice(None), columns)]
    anchors, candidates = embeddings[0], torch.cat(embeddings[1:])  # candidates: positives, then negatives
    scale = 1.0 / LossArguments().temperature
    logits = scale * F.normalize(anchors, dim=-1) @ F.normalize(candidates, dim=-1).T
    per_anchor = F.cross_entropy(logits, torch.arange(len(ROWS)), reduction="none")
    for rank, results in enumerate(ranks):
        for loss_name in ("mnrl", "cached_mnrl"):
            expected = per_anchor[rank * PER_RANK : (rank + 1) * PER_RANK].mean().item()
            actual = results[str(Config(loss_name, columns))]["loss"]
            assert actual == pytest.approx(expected, rel=LOSS_RTOL, abs=LOSS_ATOL), (loss_name, rank)


@pytest.mark.parametrize("config", M3_CONFIGS, ids=str)
def test_m3_sparse_and_colbert_gathered_too_unlike_flagembedding(ranks, one_process, config):
    """Gathering only the dense candidates (FlagEmbedding's way, `m3_flagembedding_compatible`) leaves sparse and
    ColBERT with each process's own candidates: 2 processes no longer train as 1, which st-bge's default does."""
    loss, _ = one_process[str(config)]
    dense_only_mean = sum(r[str(config)]["dense_only_gathered_loss"] for r in ranks) / WORLD_SIZE
    assert abs(dense_only_mean - loss) > 0.005


@pytest.mark.parametrize("config", ANCHOR_CONTRAST, ids=str)
def test_anchor_contrast_would_be_caught_per_device(ranks, one_process, config):
    """Mutation check: without st-bge's anchor gathering (as sentence-transformers' GIST runs), the anchor-anchor
    term compares each anchor with its own process's anchors only, and the mean loss moves off the one-process loss.

    If this fails, sentence-transformers gathers the anchors itself now and `_GISTSimilarities` need not gather them.
    """
    loss, _ = one_process[str(config)]
    local_mean = sum(r[str(config)]["local_anchors_loss"] for r in ranks) / WORLD_SIZE
    # Measured shifts: 0.04-0.23 over four runs (the fixture's tokenizer varies); 0.005 is three orders of magnitude
    # above the float noise of the equality test.
    assert abs(local_mean - loss) > 0.005
