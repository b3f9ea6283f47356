"""The ``pydet`` command line: ``pydet bench`` (kernel benchmarks), ``pydet train`` (train and evaluate a
detector, see :mod:`pydet.train`), ``pydet detect`` (run a trained checkpoint on images) and ``pydet info``
(build info)."""

from __future__ import annotations

import argparse
import functools
import json
import sys
import time

import torch


def _bench(args: argparse.Namespace) -> int:
    from pydet.benchmarks import cases as cases_mod
    from pydet.benchmarks import runner

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("pydet bench: --device cuda requested but CUDA is not available", file=sys.stderr)
        return 2
    if args.repeat < 1:
        print("pydet bench: --repeat must be at least 1", file=sys.stderr)
        return 2
    if args.plot:
        try:  # checked now rather than after minutes of timing
            import matplotlib  # noqa: F401
        except ImportError:
            print("pydet bench: --plot needs matplotlib: pip install matplotlib", file=sys.stderr)
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
    min_time = args.min_time if args.min_time is not None else (0.05 if args.quick else 0.2)
    env.update(min_time=min_time, repeat=args.repeat)
    print(
        f"pydet bench on {args.device} ({env['processor']}, {env['threads']} threads, CPU variant "
        f"{env['pydet']['cpu_capability']} = {env['pydet']['cpu_kernel_variant']}), torch {env['torch']}"
        f", torchvision {env['torchvision'] or 'not installed'}",
        flush=True,
    )
    if args.contended:
        from pydet.benchmarks import contention

        rows = _run_with_progress(
            functools.partial(contention.run, device=args.device, min_time=min_time), cases
        )
        print(contention.format_table(rows))
        print(
            "contended: a busy-loop process occupies one core; pydet at the default thread count against its "
            "own quiet single-thread time (slowdown) and against the baseline under the same contention."
        )
        if args.json:
            runner.write_json(args.json, {**env, "contended": True}, rows)
            print(f"wrote {args.json}")
        return 0
    run = functools.partial(runner.run, device=args.device, min_time=min_time, repeat=args.repeat)
    rows = _run_with_progress(run, cases)
    print(runner.markdown_table(rows) if args.markdown else runner.format_table(rows))
    print(
        "speed-up: baseline / pydet, medians in one process"
        + (f"; median (min–max) of {args.repeat} runs" if args.repeat > 1 else "")
        + ". Baseline: the eager PyTorch formula\n"
        "(pydet.benchmarks.reference, as torchvision/mmdet write it); for NMS, roi_align and deform_conv2d, "
        "torchvision's/mmcv's CPU kernels (bench/*_reference.cpp).\n"
        "floor: the time of a copy moving the bytes the op reads + writes (a buffer of half of them into "
        "another), timed in alternation with pydet and the baselines;\n"
        "of copy bw: floor / pydet time, the fraction of that bandwidth the op achieves (memory-bound ops)."
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
    if args.plot:
        from pydet.benchmarks.plot import plot_speedups

        plot_speedups(rows, env, args.plot)
        print(f"wrote {args.plot}")
    return 1 if not all(r["agrees_with_reference"] for r in rows) else 0


def _run_with_progress(run, cases: list) -> list[dict]:
    """``run(cases, progress=...)`` (``runner.run`` or ``contention.run`` with their settings bound)
    with a progress bar on stderr naming the case being timed. Where stderr is not a terminal (CI
    logs, redirects) the bar is off and each case gets one line instead of a stream of redrawn bars."""
    from tqdm import tqdm

    start = time.perf_counter()
    with tqdm(total=len(cases), unit="case", file=sys.stderr, disable=None, dynamic_ncols=True) as bar:

        def progress(k: int, total: int, case) -> None:
            bar.total = total
            bar.update(k - bar.n)
            if not bar.disable:
                bar.set_postfix_str(case.id if case else "")
            elif case is not None:
                elapsed = tqdm.format_interval(time.perf_counter() - start)
                print(f"[{k + 1}/{total} {elapsed}] {case.id}", file=sys.stderr, flush=True)

        return run(cases, progress=progress)


def _detect(args: argparse.Namespace) -> int:
    from pydet.detect import run

    return run(args.images, args.checkpoint, args.out, args.score_thresh, args.device)


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
        "--heavy",
        action="store_true",
        help="also the cases taking seconds per call (whole detectors on batches, the largest inputs)",
    )
    bench.add_argument("--json", metavar="PATH", help="also write the results (and machine info) as JSON")
    bench.add_argument("--csv", metavar="PATH", help="also write the results as CSV, one line per case")
    bench.add_argument("--filter", metavar="TEXT", help="only cases whose id (op[size]) contains TEXT")
    bench.add_argument("--threads", type=int, help="torch.set_num_threads before timing")
    bench.add_argument(
        "--min-time", type=float, help="seconds of timed calls per function (default 0.2, quick 0.05)"
    )
    bench.add_argument(
        "--repeat",
        type=int,
        default=1,
        metavar="N",
        help="time every case N times over; report the median and the range of the speed-ups",
    )
    bench.add_argument(
        "--plot", metavar="PNG", help="also plot the speed-ups per case, log scale (needs matplotlib)"
    )
    bench.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    bench.add_argument(
        "--contended",
        action="store_true",
        help="time every case while a busy-loop process occupies one core, against its quiet single-thread time",
    )
    bench.add_argument(
        "--memory", action="store_true", help="also measure peak memory of matching 1000 GT x 200,000 anchors"
    )
    bench.set_defaults(func=_bench)

    detect = sub.add_parser(
        "detect", help="detect objects in images with a checkpoint from `pydet train`; prints JSON"
    )
    detect.add_argument("images", nargs="+", metavar="IMAGE", help="image files (anything Pillow reads)")
    detect.add_argument(
        "--checkpoint", required=True, metavar="CKPT", help="a checkpoint written by `pydet train`"
    )
    detect.add_argument(
        "--out",
        metavar="PATH",
        help="also draw the detections: to PATH (e.g. out.png) for one image; for several images, or if PATH "
        "is a directory, to PATH/<IMAGE's name without extension>.png (the directory is created if needed)",
    )
    detect.add_argument(
        "--score-thresh", type=float, default=0.3, help="keep detections scoring at least this (default 0.3)"
    )
    detect.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    detect.set_defaults(func=_detect)

    # pydet.train owns its options (torchrun runs it as `-m pydet.train`): everything after `train` goes there
    sub.add_parser(
        "train",
        add_help=False,
        help="train a detector on synthetic shapes or COCO-format data, then evaluate (pydet train --help)",
    )

    info = sub.add_parser("info", help="print how pydet was built (versions, CUDA, compiler, threads)")
    info.set_defaults(func=_info)

    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["train"]:
        from pydet.train import main as train_main

        return train_main(argv[1:])
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
