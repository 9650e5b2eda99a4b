"""The model flags every job takes: a SavedModel (``--model_path``) or an endpoint, and
TensorFlow's thread pools per worker process for a SavedModel (``--intra_op_threads``,
``--inter_op_threads``: ``ModelSpec``'s fields of the same names).

``--endpoint`` scores against a model behind a serving endpoint instead of loading a
SavedModel (see docs/remote.md for the URL forms); the output is the same. A bearer
token is read from a file or an environment variable named by a flag, never passed
itself on the command line (where process listings and a runner's UI would show it).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

import beam_infer as bi

ENDPOINT_HELP = (
    "Score with a model behind a serving endpoint instead of a SavedModel: "
    "grpc://HOST:PORT/models/NAME[/versions/N|/labels/L] (TF Serving gRPC), "
    "http(s)://HOST:PORT/v1/models/NAME[...] (TF Serving REST), "
    "http(s)://HOST/v2/models/NAME (KServe v2) or "
    "vertex://projects/P/locations/L/endpoints/E (Vertex AI).")


def add_model_flags(parser: argparse.ArgumentParser, *, model_help: str) -> None:
    """``--model_path`` (with ``model_help``), the ``--endpoint`` flags and the threads'."""
    parser.add_argument("--model_path", help=model_help)
    parser.add_argument("--endpoint", help=ENDPOINT_HELP)
    add_credential_flags(parser)
    add_thread_flags(parser)


def add_thread_flags(parser: argparse.ArgumentParser) -> None:
    """TensorFlow's thread pools per worker process (``ModelSpec.intra_op_threads``...)."""
    parser.add_argument(
        "--intra_op_threads", type=int,
        help="Threads TensorFlow uses within one operation, per worker process (as TF "
             "Serving's --tensorflow_intra_op_parallelism); default: every core. With "
             "several SDK processes per machine (Dataflow runs one per vCPU), cores / "
             "processes keeps their model calls off each other's cores.")
    parser.add_argument(
        "--inter_op_threads", type=int,
        help="Operations TensorFlow runs at once, per worker process (as TF Serving's "
             "--tensorflow_inter_op_parallelism); default: TensorFlow's.")


def thread_fields(args: argparse.Namespace, *, endpoint: bool = False) -> dict[str, int]:
    """The ``ModelSpec`` thread fields the flags gave; refused for an endpoint."""
    fields = {name: getattr(args, name) for name in ("intra_op_threads", "inter_op_threads")
              if getattr(args, name, None) is not None}
    if fields and endpoint:
        name = next(iter(fields))
        raise bi.ConfigurationError(
            f"--{name} sizes TensorFlow's threads where a SavedModel is loaded; with an "
            "endpoint the server runs the model and sizes its own. Drop it, or score a "
            "SavedModel with --model_path.")
    return fields


def add_credential_flags(parser: argparse.ArgumentParser) -> None:
    """The endpoint's bearer-token source and CA flags (shared by a job's endpoints)."""
    parser.add_argument("--endpoint_token_file",
                        help="A file holding the endpoint's bearer token (read per request).")
    parser.add_argument("--endpoint_token_env",
                        help="An environment variable holding the endpoint's bearer token.")
    parser.add_argument("--endpoint_ca_file",
                        help="PEM file of the CAs to trust for the endpoint's TLS.")


def uses_endpoint(args: argparse.Namespace, *, model_flag: str = "model_path",
                  endpoint_flag: str = "endpoint") -> bool:
    """Whether the job scores against its endpoint flag; refuses it with the model flag."""
    model_path, endpoint = getattr(args, model_flag), getattr(args, endpoint_flag)
    if endpoint and model_path:
        raise bi.ConfigurationError(
            f"--{model_flag}={model_path} and --{endpoint_flag}={endpoint} were both given; "
            "a model is a SavedModel or an endpoint. Drop one of them.")
    endpoint_only = [name for name in ("endpoint_token_file", "endpoint_token_env",
                                       "endpoint_ca_file") if getattr(args, name)]
    if endpoint_only and not any(getattr(args, name, None) for name in vars(args)
                                 if name.endswith("endpoint")):
        raise bi.ConfigurationError(
            f"--{endpoint_only[0]} applies to --{endpoint_flag}, which was not given. Pass "
            f"--{endpoint_flag}=URL, or drop it.")
    return bool(endpoint)


def model_spec(args: argparse.Namespace, default_model: Callable[[], str | None], *,
               model_flag: str = "model_path", endpoint_flag: str = "endpoint",
               **fields: Any) -> bi.ModelSpec | bi.EndpointSpec:
    """The spec a model's flags say: the endpoint's, else the SavedModel (or the default).

    Args:
        args: The parsed flags (see ``add_model_flags``).
        default_model: Builds the demo model when neither flag is given.
        model_flag, endpoint_flag: The two flags' names (jobs of two models have two pairs).
        fields: Fields both specs take (``signature_names``, ``batching``, ...).
    """
    if uses_endpoint(args, model_flag=model_flag, endpoint_flag=endpoint_flag):
        thread_fields(args, endpoint=True)
        return bi.EndpointSpec.from_url(getattr(args, endpoint_flag), token=_token(args),
                                        tls=_tls(args), **fields)
    return bi.ModelSpec(model_path=getattr(args, model_flag) or default_model(),
                        **thread_fields(args), **fields)


def _token(args: argparse.Namespace) -> bi.BearerToken | None:
    if args.endpoint_token_file and args.endpoint_token_env:
        raise bi.ConfigurationError(
            "--endpoint_token_file and --endpoint_token_env were both given; the endpoint "
            "takes one token. Drop one of them.")
    if args.endpoint_token_file:
        return bi.BearerToken(file=args.endpoint_token_file)
    if args.endpoint_token_env:
        return bi.BearerToken(env=args.endpoint_token_env)
    return None


def _tls(args: argparse.Namespace) -> bi.Tls | None:
    return bi.Tls(ca_file=args.endpoint_ca_file) if args.endpoint_ca_file else None
