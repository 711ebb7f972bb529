"""`st-bge data check|mine|score|synth`: the data stages on their own, on a recipe or straight on a data file."""

from __future__ import annotations

from st_bge.commands.base import FLAGS, Command, CommandGroup, ParserNames
from st_bge.markdown import markdown_table

DATA_USAGE = f"RECIPE.yaml|DATA {FLAGS}"


class DataCommand(Command):
    usage = DATA_USAGE
    data_positional = "--dataset_name_or_path"


class DataCheckCommand(DataCommand):
    name = "data check"
    help = "print the quality report of a recipe's data or a data file (exit code 1 on 'fail')"

    def run(self, argv: list[str], names: ParserNames) -> int:
        from st_bge.config import parse_data_recipe
        from st_bge.data.preparation import check_data

        prepared = check_data(parse_data_recipe(argv, **names))
        print(prepared.to_markdown())
        return 1 if any(report.verdict == "fail" for report in prepared.quality.values()) else 0


class DataMineCommand(DataCommand):
    name = "data mine"
    help = "mine hard negatives into trainable files"

    def run(self, argv: list[str], names: ParserNames) -> int:
        from st_bge.config import parse_data_recipe
        from st_bge.data.preparation import mine

        mined = mine(parse_data_recipe(argv, **names))
        print(mined.prepared.to_markdown())
        files = ", ".join(path.name for path in mined.files)
        print(
            f"\nWritten to {mined.output_dir}: {files} (train on it with dataset_name_or_path), mining and quality "
            "reports"
        )
        return 0


class DataScoreCommand(DataCommand):
    name = "data score"
    help = "add a teacher cross-encoder's scores (for kd_loss)"

    def run(self, argv: list[str], names: ParserNames) -> int:
        from st_bge.config import parse_data_recipe
        from st_bge.data.scoring import score

        scored = score(parse_data_recipe(argv, **names))
        keys = list(next(iter(scored.report.values())))
        rows = [[name, *(summary.get(key, "") for key in keys)] for name, summary in scored.report.items()]
        print(markdown_table(["Source", *keys], rows))
        files = ", ".join(path.name for path in scored.files)
        print(f"\nWritten to {scored.output_dir}: {files} (train on it with kd_loss), score_report.json")
        return 0


class DataSynthCommand(DataCommand):
    name = "data synth"
    help = "write training queries for a corpus that has none"
    usage = f"RECIPE.yaml|CORPUS {FLAGS}"
    data_positional = "--synth_corpus"

    def run(self, argv: list[str], names: ParserNames) -> int:
        from st_bge.config import parse_synth_recipe
        from st_bge.synthesis.pipeline import synth

        result = synth(parse_synth_recipe(argv, **names))
        print(result.to_markdown())
        train_with = f"dataset_name_or_path: {result.train_file}"
        if result.eval_dir is not None:
            train_with += f", eval_dataset_name_or_path: {result.eval_dir}"
        print(f"Written to {result.output_dir}: train on it with {train_with}")
        return 0


DATA = CommandGroup("data", [DataCheckCommand(), DataMineCommand(), DataScoreCommand(), DataSynthCommand()])
