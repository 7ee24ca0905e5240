"""`gpuc`: the command-line client of the GPU Commons REST API (/api/v1/, bearer token).

A thin client: it parses flags, calls the API with `requests` and prints the answers; every
rule is enforced by the server. Exit codes: 0 success, 1 error (API, network, configuration),
2 usage error, 4 insufficient quota; `gpuc submit --wait` exits with the job's exit code.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import Any

from portal.cli import account, commands, files, sessions
from portal.cli.client import (
    EXIT_ERROR,
    EXIT_OK,
    EXIT_QUOTA,
    EXIT_USAGE,
    ApiError,
    Client,
    CliError,
    _version,
    load_config,
)
from portal.cli.commands import DEFAULT_INTERVAL, job_exit_code
from portal.cli.parsing import (
    parse_array,
    parse_env,
    parse_job_id,
    parse_memory,
    parse_time,
    script_directives,
)

__all__ = [
    "EXIT_ERROR",
    "EXIT_OK",
    "EXIT_QUOTA",
    "EXIT_USAGE",
    "ApiError",
    "CliError",
    "build_parser",
    "job_exit_code",
    "main",
    "parse_array",
    "parse_env",
    "parse_memory",
    "parse_time",
    "script_directives",
]


def _argtype(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """Turn a parser's ValueError into an argparse usage error (exit code 2)."""

    def convert(text: str) -> Any:
        try:
            return parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    convert.__name__ = parse.__name__.removeprefix("parse_")
    return convert


_job_id = _argtype(parse_job_id)


def _positive_int(minimum: int) -> Callable[[str], int]:
    def convert(text: str) -> int:
        if not text.strip().isdigit() or int(text) < minimum:
            raise argparse.ArgumentTypeError(f"'{text}' is not an integer >= {minimum}")
        return int(text)

    convert.__name__ = "integer"
    return convert


# --- the parser ------------------------------------------------------------------------


def _add_storage_flags(parser: argparse.ArgumentParser) -> None:
    """Which project folder: ls-files and cp take the same two flags."""
    parser.add_argument("--project", "-p", help="project uuid, slug or org/slug")
    parser.add_argument("--cluster", "-c", help="cluster name (optional with storage on one)")


def _add_job_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("script", metavar="SCRIPT_FILE", help="batch script ('-' reads stdin)")
    parser.add_argument(
        "--project",
        "-p",
        help="project uuid, slug or org/slug (default: $GPUC_PROJECT, else 'gpuc config')",
    )
    parser.add_argument(
        "--cluster", "-c", help="cluster name (default: $GPUC_CLUSTER, else 'gpuc config')"
    )
    parser.add_argument("--name", "-J", help="job name (default: the script's file name)")
    parser.add_argument("--partition", help="partition (default: the cluster's default)")
    parser.add_argument("--gpus", "-G", type=_positive_int(0), help="GPUs per task")
    parser.add_argument("--gpu-type", help="GPU type, e.g. h100 (see the cluster's types)")
    parser.add_argument("--cpus", type=_positive_int(1), help="CPUs per task")
    parser.add_argument(
        "--mem", type=_argtype(parse_memory), help="memory: MB, or 8G / 8000M / 512K"
    )
    parser.add_argument(
        "--time",
        "-t",
        type=_argtype(parse_time),
        help="time limit (required here or as #SBATCH --time): 90, 1:30:00, 2-00, 2h, 90m",
    )
    parser.add_argument("--array", "-a", type=_argtype(parse_array), help="e.g. 0-9%%2, 1,3,5")
    parser.add_argument(
        "--env",
        "-e",
        action="append",
        type=_argtype(parse_env),
        metavar="KEY=VALUE",
        help="environment variable (repeatable; KEY alone passes this shell's value)",
    )
    parser.add_argument("--json", action="store_true", help="print the API's JSON answer")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gpuc",
        description="Command-line client of GPU Commons: submit and follow jobs, see balances.",
        epilog="JOB_ID: a job's UUID or its short id (the first 8 characters, as the portal "
        "shows it). "
        "Exit codes: 0 ok, 1 error, 2 usage error, 4 insufficient quota; "
        "'submit --wait' exits with the job's exit code. "
        "Configuration: $GPUC_CONFIG or ~/.config/gpuc/config.json; GPUC_URL and GPUC_TOKEN "
        "override it.",
    )
    parser.add_argument("--version", action="version", version=f"gpuc {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser(
        "login",
        help="store the portal URL and an API token (verified), and a default project/cluster",
        description="Stores the URL and token, and a default project and cluster: the ones "
        "given, else the stored ones while still yours, else your only project and the only "
        "cluster you may use.",
    )
    p.add_argument("--url", help="portal address, e.g. https://gpu.example.org")
    p.add_argument("--token", help="API token (prompted for when omitted)")
    p.add_argument("--project", "-p", help="default project: uuid, slug or org/slug")
    p.add_argument("--cluster", "-c", help="default cluster name")

    p = sub.add_parser(
        "config",
        help="show the configuration, or set/unset the default project or cluster",
        usage="gpuc config [show]\n       gpuc config set {project,cluster} VALUE\n"
        "       gpuc config unset {project,cluster}",
    )
    p.add_argument("action", nargs="?", choices=("show", "set", "unset"))
    p.add_argument("key", nargs="?", metavar="KEY")
    p.add_argument("value", nargs="?", metavar="VALUE")

    p = sub.add_parser("whoami", help="who the stored token belongs to, and their projects")
    p.add_argument("--json", action="store_true")

    directives = (
        "Flags override the script's leading #SBATCH lines, which gpuc reads like sbatch: "
        "-J/--job-name, -p/--partition, -t/--time, --mem, -c/--cpus-per-task, -G/--gpus "
        "([TYPE:]N), --gres=gpu[:TYPE]:N, -a/--array; other #SBATCH options are ignored "
        "with a warning."
    )
    p = sub.add_parser(
        "submit", help="submit a batch script; prints the job id", description=directives
    )
    _add_job_flags(p)
    p.add_argument("--idempotency-key", help="resubmitting with the same key returns the same job")
    p.add_argument(
        "--wait",
        "-w",
        action="store_true",
        help="print the job's output as it runs and exit with its exit code (the id and state "
        "changes go to stderr)",
    )
    p.add_argument("--interval", type=float, default=DEFAULT_INTERVAL, help=argparse.SUPPRESS)

    p = sub.add_parser(
        "estimate",
        help="what a job would cost (the amount held at submit)",
        description=directives,
    )
    _add_job_flags(p)

    p = sub.add_parser("ls", help="your jobs, newest first")
    p.add_argument("--project", "-p", help="project uuid, slug or org/slug")
    p.add_argument("--state", "-s", help="pending, queued, running, completed, failed, ...")
    p.add_argument("--cluster", "-c", help="cluster name")
    p.add_argument(
        "--origin", choices=("portal", "direct"), help="direct: submitted outside the portal"
    )
    p.add_argument("--limit", "-n", type=_positive_int(1), default=50, help="at most N jobs")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("status", help="one job: state, timeline, resources, costs")
    p.add_argument("job_id", metavar="JOB_ID", type=_job_id)
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("logs", help="print a job's output (-f to follow it to the end)")
    p.add_argument("job_id", metavar="JOB_ID", type=_job_id)
    p.add_argument("--stream", choices=("stdout", "stderr"), default="stdout")
    p.add_argument("--follow", "-f", action="store_true", help="keep printing until the job ends")
    p.add_argument("--interval", type=float, default=DEFAULT_INTERVAL, help=argparse.SUPPRESS)

    p = sub.add_parser("cancel", help="cancel a job")
    p.add_argument("job_id", metavar="JOB_ID", type=_job_id)

    p = sub.add_parser(
        "results",
        help="list a job's output files, or download one",
        usage="gpuc results JOB_ID [--json]\n       gpuc results get JOB_ID PATH [-o FILE]",
    )
    p.add_argument("words", nargs="+", metavar="JOB_ID | get JOB_ID PATH")
    p.add_argument("--output", "-o", help="where to save (default: the file's name; '-' stdout)")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser(
        "clusters", help="clusters you may use: GPU types, limits per job, partitions, rates"
    )
    p.add_argument("--json", action="store_true")

    p = sub.add_parser(
        "access",
        help="cluster accounts: ask for one (request) or list your requests (ls)",
        usage="gpuc access request [-c CLUSTER] [-p PROJECT] [--username NAME]\n"
        "       gpuc access ls",
    )
    p.add_argument("action", choices=("request", "ls"))
    p.add_argument("--cluster", "-c", help="cluster name (default: 'gpuc config')")
    p.add_argument("--project", "-p", help="project uuid, slug or org/slug (default: as -c)")
    p.add_argument("--username", "-u", help="the user name you want (default: from your email)")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser(
        "ls-files",
        help="list a folder of the project's storage ($GPUC_PROJECT_DIR in jobs)",
        usage="gpuc ls-files [:PATH] [-p PROJECT] [-c CLUSTER] [--json]",
    )
    p.add_argument("path", nargs="?", metavar=":PATH", help="a folder (default: the top)")
    _add_storage_flags(p)
    p.add_argument("--json", action="store_true")

    p = sub.add_parser(
        "cp",
        help="copy a file into or out of the project's storage (remote paths start with ':')",
        usage="gpuc cp FILE :[DIR/][NAME]  |  gpuc cp :PATH FILE|DIR|-  [-p PROJECT] [-c CLUSTER]",
    )
    p.add_argument("source", metavar="SOURCE")
    p.add_argument("target", metavar="TARGET")
    _add_storage_flags(p)

    p = sub.add_parser(
        "session",
        help="interactive sessions: start one (JupyterLab, ...), list yours, list the apps",
        usage="gpuc session start APP -t MINUTES [-p PROJECT] [-c CLUSTER] [--gpus N] ...\n"
        "       gpuc session ls\n       gpuc session apps",
    )
    p.add_argument("action", choices=("start", "ls", "apps"))
    p.add_argument("app", nargs="?", metavar="APP", help="app slug, e.g. jupyterlab")
    p.add_argument("--project", "-p", help="project uuid, slug or org/slug")
    p.add_argument("--cluster", "-c", help="cluster name")
    p.add_argument("--time", "-t", type=_argtype(parse_time), help="time limit: 90, 2h, 1:30:00")
    p.add_argument("--gpus", "-G", type=_positive_int(0))
    p.add_argument("--gpu-type")
    p.add_argument("--cpus", type=_positive_int(1))
    p.add_argument("--mem", dest="memory_mb", type=_argtype(parse_memory), help="8G, 8000M")
    p.add_argument("--partition")
    p.add_argument("--share", action="store_true", help="let the project's managers open it")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("balance", help="allocations: credited, held, charged, available SU")
    p.add_argument("--project", "-p", help="project uuid, slug or org/slug")
    p.add_argument("--json", action="store_true")
    return parser


COMMANDS: dict[str, Callable[[argparse.Namespace, Client], int]] = {
    "whoami": account.cmd_whoami,
    "submit": commands.cmd_submit,
    "estimate": commands.cmd_estimate,
    "ls": commands.cmd_ls,
    "status": commands.cmd_status,
    "logs": commands.cmd_logs,
    "cancel": commands.cmd_cancel,
    "results": commands.cmd_results,
    "balance": commands.cmd_balance,
    "clusters": commands.cmd_clusters,
    "access": commands.cmd_access,
    "ls-files": files.cmd_ls_files,
    "cp": files.cmd_cp,
    "session": sessions.cmd_session,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns the process exit code (the console script exits with it)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if args.command == "login":
            return account.cmd_login(args)
        if args.command == "config":
            return account.cmd_config(args)
        config = load_config()
        return COMMANDS[args.command](args, Client(config.url, config.token))
    except SystemExit as exc:  # argparse: --help (0) and usage errors (2)
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    except CliError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `gpuc logs ID | head`
        sys.stderr.close()
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
