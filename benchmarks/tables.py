"""RESULTS.md's tables, written from the records the benchmarks printed (see suite.py).

One writer per benchmark, each a function of the stored records alone, and the splice that puts each writer's
output, under a header saying when, where and how it was measured, into its block of RESULTS.md. Nothing here
measures: `python benchmarks/bench.py render` turns the same results into the same file.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

from st_bge.evaluation.comparison import RetrievalComparison
from st_bge.markdown import markdown_table
from st_bge.storage import write_text_atomically
from st_bge.synthesis import report_rows

BLOCK = re.compile(r"<!-- bench:(?P<name>[\w-]+) -->\n(?P<body>.*?)<!-- /bench:(?P=name) -->", re.DOTALL)


# --------------------------------------------------------------------------------------------------- render


def header(stored: Mapping) -> str:
    """When, on what and by which commands a result was measured: the first lines of its block."""
    versions = ", ".join(f"{library} {version}" for library, version in stored["versions"].items())
    machine = stored["machine"]
    where = (
        f"{machine['cpu']}, {machine['cores']} cores ({machine['torch_threads']} torch threads), "
        f"{machine['memory_gib']} GiB, {machine['gpu'] or 'no GPU'}"
    )
    changed = stored.get("uncommitted_changes")
    commit = f"commit `{stored['commit']}`" + (f" plus uncommitted changes to {len(changed)} files" if changed else "")
    commands = "; ".join(f"`{command}`" for command in stored["commands"])
    return (
        f"_Measured {stored['date']} at {commit}, {stored['seconds']:,} s in all. {where}; Python {stored['python']}, "
        f"{versions}. Commands: {commands}._"
    )


class RenderError(Exception):
    """RESULTS.md and the stored results do not fit together; the message says which block and what to run."""


def rerun_command(name: str) -> str:
    return f"python benchmarks/bench.py all --only {name} --output benchmarks/RESULTS.md"


def render(text: str, results: Mapping[str, Mapping], writers: Mapping[str, Callable[[list[dict]], str]]) -> str:
    """`text` with every block's body replaced by its header and tables. A block naming no benchmark is an error; a
    block whose benchmark has no stored result says so and how to measure it, so that no table stays looking as if
    the command had written it."""

    def body(match: re.Match) -> str:
        name = match["name"]
        if name not in writers:
            raise RenderError(f"RESULTS.md has a block `{name}`, which is no benchmark ({', '.join(writers)})")
        if name not in results:
            content = f"_Not measured by `make bench` yet: `{rerun_command(name)}` writes this table._"
        else:
            stored = results[name]
            try:
                content = f"{header(stored)}\n\n{writers[name](stored['records']).strip()}"
            except (KeyError, ValueError, TypeError) as error:
                raise RenderError(
                    f"the `{name}` writer cannot read benchmarks/results/{name}.json ({type(error).__name__}: "
                    f"{error}): the result predates its writer; `{rerun_command(name)}` measures it again"
                ) from error
        return f"<!-- bench:{name} -->\n{content}\n<!-- /bench:{name} -->"

    return BLOCK.sub(body, text)


def load_results(results_dir: Path) -> dict[str, dict]:
    results = {}
    for path in sorted(results_dir.glob("*.json")):
        try:
            results[path.stem] = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise RenderError(
                f"{path} is not a stored result ({error}); `{rerun_command(path.stem)}` measures it again"
            ) from error
    return results


def render_file(output: Path, results_dir: Path, writers: Mapping[str, Callable[[list[dict]], str]]) -> None:
    """Rewrite `output`'s blocks from the results in `results_dir`; the file is left as it was if any block fails."""
    if not output.is_file():
        raise RenderError(f"{output} does not exist: --output names the RESULTS.md whose blocks to write")
    text = output.read_text(encoding="utf-8")
    if not BLOCK.search(text):
        raise RenderError(f"{output} has no `<!-- bench:<name> -->` block to write")
    results = load_results(results_dir)
    rendered = render(text, results, writers)
    if rendered != text:
        write_text_atomically(rendered, output)
    blocks = {match["name"] for match in BLOCK.finditer(rendered)}
    unused = sorted(set(results) - blocks)
    missing = sorted(blocks - set(results))
    print(
        f"# bench: wrote {len(blocks)} blocks of {output}"
        + (f"; not measured yet: {', '.join(missing)}" if missing else "")
        + (f"; no block for the results of {', '.join(unused)}" if unused else ""),
        flush=True,
    )


# ---------------------------------------------------------------------------------------------- formatting


def number(value: float, digits: int = 1) -> str:
    return f"{value:,.{digits}f}"


def by(records: Iterable[dict], **fields) -> list[dict]:
    return [record for record in records if all(record.get(key) == value for key, value in fields.items())]


def unique(values: Iterable) -> list:
    return list(dict.fromkeys(values))


def goal(what: str, value: float, limit: float, *, at_least: bool = False, unit: str = "x") -> str:
    """A goal line whose verdict is computed from the measured value, so a re-run that misses it says so."""
    met = value >= limit if at_least else value <= limit
    bound = f"{'≥' if at_least else '≤'} {limit:g}{unit}"
    return f"- {what}: {value:.2f}{unit}, goal {bound}: **{'met' if met else 'not met'}**"


# ------------------------------------------------------------------------------------------------ writers


def serve(records: list[dict]) -> str:
    parts = []
    for texts in unique(record["texts_per_request"] for record in by(records, bench="serve")):
        rows = by(records, bench="serve", texts_per_request=texts)
        first = rows[0]
        parts.append(f"{first['requests']} requests of {texts} text(s), {first['clients']} clients:")
        parts.append(
            markdown_table(
                ["Server", "Requests/s", "Texts/s", "p50 ms", "p99 ms", "Texts per forward pass", "Peak RSS MiB"],
                [
                    [
                        r["server"],
                        number(r["requests_per_s"]),
                        number(r["texts_per_s"]),
                        number(r["p50_ms"], 0),
                        number(r["p99_ms"], 0),
                        number(r["texts_per_pass"]),
                        number(r["peak_rss_mib"], 0),
                    ]
                    for r in rows
                ],
            )
        )
        servers = {r["server"]: r for r in rows}
        if {"batching", "per-request"} <= set(servers):
            ratio = servers["batching"]["requests_per_s"] / servers["per-request"]["requests_per_s"]
            parts.append(f"Requests/s, batching / per-request: **{ratio:.2f}x**")
    return "\n\n".join(parts)


LOSS_NAMES = {
    "mnrl": "MNRL",
    "gist (st-bge)": "GIST (st-bge, precomputed guide)",
    "cached_gist (sentence-transformers)": "cached GIST (sentence-transformers' `CachedGISTEmbedLoss`)",
    "cached_gist (st-bge before)": "cached GIST (st-bge before: guide per step, two passes)",
    "cached_gist (st-bge)": "cached GIST (st-bge now)",
}


def losses(records: list[dict]) -> str:
    """Samples/s per loss variant, and each one's cost per sample relative to MNRL at the same batch and adapter."""
    timed = [record for record in by(records, bench="losses") if "variant" in record]
    batches = unique(record["batch"] for record in timed)
    parts = []
    for lora, title in ((True, "LoRA (r 16, the quickstart's adapter)"), (False, "Full fine-tune")):
        rows = []
        for variant in unique(record["variant"] for record in by(timed, lora=lora)):
            row = [LOSS_NAMES.get(variant, variant)]
            for batch in batches:
                (cell,) = by(timed, lora=lora, batch=batch, variant=variant)
                (mnrl,) = by(timed, lora=lora, batch=batch, variant="mnrl")
                cost = mnrl["samples_per_second"] / cell["samples_per_second"]
                row += [number(cell["samples_per_second"], 2), f"{cost:.2f}x"]
            rows.append(row)
        columns = [part for batch in batches for part in (f"batch {batch} (mini 32) samples/s", "vs MNRL")]
        parts += [f"{title}:", markdown_table(["Loss", *columns], rows)]
    goals = []
    for batch in batches:
        cached = by(timed, lora=True, batch=batch, variant="cached_gist (st-bge)")
        mnrl = by(timed, lora=True, batch=batch, variant="mnrl")
        if cached and mnrl:
            cost = mnrl[0]["samples_per_second"] / cached[0]["samples_per_second"]
            goals.append(goal(f"cached GIST (st-bge) per sample vs MNRL, LoRA, batch {batch}", cost, 1.3))
    if goals:
        parts.append("\n".join(goals))
    precomputed = [record for record in timed if record.get("guide_precompute_seconds") is not None]
    if precomputed:
        seconds = [record["guide_precompute_seconds"] for record in precomputed]
        inputs = unique(record["guide_inputs"] for record in precomputed)
        parts.append(
            f"Guide precompute: {', '.join(map(str, inputs))} distinct inputs in {min(seconds):.1f}-{max(seconds):.1f} s "
            f"across the {len(seconds)} runs that did it."
        )
    return "\n\n".join(parts)


def memory_cell(rows: list[dict], batch: int, loss: str, meters: list[str]) -> str:
    """One loss at one batch: each meter's peak (MiB), the first in bold; "skipped" where the loss did not run."""
    if by(rows, batch=batch, loss=loss, skipped="over --max_plain_batch"):
        return "skipped"
    found = [by(rows, batch=batch, loss=loss, meter=meter) for meter in meters]
    figures = [number(cell[0]["peak_increase_mib"], 0) if cell else "-" for cell in found]
    return " / ".join([f"**{figures[0]}**", *figures[1:]])


def memory(records: list[dict]) -> str:
    """Per model: a row per batch, a column per loss, each cell the peak tensor memory / the peak RSS increase (MiB,
    whichever meters ran); then each cached loss at its largest batch against plain MNRL at the smallest."""
    measured = [record for record in by(records, bench="memory") if "meter" in record]
    parts = []
    for model in unique(record["model"] for record in measured):
        mine = by(records, bench="memory", model=model)
        batches, loss_names = unique(r["batch"] for r in mine), unique(r["loss"] for r in mine)
        meters = [meter for meter in ("tensors", "rss") if by(mine, meter=meter)]
        labels = {"tensors": "peak tensor MiB", "rss": "peak RSS increase MiB"}
        max_length = by(measured, model=model)[0]["max_length"]
        parts.append(f"{model}, max length {max_length}: " + " / ".join(labels[meter] for meter in meters))
        rows = [[batch, *(memory_cell(mine, batch, loss, meters) for loss in loss_names)] for batch in batches]
        parts.append(markdown_table(["Batch", *loss_names], rows))
        reference = by(mine, batch=batches[0], loss="mnrl", meter=meters[0])
        goals = []
        for loss in (name for name in loss_names if name.startswith("cached")):
            largest = by(mine, batch=batches[-1], loss=loss, meter=meters[0])
            if reference and largest:
                ratio = largest[0]["peak_increase_mib"] / reference[0]["peak_increase_mib"]
                goals.append(goal(f"{loss} at batch {batches[-1]} vs MNRL at {batches[0]} ({meters[0]})", ratio, 1.3))
        if goals:
            parts.append("\n".join(goals))
    return "\n\n".join(parts)


def m3_encode(records: list[dict]) -> str:
    encode = by(records, bench="m3-memory")
    sparse = by(records, bench="m3-sparse")
    first = encode[0]
    modes = unique(",".join(record["modes"]) for record in encode)
    names = {"dense": "dense only", "dense,sparse,colbert": "dense + sparse + ColBERT"}
    rows = [
        [
            f"{batch} x {first['tokens_per_text']}",
            *(f"{number(by(encode, batch=batch)[i]['peak_increase_mib'], 0)} MiB" for i in range(len(modes))),
        ]
        for batch in unique(record["batch"] for record in encode)
    ]
    parts = [
        f"`encode_m3`, {first['layers']} layers x {first['hidden']} wide, vocabulary {first['vocab']:,}: peak tensor memory",
        markdown_table(["Batch x tokens", *(names.get(mode, mode) for mode in modes)], rows),
    ]
    formulations = {
        "st-bge": "st-bge (scatter-max onto batch x vocabulary)",
        "flagembedding-training": "FlagEmbedding's training path (batch x tokens x vocabulary, then max)",
    }
    batches = unique(record["batch"] for record in sparse)
    rows = []
    for batch in batches:
        row = [f"{batch} x 512"]
        for formulation in formulations:
            (found,) = by(sparse, batch=batch, formulation=formulation)
            row.append("skipped: too large" if "skipped" in found else f"{number(found['peak_increase_mib'], 0)} MiB")
        rows.append(row)
    parts += [
        "Lexical vectors with gradients: peak tensor memory",
        markdown_table(["Batch x tokens", *formulations.values()], rows),
    ]
    return "\n\n".join(parts)


def encode(records: list[dict]) -> str:
    (record,) = by(records, bench="encode")
    table = markdown_table(
        ["Path", "docs/s"],
        [
            [
                "st-bge (`model.encode_document`, what `st-bge eval` and the evaluator call)",
                number(record["st_bge_docs_per_second"]),
            ],
            [
                "raw `torch.inference_mode` forward + mean pooling + L2 norm, same batches",
                number(record["raw_docs_per_second"]),
            ],
        ],
    )
    rounds = f", the fastest of {record['repeats']} alternating rounds each" if "repeats" in record else ""
    return f"{record['documents']} documents, {record['model']}{rounds}:\n\n{table}\n\nst-bge / raw = **{record['ratio']:.2f}**"


def train(records: list[dict]) -> str:
    runs = by(records, bench="train")
    throughput = markdown_table(
        ["Model", "Parameters", "st-bge samples/s", "bare loop", "pad-512 loop", "st-bge / bare", "st-bge / pad-512"],
        [
            [
                r["model"],
                f"{r['parameters'] / 1e6:.1f}M",
                number(r["st_bge_samples_per_second"], 2),
                number(r["bare_samples_per_second"], 2),
                number(r["pad512_samples_per_second"], 3),
                f"**{r['st_bge_vs_bare']:.2f}**",
                f"**{r['st_bge_vs_pad512']:.1f}x**",
            ]
            for r in runs
        ],
    )
    utilisation = markdown_table(
        ["Model", "Tokens per step", "Matmul FLOPs per step", "Achieved GFLOP/s", "Peak before / after, GFLOP/s",
         "MFU (faster peak)", "MFU against each peak"],
        [
            [
                r["model"],
                number(r["bare_tokens_per_step"], 0),
                f"{r['bare_flops_per_step'] / 1e12:.3f} T",
                number(r["bare_achieved_flops_per_second"] / 1e9),
                f"{r['bare_peak_before'] / 1e9:.1f} / {r['bare_peak_after'] / 1e9:.1f}",
                f"**{r['bare_mfu']:.2f}**",
                f"{r['bare_mfu_if_peak_before']:.2f} / {r['bare_mfu_if_peak_after']:.2f}",
            ]
            for r in runs
        ],
    )  # fmt: skip
    goals = []
    for r in runs:
        goals += [
            goal(f"{r['model']}: st-bge / bare loop", r["st_bge_vs_bare"], 0.9, at_least=True),
            goal(f"{r['model']}: st-bge / pad-512 loop", r["st_bge_vs_pad512"], 3, at_least=True),
            goal(
                f"{r['model']}: MFU against the slower peak",
                max(r["bare_mfu_if_peak_before"], r["bare_mfu_if_peak_after"]),
                1,
                unit="",
            ),
        ]
    shape = f"batch {runs[0]['batch']}, max length {runs[0]['max_length']}"
    return "\n\n".join(
        [f"Training samples/s ({shape}):", throughput, "MFU of the bare loop:", utilisation, "\n".join(goals)]
    )


def comparison(data: Mapping) -> str:
    """A stored RetrievalComparison: the evaluation set it ran on (sizes only), then its table."""
    result = RetrievalComparison.from_dict(data)
    eval_set = result.eval_set
    sizes = [
        f"{eval_set[key]:,} {label}"
        for key, label in (("queries", "queries"), ("corpus", "documents"))
        if key in eval_set
    ]
    top_k = f", top {eval_set['top_k']} retrieved" if "top_k" in eval_set else ""
    where = f"_{eval_set.get('name', 'evaluation set')}: {', '.join(sizes)}{top_k}._\n\n" if sizes else ""
    return where + result.to_markdown()


def per_mode(data: Mapping) -> list[str]:
    """A stored comparison whose modes share no model (a head-to-head per mode): one narrow table per mode."""
    return [comparison.to_markdown() for comparison in RetrievalComparison.from_dict(data).modes.values()]


def m3_quickstart(records: list[dict]) -> str:
    (against_base,) = by(records, bench="m3-quickstart", table="against_base")
    (head_to_head,) = by(records, bench="m3-quickstart", table="head_to_head")
    trainings = [record for record in by(records, bench="command") if " train " in f" {record['command']} "]
    walls = "; ".join(f"`{record['command']}` {record['seconds']:,.0f} s" for record in trainings)
    return "\n\n".join(
        [
            "Against the base model:",
            comparison(against_base["comparison"]),
            "The unified fine-tune's modes against the dense fine-tune's dense mode, one mode at a time:",
            *per_mode(head_to_head["comparison"]),
            *([f"Wall time of the training runs: {walls}."] if walls else []),
        ]
    )


def seconds_line(seconds: Mapping[str, float], what: str) -> str:
    return f"Wall time ({what}): " + ", ".join(f"{name} {value:,.0f} s" for name, value in seconds.items())


def sweep(records: list[dict]) -> str:
    parts = []
    for record in by(records, bench="sweep"):
        parts.append(f"{record['set']}, `--settings {shlex.join(record['settings'])}`:")
        parts += [comparison(record["comparison"]), seconds_line(record["seconds"], "train + evaluations")]
    return "\n\n".join(parts)


def cold_start(records: list[dict]) -> str:
    parts = []
    for record in by(records, bench="cold-start"):
        parts += [
            f"{record['set']} ({record['real_rows']} real training rows), against the base model:",
            comparison(record["against_base"]),
        ]
        if record.get("against_real"):
            parts += ["Against training on the real queries:", comparison(record["against_real"])]
        parts.append(seconds_line(record["seconds"], "synthesis + training"))
        for setting, report in record["synth_reports"].items():
            parts += [
                f"`{setting}`, what the synthesis kept:",
                markdown_table(["Stage", "Count"], report_rows(report)),
            ]
    return "\n\n".join(parts)
