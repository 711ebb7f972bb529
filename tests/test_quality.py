"""The data quality report on small hand-made datasets: each finding with exact counts, the verdict, the files."""

from __future__ import annotations

import json

import pytest
from datasets import Dataset

from st_bge.data.quality import check_quality
from st_bge.data.retrieval_set import RetrievalSet, load_beir
from st_bge.data.text import normalise

CLEAN = {
    "anchor": ["How do I reset my password?", "What is the refund policy?", "When does my order ship?"],
    "positive": [
        "Open the account settings and choose 'reset password'.",
        "Refunds are paid within 30 days of the purchase.",
        "Orders leave the warehouse within two working days.",
    ],
    "negative": [
        "Passwords must have at least twelve characters.",
        "Gift cards cannot be exchanged for cash.",
        "Express delivery costs five euros extra.",
    ],
}


def rows(**columns: list[str]) -> Dataset:
    return Dataset.from_dict(columns)


def counts(report, *keys: str) -> dict[str, int]:
    return {key: report.finding(key).count for key in keys}


def test_normalise_folds_width_case_punctuation_and_spaces():
    assert normalise("  Ｈｅｌｌｏ,\tWORLD!  ") == "hello world"
    assert normalise("N/A") == "na"
    assert normalise("...") == normalise(" - ") == ""


def test_clean_data_is_ok():
    report = check_quality(rows(**CLEAN))
    assert report.verdict == "ok"
    assert report.reasons == []
    assert all(finding.count == 0 for finding in report.findings)
    assert report.counts == {
        "rows": 3,
        "distinct_anchors": 3,
        "distinct_anchors_normalised": 3,
        "distinct_positives": 3,
        "negatives_per_row": 1,
    }
    assert "No threshold reached." in report.to_markdown()


def test_duplicates_exact_and_after_normalisation():
    long_answer = "Open the account settings, choose security, then 'reset password' and follow the link we email you."
    report = check_quality(
        rows(
            anchor=[
                "How do I reset my password?",
                "How do I reset my password?",
                "how do I reset my PASSWORD",
                "How do I reset my password?",
                "Refund policy?",
            ],
            positive=[long_answer, long_answer, long_answer.upper(), "Use the link in the email.", "Within 30 days."],
        )
    )
    assert counts(report, "duplicate_rows", "duplicate_pairs", "duplicate_rows_normalised", "anchor_variants") == {
        "duplicate_rows": 1,  # row 1
        "duplicate_pairs": 1,  # row 1 (row 3 has another positive)
        "duplicate_rows_normalised": 2,  # rows 1 and 2
        "anchor_variants": 1,  # 'how do I reset my PASSWORD' of 3 distinct anchors
    }
    assert report.finding("anchor_variants").total == 3
    assert report.finding("duplicate_rows_normalised").share == pytest.approx(2 / 5)
    example = report.finding("duplicate_rows").examples[0]
    assert example.startswith('train[1] repeats train[0]: "How do I reset my password?" → "Open the account')
    assert example.endswith('…"') and len(example) < len(long_answer) + 60  # the answer is cut to 80 characters
    assert report.verdict == "warn"
    assert [reason.split(":")[1].strip() for reason in report.reasons] == [
        "duplicate rows after normalisation",
        "distinct anchors equal to another after normalisation",
    ]


def test_empty_and_very_short_texts_per_column():
    report = check_quality(
        rows(
            anchor=["...", "N/A", "ok", "How long is the warranty?"],
            positive=["Two years.", "Twelve months.", "Yes, it is.", "Two years from the date of purchase."],
            negative=["-", "No warranty on batteries.", "Call us.", "Batteries: six months."],
        )
    )
    empty, short = report.finding("empty_texts"), report.finding("short_texts")
    assert (empty.count, empty.total, empty.by_column) == (2, 12, {"anchor": 1, "negatives": 1})
    assert (short.count, short.by_column) == (2, {"anchor": 2})
    assert empty.examples == ['train[0] anchor: "..."', 'train[0] negative: "-"']
    assert short.examples == ['train[1] anchor: "N/A"', 'train[2] anchor: "ok"']
    assert report.verdict == "warn"
    assert len(report.reasons) == 2


PASSWORD = "The password can be reset from the account settings page, under the security tab, at any time of day."
REFUND = "Refunds are paid within 30 days of the purchase, to the card that was used to pay for the order."


def test_false_negatives_equal_and_near_identical():
    report = check_quality(
        rows(
            anchor=["reset password", "reset password", "refund policy", "shipping time"],
            positive=[PASSWORD, "Call support to reset it.", REFUND, "Orders ship in two days."],
            negative=[
                PASSWORD,  # the row's own positive
                PASSWORD.lower().replace(",", ""),  # the anchor's other positive, after normalisation
                REFUND.replace("30", "31"),  # one character changed
                "Returns are free for members.",
            ],
        )
    )
    assert counts(
        report, "negative_equals_positive", "negative_equals_positive_normalised", "negative_near_positive"
    ) == {"negative_equals_positive": 1, "negative_equals_positive_normalised": 2, "negative_near_positive": 1}
    assert report.finding("negative_near_positive").examples[0].startswith("train[2] negative:")
    assert "3-gram Jaccard 0.9" in report.finding("negative_near_positive").examples[0]
    assert report.verdict == "fail"
    assert report.reasons[0].startswith("fail: negative equal to a positive of its anchor after normalisation: 2 of 4")
    assert report.reasons[1].startswith("warn: negative near-identical to its positive")


@pytest.mark.parametrize(("clean_rows", "verdict"), [(99, "fail"), (199, "warn")])
def test_false_negatives_fail_from_one_percent(clean_rows, verdict):
    anchors = [f"question {i}" for i in range(clean_rows)] + ["the bad one"]
    positives = [f"answer number {i}" for i in range(clean_rows)] + ["the same text"]
    negatives = [f"unrelated passage {i}" for i in range(clean_rows)] + ["The same text!"]
    report = check_quality(rows(anchor=anchors, positive=positives, negative=negatives))
    assert report.finding("negative_equals_positive_normalised").count == 1
    assert report.verdict == verdict
    assert report.reasons[0].startswith(f"{verdict}: negative equal to a positive of its anchor after normalisation")


def test_no_negative_columns_skips_the_negative_checks():
    report = check_quality(rows(anchor=CLEAN["anchor"], positive=CLEAN["positive"]))
    assert not any(finding.section == "Negatives" for finding in report.findings)
    assert "## Negatives\n\nNo negative columns." in report.to_markdown()


def test_queries_that_are_also_documents():
    report = check_quality(
        rows(
            anchor=["What is BM25?", "bm25 is a ranking function", "Dense retrieval", "Sparse retrieval"],
            positive=["BM25 is a ranking function.", "It scores by term frequency.", "Embeds texts.", "Counts terms."],
            negative=["Cosine similarity.", "Dot products.", "Inverted index.", "Dense retrieval!"],
        )
    )
    finding = report.finding("queries_as_documents")
    assert (finding.count, finding.total) == (2, 4)
    assert finding.examples == [
        'train[1] anchor "bm25 is a ranking function" is train[0] positive',
        'train[2] anchor "Dense retrieval" is train[3] negative',
    ]
    assert report.verdict == "warn"


def test_script_mix_of_chinese_english_and_russian():
    report = check_quality(
        rows(
            anchor=["如何重置密码？", "退款政策是什么", "How do I reset my password?", "Как сбросить пароль"],
            positive=["在设置页面中重置密码。", "用 settings 页面", "Open the settings page.", "2024"],
        )
    )
    assert report.script_mix == {
        "anchor": {"Han": 0.5, "Latin": 0.25, "Cyrillic": 0.25},
        "positive": {"Latin": 0.5, "Han": 0.25, "no letters": 0.25},  # 'settings' outnumbers 3 Han letters
    }
    assert "| Han | 50.0% | 25.0% |" in report.to_markdown()


def test_token_lengths_and_truncation_with_the_tiny_tokenizer(tiny_bert_path):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_bert_path)
    long_code = "def sort_numbers(xs): return sorted(xs) " * 4
    data = rows(
        anchor=["sort a list", "reverse a string", "sum a list", "largest element"],
        positive=[long_code, "total(xs)", long_code + "# again", "max"],
    )
    report = check_quality(data, tokenizer=tokenizer, max_seq_length=12)

    def length(text: str) -> int:
        return len(tokenizer(text)["input_ids"])

    assert length("max") == len(tokenizer("max", add_special_tokens=False)["input_ids"]) + 2  # [CLS], [SEP]
    positive = report.token_lengths["positive"]
    assert positive.max == length(long_code + "# again") > 12
    assert positive.p50 == sorted(map(length, data["positive"]))[1]
    assert (positive.truncated, positive.truncated_share) == (2, 0.5)
    assert report.token_lengths["anchor"].truncated == 0
    assert report.metrics["truncated"] == 0.5
    assert report.verdict == "warn"
    assert report.reasons[0].startswith("warn: texts longer than max_seq_length=12: 50.0%")
    assert "## Token lengths (special tokens included, max_seq_length 12)" in report.to_markdown()


def test_token_lengths_are_skipped_without_a_tokenizer():
    report = check_quality(rows(**CLEAN))
    assert report.token_lengths is None
    assert "Skipped: no tokenizer given." in report.to_markdown()


def test_train_eval_overlap_after_normalisation_and_by_grade():
    eval_set = RetrievalSet(
        queries={"q1": "How do I reset my password?", "q2": "Unrelated question", "q3": "What is the refund policy"},
        corpus={"d1": "Open settings and choose reset.", "d2": "Something else", "d3": "refunds within 30 days"},
        qrels={"q1": {"d1": 1}, "q2": {"d2": 2, "d3": 0}, "q3": {"d2": 1}},
        name="toy-eval",
    )
    train = rows(
        anchor=["how do i reset my password", "What is the refund policy?"],
        positive=["Open settings and choose reset.", "Refunds within 30 days."],
    )
    report = check_quality(train, eval_set)
    overlap = {f.key: (f.count, f.total) for f in report.findings if f.section == "Train/eval overlap"}
    assert overlap == {
        "eval_queries_in_train": (2, 3),  # q1 and q3
        "eval_documents_in_train": (1, 2),  # d1 of the relevant d1, d2 (d3 is judged 0)
        "eval_pairs_in_train": (1, 3),  # q1 -> d1
    }
    assert report.has_eval_overlap
    assert report.counts["eval_queries"] == 3 and report.counts["eval_corpus"] == 3
    assert report.verdict == "warn"
    assert [reason.split(":")[1].strip() for reason in report.reasons] == [
        "eval queries that are training anchors",
        "relevant eval documents that are training positives",
    ]
    assert "## Train/eval overlap (eval set: toy-eval)" in report.to_markdown()


def test_beir_split_by_query_has_no_overlap_but_all_of_it_does(beir_folder):
    train = load_beir(beir_folder, "train").to_training_dataset()
    assert not check_quality(train, load_beir(beir_folder, "test")).has_eval_overlap
    report = check_quality(train, load_beir(beir_folder, "all"))
    assert report.finding("eval_pairs_in_train").count == 8
    assert report.has_eval_overlap
    assert not check_quality(train).has_eval_overlap


@pytest.mark.parametrize("n_rows", [0, 1])
def test_fewer_than_two_rows_fail(n_rows):
    report = check_quality(rows(anchor=CLEAN["anchor"][:n_rows], positive=CLEAN["positive"][:n_rows]))
    assert report.verdict == "fail"
    assert report.reasons == [
        f"fail: {n_rows} rows (< 2): contrastive losses need at least 2 rows: each row's in-batch negatives are the "
        "other rows' positives"
    ]


def test_save_writes_json_and_markdown(tmp_path):
    data = dict(CLEAN, negative=[*CLEAN["negative"][:2], CLEAN["positive"][2]])
    report = check_quality(rows(**data), name="support-faq")
    json_path, markdown_path = report.save(tmp_path / "out")
    assert (json_path.name, markdown_path.name) == ("data_quality.json", "data_quality.md")
    saved = json.loads(json_path.read_text(encoding="utf-8"))
    assert saved == report.to_dict()
    assert saved["verdict"] == "fail"
    assert saved["findings"][0]["key"] == "duplicate_rows"
    markdown = markdown_path.read_text(encoding="utf-8")
    assert markdown.startswith("# Data quality: support-faq — fail\n")
    assert "| negative equal to a positive of its anchor | 1 | 3 rows | 33.3% |" in markdown


def test_text_in_a_script_the_recipes_language_is_not_written_in_warns():
    """19% Chinese text under `language: [en]` passed as 'ok'."""
    rows = [(f"how to sort list {i}", f"sorted(xs) number {i}") for i in range(8)] + [
        ("如何排序", "使用排序函数"),
        ("如何反转字符串", "使用切片反转"),
    ]
    train = Dataset.from_dict({"anchor": [a for a, _ in rows], "positive": [p for _, p in rows]})
    report = check_quality(train, language=["en"])
    finding = report.finding("texts_outside_language")
    assert (finding.count, finding.total) == (4, 20) and finding.by_column == {"anchor": 2, "positive": 2}
    assert report.verdict == "warn"
    assert any("texts in a script en is not written in: 4 of 20 texts (20.0%" in r for r in report.reasons)
    assert any("use a multilingual base model (BAAI/bge-m3" in r for r in report.reasons)
    assert check_quality(train, language=["en", "zh"]).verdict == "ok"
    assert "texts_outside_language" not in {f.key for f in check_quality(train).findings}  # no language: unchecked
