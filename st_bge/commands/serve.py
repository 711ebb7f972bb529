"""`st-bge serve` and `st-bge check-endpoint`: an OpenAI-compatible embeddings server, and the comparison of any
such endpoint's vectors with the local model's (extra `st-bge[serve]`)."""

from __future__ import annotations

from st_bge.commands.base import FLAGS, Command, ParserNames, require_extra
from st_bge.markdown import markdown_table


class ServeCommand(Command):
    name = "serve"
    help = "serve a model over an OpenAI-compatible embeddings API (extra st-bge[serve])"
    positional = "--model"
    usage = f"MODEL {FLAGS}"

    def run(self, argv: list[str], names: ParserNames) -> int:
        require_extra("serve", "serve", "fastapi", "uvicorn", "prometheus_client")
        from st_bge.config import parse_serve_arguments
        from st_bge.serving.app import serve

        serve(parse_serve_arguments(argv, **names))
        return 0


class CheckEndpointCommand(Command):
    name = "check-endpoint"
    help = "compare an OpenAI-compatible endpoint's vectors with the local model's"
    positional = "--base_url"
    usage = f"BASE_URL --model MODEL {FLAGS}"

    def run(self, argv: list[str], names: ParserNames) -> int:
        require_extra("check-endpoint", "serve", "openai")
        from st_bge.config import parse_endpoint_check_arguments
        from st_bge.serving.check import check_endpoint

        args = parse_endpoint_check_arguments(argv, **names)
        checks = check_endpoint(args)
        header = ["Side", "Texts", "Cosine min", "Cosine mean", "Max |diff|", f"Cosine >= {args.min_cosine}"]
        rows = [
            [
                c.side,
                c.texts,
                f"{c.cosine_min:.6f}",
                f"{c.cosine_mean:.6f}",
                f"{c.max_abs_diff:.2e}",
                "yes" if c.passed else "NO",
            ]
            for c in checks
        ]
        print(markdown_table(header, rows))
        return 0 if all(check.passed for check in checks) else 1
