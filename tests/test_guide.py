"""The precomputed GIST guide (`st_bge.guide`) gives the per-step guide's loss and gradients, and is cached safely.

The loss side of the equality: each GIST loss computed twice on the same collated batch, once with the guide run
at the step (as sentence-transformers does) and once answered from the table. The data side: the table is built
from the same collator over the same rows, with an anchor prompt and a hard-negative column (as mining writes),
and with a guide that reads other tokens (the retokenizing path).
"""

from __future__ import annotations

import pytest
import torch
from conftest import TOPICS, redraw_weights, train_two_steps
from datasets import Dataset
from sentence_transformers import SentenceTransformer
from sentence_transformers.sentence_transformer.data_collator import SentenceTransformerDataCollator

from st_bge.config import LossArguments, ModelArguments
from st_bge.guide import PrecomputedGuide, precompute_guide
from st_bge.losses import build_loss
from st_bge.modeling import frozen_copy, load_model

QUERIES, CODES = (list(column) for column in zip(*TOPICS.values(), strict=True))
# A hard negative per row that is no other row's text: GIST with margin 0 masks a candidate the guide scores above
# the positive, so a duplicate of the positive ties with it and its fate would rest on float rounding (training's
# no_duplicates sampler and mining keep duplicates out of a batch).
ROWS = {"anchor": QUERIES, "positive": CODES, "negative": [code.replace("return", "yield") for code in CODES]}
PROMPTS = {"anchor": "query: "}


def _model(path) -> SentenceTransformer:
    model = load_model(ModelArguments(model_name_or_path=str(path)))
    model.eval()  # no dropout: both sides of an equality see the same forward pass
    redraw_weights(model, seed=0)
    return model


def _guide(path) -> SentenceTransformer:
    guide = frozen_copy(load_model(ModelArguments(model_name_or_path=str(path))))
    redraw_weights(guide, seed=1)  # a guide of its own, so that it masks some candidates and not others
    return guide


def _batch(collator, rows: dict[str, list[str]]) -> list[dict]:
    """The loss's input for these rows, as the Trainer makes it: the collator's `<column>_*` features per column."""
    batch = collator([dict(zip(rows, values, strict=True)) for values in zip(*rows.values(), strict=True)])
    return [{k.removeprefix(f"{c}_"): v for k, v in batch.items() if k.startswith(f"{c}_")} for c in rows]


def _loss_and_grads(model, loss_fn, features) -> tuple[float, dict[str, torch.Tensor]]:
    model.zero_grad(set_to_none=True)
    loss = loss_fn([dict(f) for f in features], labels=None)
    loss.backward()
    return loss.item(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("guide_kind", ["same_tokenizer", "other_tokenizer"])
@pytest.mark.parametrize(
    ("loss_name", "mini_batch_size"), [("gist", 32), ("cached_gist", 3), ("cached_gist", 32)], ids=str
)
def test_precomputed_guide_gives_the_per_step_loss_and_gradients(
    loss_name, mini_batch_size, guide_kind, tiny_bert_path, tiny_xlmr_path
):
    model = _model(tiny_bert_path)
    guide = _guide(tiny_bert_path if guide_kind == "same_tokenizer" else tiny_xlmr_path)
    collator = SentenceTransformerDataCollator(preprocess_fn=model.preprocess, prompts=PROMPTS)
    data = Dataset.from_dict(ROWS)
    features = _batch(collator, {column: texts[:8] for column, texts in ROWS.items()})

    loss_fn = build_loss(model, LossArguments(loss=loss_name, mini_batch_size=mini_batch_size), guide=guide)
    assert loss_fn.must_retokenize is (guide_kind == "other_tokenizer")
    per_step = _loss_and_grads(model, loss_fn, features)
    loss_fn.guide = precompute_guide(loss_fn, collator, data, batch_size=5, use_cache=False)
    precomputed = _loss_and_grads(model, loss_fn, features)

    assert loss_fn.guide.misses == 0 and loss_fn.guide.hits == 3 * 8  # every guide input answered from the table
    assert precomputed[0] == pytest.approx(per_step[0], rel=1e-5)
    for name, grad in per_step[1].items():
        torch.testing.assert_close(precomputed[1][name], grad, rtol=1e-4, atol=1e-5, msg=lambda m, n=name: f"{n}: {m}")
    assert max(grad.abs().max().item() for grad in per_step[1].values()) > 1.0  # far above the tolerance


def test_an_input_not_in_the_table_is_embedded_by_the_guide_and_counted(tiny_bert_path):
    model, guide = _model(tiny_bert_path), _guide(tiny_bert_path)
    collator = SentenceTransformerDataCollator(preprocess_fn=model.preprocess, prompts=PROMPTS)
    loss_fn = build_loss(model, LossArguments(loss="gist"), guide=guide)
    loss_fn.guide = precompute_guide(loss_fn, collator, Dataset.from_dict(ROWS).select(range(4)), use_cache=False)
    features = _batch(collator, {column: texts[2:6] for column, texts in ROWS.items()})  # rows 4 and 5 are new
    with torch.no_grad():
        expected = guide(dict(features[0]))["sentence_embedding"]
        answered = loss_fn.guide(dict(features[0]))["sentence_embedding"]
    assert loss_fn.guide.misses == 2
    torch.testing.assert_close(answered, expected)


def _count_forwards(module: torch.nn.Module) -> list[int]:
    calls = [0]
    module.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    return calls


def test_guide_cache_hits_on_a_second_run_and_is_new_for_another_guide_or_other_data(tiny_bert_path, tmp_path):
    model, guide = _model(tiny_bert_path), _guide(tiny_bert_path)
    collator = SentenceTransformerDataCollator(preprocess_fn=model.preprocess, prompts=PROMPTS)
    data = Dataset.from_dict(ROWS)
    loss_fn = build_loss(model, LossArguments(loss="cached_gist"), guide=guide)
    forwards = _count_forwards(guide)

    first = precompute_guide(loss_fn, collator, data, cache_folder=tmp_path)
    assert forwards[0] > 0 and len(list(tmp_path.iterdir())) == 1
    forwards[0] = 0
    second = precompute_guide(loss_fn, collator, data, cache_folder=tmp_path)
    assert forwards[0] == 0  # read from the cache: the guide did not run
    torch.testing.assert_close(second.embeddings, first.embeddings, rtol=0, atol=0)

    other_data = data.map(lambda row: {"anchor": row["anchor"] + "?"})
    precompute_guide(loss_fn, collator, other_data, cache_folder=tmp_path)
    assert forwards[0] > 0 and len(list(tmp_path.iterdir())) == 2
    other_prompt = SentenceTransformerDataCollator(preprocess_fn=model.preprocess, prompts={"anchor": "q: "})
    precompute_guide(loss_fn, other_prompt, data, cache_folder=tmp_path)
    assert len(list(tmp_path.iterdir())) == 3
    with torch.no_grad():
        next(guide.parameters()).add_(0.01)  # another guide: other weights
    forwards[0] = 0
    third = precompute_guide(loss_fn, collator, data, cache_folder=tmp_path)
    assert forwards[0] > 0 and len(list(tmp_path.iterdir())) == 4
    assert not torch.allclose(third.embeddings, first.embeddings)


def test_training_answers_every_guide_input_from_the_table_and_trains_as_the_per_step_guide(
    spread_bert_path, beir_folder, tmp_path, monkeypatch
):
    """Two seeded steps with mined hard negatives (a third column) and the query prompt, with and without the
    precomputed guide: the same logged losses and weights.

    The table's embeddings equal the per-step guide's to float rounding (about 1e-7: other batches, other padding),
    and GIST masks by a hard threshold, so the model (and its frozen copy, the guide) is `spread_bert_path`: with
    the fixture's near-equal cosines a candidate within 1e-7 of its positive flipped the mask now and then."""
    monkeypatch.setenv("ST_BGE_CACHE", str(tmp_path / "cache"))
    fields = {
        "loss": "cached_gist",
        "mine_hard_negatives": True,
        "mine_num_negatives": 1,
        "mine_relative_margin": 0.0,  # the tiny model's scores are close: keep what it mines
        "query_prompt": "q: ",
    }
    precomputed = train_two_steps(spread_bert_path, beir_folder, tmp_path / "on", **fields)
    per_step = train_two_steps(spread_bert_path, beir_folder, tmp_path / "off", gist_precompute_guide=False, **fields)

    table = precomputed.trainer.loss.guide
    assert isinstance(table, PrecomputedGuide) and not isinstance(per_step.trainer.loss.guide, PrecomputedGuide)
    rows = precomputed.trainer.train_dataset
    assert rows.column_names == ["anchor", "positive", "negative_1"]  # the mined negative is a third column
    # 2 steps of up to 4 rows (the no_duplicates sampler may hold a row back), 3 columns each, none missed
    assert table.misses == 0 and table.hits % 3 == 0 and 2 * 3 <= table.hits <= 2 * 4 * 3
    logged = [[e["loss"] for e in r.trainer.state.log_history if "loss" in e] for r in (precomputed, per_step)]
    assert len(logged[0]) == 2 and logged[0] == pytest.approx(logged[1], rel=1e-5)
    after = per_step.model.state_dict()
    for name, tensor in precomputed.model.state_dict().items():
        torch.testing.assert_close(tensor, after[name], rtol=1e-4, atol=1e-6)
    assert (tmp_path / "cache" / "guide").is_dir()
