"""`st-bge push` and `st-bge export`: an output folder to the Hub; a model to ONNX + int8, checked against PyTorch."""

from __future__ import annotations

from st_bge.commands.base import FLAGS, Command, ParserNames, require_extra
from st_bge.markdown import markdown_table


class PushCommand(Command):
    name = "push"
    help = "publish an output folder to the Hub (adapter, merged or both)"
    positional = "--model_dir"
    usage = f"MODEL_DIR --repo_id REPO_ID {FLAGS}"

    def run(self, argv: list[str], names: ParserNames) -> int:
        from st_bge.config import parse_push_arguments
        from st_bge.publish import push

        for result in push(parse_push_arguments(argv, **names)):
            where = result.commit.pr_url or result.commit.commit_url
            print(f"Pushed the {result.variant} to {result.commit.repo_url.repo_id}@{result.revision}: {where}")
        return 0


class ExportCommand(Command):
    name = "export"
    help = "export a model to ONNX + int8 and check it against PyTorch"
    positional = "--model_dir"
    usage = f"MODEL_DIR --output_dir OUTPUT_DIR {FLAGS}"

    def run(self, argv: list[str], names: ParserNames) -> int:
        require_extra("export", "onnx", "onnx", "onnxruntime")
        from st_bge.config import parse_export_arguments
        from st_bge.onnx_export import export_model

        args = parse_export_arguments(argv, **names)
        checks = export_model(args)
        print(f"Written to {args.output_dir}")
        if checks:
            header = ["File", "Texts", "Cosine min", "Cosine mean", "PyTorch texts/s", "ONNX texts/s", "Speed-up"]
            rows = [
                [
                    c.file,
                    c.texts,
                    f"{c.cosine_min:.4f}",
                    f"{c.cosine_mean:.4f}",
                    f"{c.torch_texts_per_second:.1f}",
                    f"{c.onnx_texts_per_second:.1f}",
                    f"{c.speedup:.2f}x",
                ]
                for c in checks
            ]
            print(markdown_table(header, rows))
        return 0
