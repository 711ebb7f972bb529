"""`st-bge merge`: a fine-tune interpolated with its base model (the dial back toward the base), or several
fine-tunes of one base summed."""

from __future__ import annotations

from st_bge.commands.base import FLAGS, Command, ParserNames


class MergeCommand(Command):
    name = "merge"
    help = "merge a fine-tune with its base model (base + w * (fine-tuned - base)), or several fine-tunes"
    positional = "--model_dirs"
    usage = f"MODEL_DIR [MODEL_DIR ...] --weights W [W ...] --output_dir OUTPUT_DIR {FLAGS}"

    def run(self, argv: list[str], names: ParserNames) -> int:
        import json

        from st_bge.config import parse_merge_arguments
        from st_bge.merging import MERGE_FILE, merge

        args = parse_merge_arguments(argv, **names)
        output_dir = merge(args)
        base = json.loads((output_dir / MERGE_FILE).read_text(encoding="utf-8"))["base_model"]
        models = " and ".join(args.model_dirs)
        print(f"Merged {models} with weights {', '.join(f'{w:g}' for w in args.weights)} into {output_dir}")
        tuned = " ".join(args.model_dirs)
        print(
            f"Measure it: st-bge eval --models base={base} {tuned} {output_dir} --eval_datasets <your retrieval set>"
        )
        return 0
