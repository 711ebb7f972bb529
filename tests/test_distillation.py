"""Distillation from a teacher's scores: reading and checking them, `st-bge data score`, and the kd losses (equal to
FlagEmbedding's)."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import NO_EVAL_DURING_TRAINING, RECIPES, flags
from m3_batch import NEGATIVES, POSITIVES, QUERIES, assert_same, columns, flagembedding
from sentence_transformers import CrossEncoder

from st_bge.cli import main
from st_bge.data.formats import SCORES_COLUMN
from st_bge.data.sources import read_records
from st_bge.errors import DataError
from st_bge.m3 import BGEM3Model, CachedM3UnifiedLoss, M3UnifiedLoss

TEACHER = [[4.0, 1.0, -2.0], [3.0, 3.5, 0.0], [2.0, -1.0, 1.5], [5.0, 0.5, 0.25]]  # a reranker's raw scores


def write_lines(path, lines):
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def scored_lines():
    return [
        {"query": q, "pos": [p], "neg": n, "pos_scores": [s[0]], "neg_scores": s[1:]}
        for q, p, n, s in zip(QUERIES, POSITIVES, NEGATIVES, TEACHER, strict=True)
    ]


def test_scores_become_a_column_of_positive_then_negative_scores(tmp_path):
    from st_bge.data.formats import flagembedding_to_dataset

    rows = flagembedding_to_dataset(read_records(write_lines(tmp_path / "kd.jsonl", scored_lines())))
    assert rows.column_names == ["anchor", "positive", "negative_1", "negative_2", SCORES_COLUMN]
    assert rows[SCORES_COLUMN] == TEACHER


@pytest.mark.parametrize(
    ("change", "field", "message"),
    [
        ({"pos_scores": [1.0, 2.0]}, "pos_scores", "2 scores for 1 positives: one score per text"),
        ({"neg_scores": [1.0]}, "neg_scores", "1 scores for 2 negatives: one score per text"),
        ({"neg_scores": [1.0, "high"]}, "neg_scores[1]", "expected a number, got 'high'"),
        ({"pos_scores": 0.9}, "pos_scores", "expected a list of numbers, got float"),
    ],
)
def test_bad_teacher_scores_name_the_line_and_field(tmp_path, change, field, message):
    from st_bge.data.formats import flagembedding_to_dataset

    lines = scored_lines()
    lines[2] = {**lines[2], **change}
    path = write_lines(tmp_path / "kd.jsonl", lines)
    with pytest.raises(DataError) as error:
        flagembedding_to_dataset(read_records(path))
    assert str(error.value) == f"{path}, line 3, field '{field}': {message}"


def test_scores_on_some_lines_only_is_a_missing_field(tmp_path):
    from st_bge.data.formats import flagembedding_to_dataset

    lines = scored_lines()
    del lines[1]["neg_scores"]
    path = write_lines(tmp_path / "kd.jsonl", lines)
    with pytest.raises(DataError, match=r"line 2, field 'neg_scores': missing field"):
        flagembedding_to_dataset(read_records(path))


@pytest.mark.parametrize("kd_loss", ["kl_div", "m3_kd_loss"])
@pytest.mark.parametrize("unified", [True, False])
def test_kd_losses_equal_flagembeddings(m3_no_dropout_path, kd_loss, unified):
    teacher = [score for row in TEACHER for score in row]  # FlagEmbedding's teacher_scores: one per passage
    reference = flagembedding(m3_no_dropout_path, teacher, unified_finetuning=unified, kd_loss_type=kd_loss)
    heads = ["dense", "sparse", "colbert"] if unified else ["dense"]
    for loss_class, kwargs in ((M3UnifiedLoss, {}), (CachedM3UnifiedLoss, {"mini_batch_size": 2})):
        model = BGEM3Model(str(m3_no_dropout_path))
        model.train()
        loss_fn = loss_class(
            model, heads=heads, self_distill=False, flagembedding_compatible=True, kd_loss=kd_loss, **kwargs
        )
        loss = loss_fn(columns(model, 48), torch.tensor(TEACHER))
        loss.backward()
        grads = {name: p.grad for name, p in model.named_parameters() if p.grad is not None}
        assert_same((loss.item(), grads), reference)


def test_kd_without_scores_is_one_message(m3_no_dropout_path):
    model = BGEM3Model(str(m3_no_dropout_path))
    with pytest.raises(ValueError, match="kd_loss 'kl_div' needs a teacher's score per positive and negative"):
        M3UnifiedLoss(model, kd_loss="kl_div")(columns(model), None)


@pytest.fixture(scope="module")
def tiny_reranker(tiny_bert_path, tmp_path_factory):
    """A cross-encoder (one logit) on the tiny BERT, saved as sentence-transformers saves one."""
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("models") / "tiny-reranker"
    CrossEncoder(str(tiny_bert_path), num_labels=1).save(str(folder))
    return folder


def test_data_score_end_to_end_then_distil(tiny_reranker, tiny_bert_path, tmp_path, capsys, caplog):
    data = write_lines(
        tmp_path / "plain.jsonl", [{k: v for k, v in line.items() if "scores" not in k} for line in scored_lines()]
    )
    argv = [
        "data",
        "score",
        str(data),
        *flags(
            score_cross_encoder=tiny_reranker, score_output_dir=tmp_path / "scored", score_cache_dir=tmp_path / "cache"
        ),
    ]
    assert main(argv) == 0, capsys.readouterr().err
    lines = [json.loads(line) for line in (tmp_path / "scored" / "plain.jsonl").read_text().splitlines()]
    teacher = CrossEncoder(str(tiny_reranker))
    for line in lines:
        pairs = [(line["query"], text) for text in line["pos"] + line["neg"]]
        expected = teacher.predict(pairs, activation_fn=torch.nn.Identity()).tolist()
        assert line["pos_scores"] + line["neg_scores"] == pytest.approx(expected, abs=1e-5)
    report = json.loads((tmp_path / "scored" / "score_report.json").read_text())
    assert report["plain"]["rows"] == 4 and report["plain"]["pairs_scored"] == 12
    assert not report["plain"]["from_cache"]

    # Again, with the same teacher and pairs: from the cache, the same file.
    caplog.set_level("INFO", logger="st_bge")
    argv_again = [*argv, "--overwrite_output_dir", "true"]
    assert main(argv_again) == 0
    assert "Teacher scores from cache" in caplog.text
    assert [json.loads(line) for line in (tmp_path / "scored" / "plain.jsonl").read_text().splitlines()] == lines

    # The scored file trains a dense model with FlagEmbedding's kl_div term added to MNRL.
    output = tmp_path / "kd-run"
    train_argv = flags(
        model_name_or_path=tiny_bert_path,
        dataset_name_or_path=tmp_path / "scored" / "plain.jsonl",
        loss="mnrl",
        kd_loss="kl_div",
        eval_split_size=0,
        max_steps=1,
        per_device_train_batch_size=4,
        output_dir=output,
        **NO_EVAL_DURING_TRAINING,
    )
    assert main(["train", str(RECIPES / "quickstart.yaml"), *train_argv]) == 0
    assert '`kd_loss: "kl_div"`' in (output / "README.md").read_text()


def test_st_losses_take_the_scores_as_labels(tiny_bert_path, tmp_path):
    data = write_lines(tmp_path / "kd.jsonl", scored_lines())
    for kd_loss, expected in (("distill_kl_div", "DistillKLDivLoss"), ("margin_mse", "MarginMSELoss")):
        argv = flags(
            model_name_or_path=tiny_bert_path,
            dataset_name_or_path=data,
            loss="mnrl",
            kd_loss=kd_loss,
            eval_split_size=0,
            max_steps=1,
            per_device_train_batch_size=4,
            output_dir=tmp_path / kd_loss,
            **NO_EVAL_DURING_TRAINING,
        )
        assert main(["train", str(RECIPES / "quickstart.yaml"), *argv]) == 0
        assert f"loss:{expected}" in (tmp_path / kd_loss / "README.md").read_text()


def test_kd_on_data_without_scores_stops_before_training(tiny_bert_path, tmp_path, capsys):
    data = write_lines(
        tmp_path / "plain.jsonl", [{"anchor": q, "positive": p} for q, p in zip(QUERIES, POSITIVES, strict=True)]
    )
    argv = flags(model_name_or_path=tiny_bert_path, dataset_name_or_path=data, loss="mnrl", kd_loss="m3_kd_loss")
    assert main(["train", str(RECIPES / "quickstart.yaml"), *argv, "--output_dir", str(tmp_path / "x")]) == 2
    assert capsys.readouterr().err.splitlines()[-1] == (  # after the datasets progress bars
        f"st-bge: error: kd_loss 'm3_kd_loss' needs a teacher's scores, which {data} has not: FlagEmbedding lines "
        "with pos_scores / neg_scores (st-bge data score --score_cross_encoder <reranker> writes them)"
    )
