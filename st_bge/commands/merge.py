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
        from st_bge.config import parse_merge_arguments
        from st_bge.merging import merge

        args = parse_merge_arguments(argv, **names)
        result = merge(args)
        models = " and ".join(args.model_dirs)
        print(f"Merged {models} with weights {', '.join(f'{w:g}' for w in args.weights)} into {result.output_dir}")
        print(
            f"Measure it: st-bge eval --models base={result.base_model} {' '.join(args.model_dirs)} "
            f"{result.output_dir} --eval_datasets <your retrieval set>"
        )
        return 0
