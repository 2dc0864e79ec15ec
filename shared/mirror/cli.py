"""`mirror` command line: score labelled cases (`eval`) and replay a recorded call (`replay`).

Import cost matters (the console script starts for every run), so rich, matplotlib and the
judge are imported inside the commands. Bad input exits 2 with one line on stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

if TYPE_CHECKING:
    from pydantic import ValidationError
    from rich.console import Console

    from mirror.evaluation import EvalReport, Ratio
    from mirror.judge.judge import RemoteTier
    from mirror.models import Message, MirrorConfig, Turn, Verdict

EXIT_USAGE = 2


class CliError(Exception):
    """Bad input: printed as `mirror: error: <message>`, exit 2, no traceback."""


class _Parser(argparse.ArgumentParser):
    """argparse prints usage plus the error and exits; we want one line and a return code."""

    def error(self, message: str) -> NoReturn:
        raise CliError(message)


# -- argument types ---------------------------------------------------------------------------


def parse_threshold(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise CliError(f"threshold {text!r} is not a number") from None
    if not 0.0 <= value <= 1.0:  # also rejects nan
        raise CliError(f"threshold {text!r} is outside 0..1")
    return value


def parse_sweep(text: str) -> list[float]:
    parts = [p.strip() for p in text.split(",")]
    if not any(parts) or any(not p for p in parts):
        raise CliError(f"--threshold-sweep {text!r}: expected a comma-separated list like 0.5,0.7")
    values: list[float] = []
    for part in parts:
        value = parse_threshold(part)
        if value not in values:
            values.append(value)
    return values


def parse_names(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",")]
    if any(not n for n in names):
        raise CliError(f"--irreversible {text!r}: empty tool name in the list")
    return names


def first_error(err: ValidationError) -> str:
    """pydantic's first complaint as `location: message`, fit for one line."""
    errors = err.errors(include_url=False)
    first = errors[0]
    cause = (first.get("ctx") or {}).get("error")
    msg = str(cause) if first["type"] == "value_error" and cause is not None else first["msg"]
    loc = ".".join(str(p) for p in first["loc"]) or "value"
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return " ".join(f"{loc}: {msg}{more}".split())


def _read_text(path: Path, what: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CliError(f"{what} {path}: no such file") from None
    except IsADirectoryError:
        raise CliError(f"{what} {path}: is a directory") from None
    except UnicodeDecodeError:
        raise CliError(f"{what} {path}: not valid UTF-8") from None
    except OSError as e:
        raise CliError(f"{what} {path}: cannot read: {e.strerror or e}") from None


def _read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(_read_text(path, what))
    except json.JSONDecodeError as e:
        raise CliError(f"{what} {path}: malformed JSON at line {e.lineno}: {e.msg}") from None


def load_policies(path: Path) -> list[str]:
    """A `.json` list of strings, or text with one policy per line (`#` comments, blanks)."""
    if path.suffix.lower() == ".json":
        data = _read_json(path, "policies")
        if not isinstance(data, list) or not all(isinstance(p, str) for p in data):
            raise CliError(f"policies {path}: expected a JSON list of strings")
        return data
    lines = (line.strip() for line in _read_text(path, "policies").splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def load_call(path: Path) -> list[Message]:
    """A recorded call: a JSON list of customer/agent/tool messages (a case's `history`)."""
    from pydantic import TypeAdapter, ValidationError

    from mirror.models import Message

    data = _read_json(path, "call")
    if not isinstance(data, list):
        raise CliError(f"call {path}: expected a JSON list of messages")
    try:
        return TypeAdapter(list[Message]).validate_python(data)
    except ValidationError as e:
        raise CliError(f"call {path}: invalid message {first_error(e)}") from None


def build_config(**fields: Any) -> MirrorConfig:
    from pydantic import ValidationError

    from mirror.models import MirrorConfig
    from mirror.policy import PolicyError, compile_policies

    try:
        config = MirrorConfig(**fields)
        compile_policies(config.policies)
    except ValidationError as e:
        raise CliError(f"invalid config: {first_error(e)}") from None
    except PolicyError as e:
        raise CliError(f"invalid policy: {e}") from None
    return config


# -- eval -------------------------------------------------------------------------------------


def remote_tiers_from_env(base: MirrorConfig) -> list[RemoteTier]:
    """The LLM tiers the standard variables configure (`OPENAI_API_KEY`, `AZURE_OPENAI_*`,
    `MIRROR_LLM_PROVIDER`, ...); none when they name no LLM: then the run is offline."""
    from mirror.llm import LLMError, build_remote_tiers, llm_settings_from_env

    try:
        settings = llm_settings_from_env()
        if settings is None:
            return []
        return build_remote_tiers(base.model_copy(update={"llm": settings}))
    except (ValueError, LLMError) as e:
        raise CliError(f"LLM configuration from the environment: {e}") from None


def _fmt_rate(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _ratio_cell(ratio: Ratio) -> str:
    if ratio.total == 0:
        return "n/a (0 cases)"
    return f"{ratio.hits / ratio.total:.3f}  ({ratio.hits}/{ratio.total})"


def tiers_line(tiers: Sequence[str]) -> str:
    names = ", ".join(tiers) or "none"
    return f"tiers: {names} (offline)" if list(tiers) == ["tier0"] else f"tiers: {names}"


def _print_eval_tables(report: EvalReport, console: Console) -> None:
    from rich.table import Table

    cases = Table(title="Per-case decisions", show_lines=False)
    cases.add_column("id", overflow="fold")
    cases.add_column("expected")
    cases.add_column("decision")
    cases.add_column("reasons", overflow="fold")
    for r in report.results:
        style = "" if r.correct else "bold red"
        cases.add_row(
            r.case.id,
            r.case.expect.decision,
            f"[{style}]{r.decision}[/]" if style else r.decision,
            ", ".join(r.codes) or "-",
        )
    console.print(cases)

    metrics = Table(title=f"Metrics ({report.cases} cases)")
    metrics.add_column("metric")
    metrics.add_column("value")
    rows: list[tuple[str, str]] = [
        ("block recall", _ratio_cell(report.block_recall)),
    ]
    for code, ratio in report.block_recall_by_code.items():
        rows.append((f"  block recall: {code}", _ratio_cell(ratio)))
    ex = report.block_recall_excluding_policy
    rows += [
        ("block recall excl. not_allowed_by_policy", _ratio_cell(ex)),
        ("false-block rate (allow gates)", _ratio_cell(report.false_block_rate)),
        ("intervene precision", _ratio_cell(report.intervene_precision)),
        ("intervene recall", _ratio_cell(report.intervene_recall)),
        ("false-intervention rate", _ratio_cell(report.false_intervention_rate)),
    ]
    for q, v in report.latency_us.items():
        rows.append((f"tier0 latency {q}", "n/a" if v is None else f"{v:,.1f} µs"))
    if not report.by_reason:
        rows.append(("reasons given", "-"))
    for code, n in report.by_reason.items():
        rows.append((f"reason given: {code}", f"{n} case{'' if n == 1 else 's'}"))
    for name, value in rows:
        metrics.add_row(name, value)
    console.print(metrics)
    console.print(tiers_line(report.tiers))


def cmd_eval(args: argparse.Namespace) -> int:
    from mirror.evaluation import CaseError, load_cases, run_eval

    base = build_config(
        **({} if args.threshold is None else {"intervention_threshold": args.threshold})
    )
    try:
        cases = load_cases(args.cases)
    except CaseError as e:
        raise CliError(str(e)) from None
    report = run_eval(cases, base, [] if args.tier0_only else remote_tiers_from_env(base))
    if args.json:
        sys.stdout.write(json.dumps(report.to_dict(), ensure_ascii=False) + "\n")
        sys.stdout.flush()
        return 0
    from rich.console import Console

    _print_eval_tables(report, Console(highlight=False))
    return 0


# -- replay -----------------------------------------------------------------------------------


def agent_turns(messages: Sequence[Message]) -> list[tuple[int, Turn]]:
    """(message index, Turn) for every agent message that says or calls something, judged
    against everything before it."""
    from pydantic import ValidationError

    from mirror.models import MAX_HISTORY_MESSAGES, AgentMessage, CustomerMessage, Turn

    turns: list[tuple[int, Turn]] = []
    customer_text = ""
    for i, msg in enumerate(messages):
        if isinstance(msg, AgentMessage) and (msg.text or msg.tool_calls):
            try:
                turn = Turn(
                    customer_text=customer_text,
                    agent_text=msg.text,
                    tool_calls=msg.tool_calls,
                    # a Turn carries at most this many; the oldest go first, as in the store
                    history=list(messages[max(0, i - MAX_HISTORY_MESSAGES) : i]),
                )
            except ValidationError as e:
                raise CliError(f"call message {i}: {first_error(e)}") from None
            turns.append((i, turn))
        elif isinstance(msg, CustomerMessage):
            customer_text = msg.text
    return turns


def _summary(turn: Turn, limit: int = 60) -> str:
    parts: list[str] = []
    if turn.agent_text:
        text = " ".join(turn.agent_text.split())
        parts.append(text if len(text) <= limit else text[: limit - 1] + "…")
    for call in turn.tool_calls:
        args = json.dumps(call.args, ensure_ascii=False, separators=(",", ":"))
        if len(args) > 40:
            args = args[:39] + "…"
        parts.append(f"{call.name}({args})")
    return " | ".join(parts)


def _cell(verdict: Verdict, threshold: float) -> str:
    if verdict.decision == "allow":
        return "allow"
    top = next((r.code for r in verdict.reasons if r.score >= threshold), None)
    color = "red" if verdict.decision == "block" else "yellow"
    return f"[{color}]{verdict.decision}[/]" + (f" {top}" if top else "")


def write_plot(path: Path, thresholds: Sequence[float], rates: Sequence[float]) -> None:
    """PNG of intervention rate per threshold. Figure + savefig uses the Agg canvas directly:
    no pyplot global state, no display needed."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4), dpi=100)
    ax = fig.subplots()
    ax.plot(list(thresholds), [100 * r for r in rates], marker="o")
    ax.set_xlabel("intervention threshold")
    ax.set_ylabel("agent turns not allowed (%)")
    ax.set_ylim(0, 100)
    ax.set_title("Mirror replay: intervention rate by threshold")
    ax.grid(True, alpha=0.3)
    try:
        fig.savefig(path, format="png")
    except OSError as e:
        raise CliError(f"--plot {path}: cannot write: {e.strerror or e}") from None


def cmd_replay(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import Progress
    from rich.table import Table

    from mirror.judge import Judge

    messages = load_call(args.call)
    policies = load_policies(args.policies)
    defaults = build_config()
    thresholds = args.threshold_sweep or [defaults.intervention_threshold]
    extra: dict[str, Any] = {"policies": policies}
    if args.irreversible is not None:
        extra["irreversible_tools"] = args.irreversible
    judges = [Judge(build_config(intervention_threshold=t, **extra)) for t in thresholds]
    turns = agent_turns(messages)
    if args.plot is not None and not args.plot.parent.is_dir():  # fail before the work
        raise CliError(f"--plot {args.plot}: no such directory {args.plot.parent}")

    verdicts: list[list[Verdict]] = []  # [turn][threshold]
    err = Console(stderr=True)
    with Progress(console=err, transient=True, disable=not err.is_terminal) as progress:
        task = progress.add_task("judging", total=len(turns) * len(judges))
        for _, turn in turns:
            row: list[Verdict] = []
            for judge in judges:
                row.append(judge.evaluate(turn))
                progress.advance(task)
            verdicts.append(row)

    table = Table(title=f"Replay: {args.call.name}")
    table.add_column("#", justify="right")
    table.add_column("agent turn", overflow="fold")
    for t in thresholds:
        table.add_column(f"t={t:g}")
    for (index, turn), row in zip(turns, verdicts, strict=True):
        table.add_row(
            str(index),
            _summary(turn),
            *(_cell(v, t) for v, t in zip(row, thresholds, strict=True)),
        )
    rates = [
        (sum(row[j].decision != "allow" for row in verdicts) / len(turns)) if turns else 0.0
        for j in range(len(thresholds))
    ]
    out = Console(highlight=False)
    out.print(table)
    out.print(f"agent turns: {len(turns)} of {len(messages)} messages")
    out.print(
        "intervention rate: "
        + ", ".join(f"t={t:g} {r:.0%}" for t, r in zip(thresholds, rates, strict=True))
    )
    out.print(tiers_line(["tier0"]))
    if args.plot is not None:
        write_plot(args.plot, thresholds, rates)
        out.print(f"plot: {args.plot}")
    return 0


# -- entry point ------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="mirror", description="Mirror: a silent supervisor for voice agents.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    ev = sub.add_parser(
        "eval",
        help="score labelled cases (case v1 JSON Lines): Tier 0, plus the LLM tiers when the "
        "environment configures an LLM",
    )
    ev.add_argument("cases", nargs="+", type=Path, metavar="CASES.jsonl")
    ev.add_argument("--json", action="store_true", help="print the metrics as one JSON line")
    ev.add_argument("--threshold", type=parse_threshold, help="intervention threshold (0..1)")
    ev.add_argument(
        "--tier0-only", action="store_true", help="offline: ignore an LLM the environment names"
    )
    ev.set_defaults(func=cmd_eval)

    rp = sub.add_parser("replay", help="judge every agent turn of a recorded call")
    rp.add_argument("call", type=Path, metavar="CALL.json", help="JSON list of messages")
    rp.add_argument(
        "--policies",
        type=Path,
        required=True,
        metavar="FILE",
        help=".json list of strings, or text with one policy per line",
    )
    rp.add_argument(
        "--threshold-sweep",
        type=parse_sweep,
        metavar="T,T,...",
        help="thresholds to judge at (default: the config's)",
    )
    rp.add_argument(
        "--irreversible",
        type=parse_names,
        metavar="NAME,...",
        help="irreversible tool names or globs (default: the config's list)",
    )
    rp.add_argument(
        "--plot", type=Path, metavar="PNG", help="write the intervention rate per threshold"
    )
    rp.set_defaults(func=cmd_replay)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        return int(args.func(args))
    except CliError as e:
        print(f"mirror: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except SystemExit as e:  # --help / --version
        return e.code if isinstance(e.code, int) else 0
    except BrokenPipeError:
        # `mirror eval … | head`: the reader left. Point stdout at devnull so the interpreter's
        # final flush does not raise again (the Python docs' recipe for SIGPIPE).
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1


if __name__ == "__main__":
    sys.exit(main())
