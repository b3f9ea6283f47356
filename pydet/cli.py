"""The ``pydet`` command line: ``pydet bench`` (kernel benchmarks) and ``pydet info`` (build info)."""

from __future__ import annotations

import argparse
import json
import sys

import torch


def _bench(args: argparse.Namespace) -> int:
    from pydet.benchmarks import cases as cases_mod
    from pydet.benchmarks import runner

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("pydet bench: --device cuda requested but CUDA is not available", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    cases = [c for c in cases_mod.all_cases() if (not args.quick or c.quick) and (args.heavy or not c.heavy)]
    if args.filter:
        cases = [c for c in cases if args.filter in c.id]
    if not cases:
        print(f"pydet bench: no case matches --filter {args.filter!r}", file=sys.stderr)
        return 2
    env = runner.environment(args.device)
    print(
        f"pydet bench on {args.device} ({env['processor']}, {env['threads']} threads), torch {env['torch']}"
        f", torchvision {env['torchvision'] or 'not installed'}",
        flush=True,
    )

    interactive = sys.stderr.isatty()

    def progress(k, total, case):
        if case is None:
            if interactive:
                print(file=sys.stderr)
            return
        msg = f"[{k + 1}/{total}] {case.id}"
        if interactive:  # one self-overwriting status line
            print(f"\r{msg:<70}", end="", file=sys.stderr, flush=True)
        else:  # logs: one line per case
            print(msg, file=sys.stderr, flush=True)

    min_time = args.min_time if args.min_time is not None else (0.1 if args.quick else 0.3)
    rows = runner.run(cases, args.device, min_time, progress=progress)
    print(runner.markdown_table(rows) if args.markdown else runner.format_table(rows))
    print(
        "speed-up: baseline / pydet, medians in one process. Baseline: the eager PyTorch formula (pydet.reference,\n"
        "as torchvision/mmdet write it); for NMS, torchvision's/mmcv's CPU kernels (bench/nms_reference.cpp).\n"
        "floor: bytes read + written at the copy bandwidth measured in the same run "
        "(a copy of an output-sized buffer; read and write bytes both counted)."
    )
    memory_rows = []
    if args.memory:
        from pydet.benchmarks.memory import match_memory_rows

        print(
            "\npeak extra host memory (fresh process per workload, peak resident set (VmHWM) over the call):"
        )
        memory_rows = match_memory_rows(threads=torch.get_num_threads())
        for r in memory_rows:
            print(f"  {r['workload']:<42} {r['size']:>12}  {r['peak_extra_mb']:10.1f} MB")
    if args.json:
        runner.write_json(args.json, env, rows, memory_rows)
        print(f"wrote {args.json}")
    if args.csv:
        runner.write_csv(args.csv, rows)
        print(f"wrote {args.csv}")
    return 1 if not all(r["agrees_with_reference"] for r in rows) else 0


def _info(args: argparse.Namespace) -> int:
    import pydet

    print(json.dumps(pydet.build_info(), indent=2))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pydet", description="pydet: fast, exact detection ops for PyTorch")
    sub = parser.add_subparsers(dest="command", required=True)

    bench = sub.add_parser(
        "bench", help="time every kernel against the eager PyTorch formula (and torchvision)"
    )
    bench.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    bench.add_argument("--quick", action="store_true", help="a smaller set of cases and shorter timing")
    bench.add_argument(
        "--heavy", action="store_true", help="also time whole detectors on batches (seconds per call)"
    )
    bench.add_argument("--json", metavar="PATH", help="also write the results (and machine info) as JSON")
    bench.add_argument("--csv", metavar="PATH", help="also write the results as CSV, one line per case")
    bench.add_argument("--filter", metavar="TEXT", help="only cases whose id (op[size]) contains TEXT")
    bench.add_argument("--threads", type=int, help="torch.set_num_threads before timing")
    bench.add_argument(
        "--min-time", type=float, help="seconds of timed calls per function (default 0.3, quick 0.1)"
    )
    bench.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    bench.add_argument(
        "--memory", action="store_true", help="also measure peak memory of matching 1000 GT x 200,000 anchors"
    )
    bench.set_defaults(func=_bench)

    info = sub.add_parser("info", help="print how pydet was built (versions, CUDA, compiler, threads)")
    info.set_defaults(func=_info)

    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
