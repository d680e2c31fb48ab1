"""`hapax`: quick calls to a Hapax gateway from a shell.

    hapax complete "Say hello" [--stream] [--model M] [--max-tokens N] [--temperature T]
    hapax embed "some text" ["more text" ...] [--model M] [--dimensions N]
    hapax models
    hapax usage [--from DAY] [--to DAY] [--by day,key,team,model,provider] [--key-id ID]
                [--team T] [--model M] [--provider P]
    hapax health [SERVICE]

Common options: --target host:port (or $HAPAX_TARGET, default localhost:50051), --key KEY (or
$HAPAX_API_KEY), --timeout seconds. A failed call prints its status, reason and details on
stderr, in one readable block, and exits 1; health exits 1 when not SERVING.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Any

from hapax.client import Client, CompleteOptions
from hapax.errors import HapaxError


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--target", default=os.environ.get("HAPAX_TARGET", "localhost:50051"))
    common.add_argument("--key", default=os.environ.get("HAPAX_API_KEY"), help="an API key")
    common.add_argument("--timeout", type=float, default=60.0, help="deadline in seconds")
    parser = argparse.ArgumentParser(
        prog="hapax", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    complete = commands.add_parser("complete", parents=[common], help="one completion")
    complete.add_argument("prompt")
    complete.add_argument("--stream", action="store_true", help="print text as it arrives")
    complete.add_argument("--model", default="")
    complete.add_argument("--max-tokens", type=int)
    complete.add_argument("--temperature", type=float)
    embed = commands.add_parser("embed", parents=[common], help="embeddings of texts")
    embed.add_argument("inputs", nargs="+")
    embed.add_argument("--model", default="")
    embed.add_argument("--dimensions", type=int)
    commands.add_parser("models", parents=[common], help="the logical models and their routes")
    usage = commands.add_parser(
        "usage", parents=[common], help="calls, tokens, cost and energy from the usage ledger"
    )
    usage.add_argument("--from", dest="start_day", default="", help="first UTC day, YYYY-MM-DD")
    usage.add_argument("--to", dest="end_day", default="", help="last UTC day (default today)")
    usage.add_argument("--by", default="model", help="group by: day,key,team,model,provider")
    usage.add_argument("--key-id", default="")
    usage.add_argument("--team", default="")
    usage.add_argument("--model", default="")
    usage.add_argument("--provider", default="")
    health = commands.add_parser("health", parents=[common], help="the gRPC health status")
    health.add_argument("service", nargs="?", default="")
    return parser


def describe(error: HapaxError) -> str:
    """A failed call as a few readable lines."""
    head = f"error: {error.code.name}"
    if error.reason:
        head += f" ({error.reason})"
    lines = [f"{head}: {error.message}"]
    lines += [f"  {v.field}: {v.description}" for v in error.violations]
    lines += [f"  quota {v.field}: {v.description}" for v in error.quota]
    if error.retry_after is not None:
        lines.append(f"  retry after {error.retry_after:g}s")
    if error.request_id:
        lines.append(f"  request id {error.request_id}")
    return "\n".join(lines)


USAGE_FIELDS = {
    "day": "day",
    "key": "key_id",
    "team": "team",
    "model": "model",
    "provider": "provider",
}  # --by name -> UsageRow field


def _money(cost: Any) -> str:
    return f"{cost.nanos / 1e9:.6f} {cost.currency}".strip()


def usage_table(reply: Any, by: Sequence[str]) -> str:
    """GetUsage's rows as an aligned text table: the group columns, then the totals. Cost is
    exact (nanos of the currency) and shown to the micro-unit; unpriced calls have no cost.
    When the response cache answered any of the calls, two more columns: its hits (counted in
    calls too, with no tokens and no cost) and what they saved."""
    cached = any(row.cache_hits for row in reply.rows)
    head = [*by, "calls", "errors", "prompt", "completion", "cost", "unpriced", "energy_wh"]
    if cached:
        head += ["cache_hits", "saved"]
    rows = [head]
    for row in reply.rows:
        rows.append(
            [
                *(getattr(row, USAGE_FIELDS[g]) or "-" for g in by),
                str(row.calls),
                str(row.errors),
                str(row.prompt_tokens),
                str(row.completion_tokens),
                _money(row.cost),
                str(row.unpriced_calls),
                f"{row.energy_joules / 3600:.4f}",
                *((str(row.cache_hits), _money(row.saved_cost)) if cached else ()),
            ]
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    return "".join(
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() + "\n" for r in rows
    )


def budget_lines(reply: Any) -> str:
    """Where each budget the caller may see stands, a line each (nothing when none)."""
    lines = []
    for b in reply.budgets:
        who = f"key {b.key_id}" if b.key_id else f"team {b.team}"
        since = f"this {b.window} (from {b.window_start})" if b.window_start else "in total"

        def amount(value: int, unit: str = b.unit) -> str:
            return f"{value:,} tokens" if unit == "tokens" else f"{value / 1e9:.6f} {unit}"

        lines.append(
            f"budget {b.name} ({who}) {since}: {amount(b.spent)} spent, {amount(b.reserved)}"
            f" reserved, {amount(b.remaining)} left of {amount(b.limit)}\n"
        )
    return ("\n" if lines else "") + "".join(lines)


def _run(args: argparse.Namespace, out: object = sys.stdout) -> int:
    write = out.write  # type: ignore[attr-defined]
    with Client(args.target, api_key=args.key, timeout=args.timeout) as client:
        if args.command == "complete":
            options: CompleteOptions = {"model": args.model}
            if args.max_tokens is not None:
                options["max_tokens"] = args.max_tokens
            if args.temperature is not None:
                options["temperature"] = args.temperature
            if args.stream:
                for message in client.stream(args.prompt, **options):
                    write(message.delta)
                    out.flush()  # type: ignore[attr-defined]
                write("\n")
            else:
                write(client.complete(args.prompt, **options).text + "\n")
        elif args.command == "embed":
            reply = client.embed(args.inputs, model=args.model, dimensions=args.dimensions)
            for text, embedding in zip(args.inputs, reply.embeddings, strict=True):
                values = " ".join(f"{v:.6f}" for v in embedding.values)
                write(f"{text}\t{values}\n")
        elif args.command == "models":
            listing = client.models()
            for model in listing.models:
                routes = ", ".join(
                    f"{r.rank}:{r.provider}({r.upstream_model})" for r in model.routes
                )
                able = [f.name for f, on in model.capabilities.ListFields() if on]
                default = " (default)" if model.name == listing.default_model else ""
                write(f"{model.name}{default}\t{routes}\t{','.join(able)}\n")
        elif args.command == "usage":
            by = [g for g in args.by.split(",") if g]
            totals = client.usage(
                start_day=args.start_day,
                end_day=args.end_day,
                key_id=args.key_id,
                team=args.team,
                model=args.model,
                provider=args.provider,
                group_by=by,
            )
            write(usage_table(totals, by))
            write(budget_lines(totals))
        elif args.command == "health":
            status = client.health(args.service)
            write(status + "\n")
            return 0 if status == "SERVING" else 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return _run(args)
    except HapaxError as error:
        print(describe(error), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
