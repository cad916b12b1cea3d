"""DAT Explainer web app: `python app.py [--host H] [--port P] [--model default|DIR|REPO_ID] [--share]
[--allow-local-models | --no-allow-local-models] [--compile auto|on|off] [--workers auto|N] [--threads auto|N] [--mcp]`.

The Hugging Face Spaces entry, kept thin: parse the arguments, `build_demo()` from webapp/ (one module per
tab in webapp/tabs/), launch.

Named API endpoints (gradio_client, and MCP tools with --mcp; webapp/api.py), all on the model the app started with:
  counterfactual(image, target, eps, steps, step_size) -> (metrics JSON, final image, GIF)
  generate(target, seed, steps, step_size)             -> (samples JSON, sample grid, GIF)
  landscape(image, target, eps, steps, step_size)      -> (figure, landscape JSON)
  attribute(image, target, methods, eps, steps, step_size) -> (figure, attributions JSON)
"""

import argparse
import importlib.util
import logging
import os
import socket
import sys

from dat_core.cli_types import OneLineParser, int_in, refuse_blank_values
from dat_core.hub_cache import cache_cap
from dat_core.loading import default_model_dir
from webapp import scheduling
from webapp.demo import build_demo
from webapp.sources import local_models_allowed

NO_MODEL_MESSAGE = ("no bundled model yet; pass --model DIR or a Hub repo id (owner/name); train one with "
                    "`python -m train stage1 ...` then `python -m train stage2 ...` (see README)")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line, with `--allow-local-models` resolved to True or False."""
    parser = OneLineParser(description="DAT Explainer web app (Gradio).")
    parser.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
                        help="interface to listen on (default 127.0.0.1; 0.0.0.0 to serve the network)")
    parser.add_argument("--port", type=int_in(1, 65535), default=os.environ.get("GRADIO_SERVER_PORT", "7860"),
                        help="port, 1..65535 (default 7860)")
    parser.add_argument("--model", default="default",
                        help="'default' (bundled), a zoo name (dat_core.list_models()), a checkpoint dir, or a Hub "
                             "repo id owner/name (default: default)")
    parser.add_argument("--revision", default=None, help="Hub revision (branch, tag or commit sha) for --model")
    parser.add_argument("--standard-model", default="auto",
                        help="non-robust model for the 'Robust vs standard' tab: a dir or repo id "
                             "(default: the bundled assets/models/standard-* if present)")
    parser.add_argument("--autocast", choices=("auto", "on", "off"), default="auto",
                        help="bf16 for PGD and landscapes: auto = where the hardware has native bf16 (CUDA, "
                             "AVX512-BF16/AMX CPUs; ~2x faster), off = fp32 everywhere (default: auto)")
    parser.add_argument("--compile", choices=("auto", "on", "off"), default="auto",
                        help="compile each loaded model with torch.compile in the background (the app answers with "
                             "the eager model until it is ready; any compile error: eager, one log line): auto = "
                             "where CUDA or a C++ compiler is present (default: auto)")
    parser.add_argument("--workers", default="auto",
                        help="model computations run at once, the rest wait in the queue (default auto: one per "
                             "CPU core, one on CUDA)")
    parser.add_argument("--threads", default="auto",
                        help="torch threads per computation (default auto: 1 on a CPU, where spreading one small "
                             "request over cores stalls whenever another process holds one; all on CUDA)")
    parser.add_argument("--mcp", action="store_true",
                        help="also serve the named endpoints as MCP tools at /gradio_api/mcp (needs the `mcp` "
                             "package: pip install -r requirements-mcp.txt)")
    parser.add_argument("--share", action="store_true", help="also serve through a public *.gradio.live link")
    parser.add_argument("--allow-local-models", action=argparse.BooleanOptionalAction, default=None,
                        help="let visitors load checkpoint folders of this server on the Model tab (default: only "
                             "when listening on loopback, without --share, and not on a Hugging Face Space); "
                             "otherwise they choose among the bundled models and Hub repos")
    args = refuse_blank_values(parser).parse_args(argv)
    try:
        args.workers, args.threads = scheduling.plan(args.workers, args.threads)
        cache_cap()   # a bad $DAT_HUB_CACHE_GB ends here, not in a visitor's first download
    except ValueError as e:
        parser.error(str(e))
    try:
        socket.getaddrinfo(args.host, args.port)   # a name that is no address ends here, not in a crash of the server
    except (socket.gaierror, UnicodeError) as e:
        parser.error(f"argument --host: {args.host!r} is not an address or host name here ({e})")
    if args.allow_local_models is None:
        args.allow_local_models = local_models_allowed(args.host, args.share)
    elif args.allow_local_models and not local_models_allowed(args.host, args.share):
        logging.getLogger("app").warning("--allow-local-models on a server others can reach: every visitor can load "
                                         "any checkpoint folder of this machine by its path")
    return args


def main(argv: list[str] | None = None) -> int:
    """The command line; returns the exit status (2: the model cannot be loaded)."""
    args = parse_args(argv)
    if args.model == "default":
        try:
            default_model_dir()
        except FileNotFoundError:
            print(f"app.py: {NO_MODEL_MESSAGE}", file=sys.stderr)
            return 2
    if args.mcp and importlib.util.find_spec("mcp") is None:
        print("app.py: --mcp needs the `mcp` package: pip install -r requirements-mcp.txt", file=sys.stderr)
        return 2
    logging.basicConfig(format="%(name)s: %(message)s")
    logging.getLogger("dat_core.runtime").setLevel(logging.INFO)  # "compiled ... in N s", or why it stays eager
    scheduling.apply_threads(args.threads)
    try:
        demo = build_demo(args.model, standard_model=args.standard_model, revision=args.revision,
                          autocast=args.autocast, allow_local_models=args.allow_local_models,
                          compile=args.compile, workers=args.workers)
    except (ValueError, OSError) as e:
        print(f"app.py: cannot load the model: {e}", file=sys.stderr)
        return 2
    demo.launch(server_name=args.host, server_port=args.port, share=args.share,
                mcp_server=args.mcp)
    return 0


if __name__ == "__main__":
    sys.exit(main())
