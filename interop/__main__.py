"""``python -m interop run|list``: the interop runner's command line (interop/README.md)."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

from . import report
from .cases import all_cases
from .manifest import MANIFEST, TRANSPORTS, Implementation, ManifestError, load
from .runner import FAILED, Result, authorities, execute, labels, plan, run_all


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m interop",
                                     description="DMSC interop runner (interop/README.md)")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the matrix (or part of it)")
    run.add_argument("--impl", action="append", default=[], metavar="NAME",
                     help="only these implementations (repeatable; default: all)")
    run.add_argument("--pair", metavar="A:B",
                     help="only this pair: A as agent (or gateway), B as gateway (or peer "
                          "gateway)")
    run.add_argument("--case", action="append", default=[], metavar="NAME",
                     help="only these cases (repeatable; default: all)")
    run.add_argument("--transport", action="append", default=[], choices=TRANSPORTS,
                     help="only these transports (repeatable; default: all)")
    run.add_argument("--quick", action="store_true", help="only the quick cases (CI)")
    run.add_argument("--output", type=Path, metavar="DIR",
                     help="where results and logs go (default interop/logs/<time>)")
    run.add_argument("--manifest", type=Path, default=MANIFEST, metavar="FILE")
    debug = sub.add_parser(
        "debug", help="one case with one endpoint started by hand (yours, in a debugger)",
        description="Run one case on one transport with every endpoint but one started as "
                    "usual; the environment of that one (--yours) is printed for you to "
                    "start it by hand.  The case is then judged as in a run.")
    debug.add_argument("--case", required=True, metavar="NAME")
    debug.add_argument("--transport", default="udp", choices=TRANSPORTS)
    debug.add_argument("--yours", default="client@gateway", metavar="LABEL",
                       help="the endpoint you start: gateway, peer-gateway, server@gateway, "
                            "client@gateway, ... (default client@gateway)")
    debug.add_argument("--impl", default=None, metavar="NAME",
                       help="the implementation of the other endpoints (default: the "
                            "manifest's first)")
    debug.add_argument("--output", type=Path, metavar="DIR")
    debug.add_argument("--manifest", type=Path, default=MANIFEST, metavar="FILE")
    sub.add_parser("list", help="list the test cases")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    cases = all_cases()
    if args.command == "list":
        for case in cases:
            print(f"{case.name:<24} {'quick ' if case.quick else '      '}{case.kind:<8} "
                  f"{case.description}")
        return 0
    try:
        impls = load(args.manifest)
    except (ManifestError, OSError) as exc:
        print(f"python -m interop: {exc}", file=sys.stderr)
        return 2
    if args.command == "debug":
        return _debug(args, impls)
    names = {i.name for i in impls} | {c.name for c in cases}
    wanted = set(args.impl) | set(args.case) | set((args.pair or ":").split(":")) - {""}
    if unknown := wanted - names:
        print(f"python -m interop: unknown {sorted(unknown)}", file=sys.stderr)
        return 2
    if args.impl:
        impls = [i for i in impls if i.name in args.impl]
    cases = [c for c in cases if (not args.case or c.name in args.case)
             and (not args.quick or c.quick)]
    planned = list(plan(impls, cases, args.transport or list(TRANSPORTS)))
    if args.pair:
        planned = [p for p in planned if p.pair == tuple(args.pair.split(":", 1))]
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    output = args.output or Path(__file__).parent / "logs" / started.replace(":", "")
    output.mkdir(parents=True, exist_ok=True)
    results = asyncio.run(run_all(planned, output, sys.stdout))
    finished = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    report.write(output, results, cases, impls, started, finished)
    print(f"\n{report.summary_line(results)}\nresults: {output / 'results.json'}, "
          f"{output / 'matrix.md'}, {output / 'index.html'}")
    return 1 if any(r.status == FAILED for r in results) else 0


def _debug(args: argparse.Namespace, impls: list[Implementation]) -> int:
    case = next((c for c in all_cases() if c.name == args.case), None)
    impl = next((i for i in impls if i.name == (args.impl or impls[0].name)), None)
    problem = ("no such case" if case is None else
               "the codec case has nothing to wait for: run it with `run --case codec`"
               if case.decoder else f"no implementation {args.impl!r}" if impl is None else
               f"{case.name} has no endpoint {args.yours!r} (it has {labels(case)})"
               if args.yours not in labels(case) else None)
    if problem is not None or case is None or impl is None:
        print(f"python -m interop debug: {args.case}: {problem}", file=sys.stderr)
        return 2
    planned = next((p for p in plan([impl], [case], [args.transport])), None)
    if planned is None:
        print(f"python -m interop debug: {case.name} does not run over {args.transport}",
              file=sys.stderr)
        return 2
    output = args.output or Path(__file__).parent / "logs" / time.strftime(
        "debug-%Y%m%dT%H%M%SZ", time.gmtime())
    output.mkdir(parents=True, exist_ok=True)

    async def main() -> Result:
        return await execute(planned, output, authorities(output), manual=args.yours)

    result = asyncio.run(main())
    print(f"\n{result.status}{': ' + result.reason if result.reason else ''}\n"
          f"logs: {output / result.logs}")
    return 1 if result.status == FAILED else 0


if __name__ == "__main__":
    raise SystemExit(main())
