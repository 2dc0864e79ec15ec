"""The offline demo: replay a recorded call through the real handlers, no AWS account.

`python -m mirror_dev.demo [--call PATH]` (`make demo` runs a whole call through the bridge
instead: scripts/demo_call.py). It starts moto in-process, creates the call-state table as
template.yaml defines it, imports the ScoreTurn, GateTool and GenerateCorrection handlers from
this checkout and sends ScoreTurn one event per agent turn of the recording, in stored-history
mode (each event carries only the turn: call_id, tenant_id, turn_id, customer_text, agent_text,
tool_calls). A turn with planned tool calls also goes to GateTool; an intervention goes to
GenerateCorrection (templates: no LLM is configured). It prints the timeline with each verdict,
then what DynamoDB holds for the call.

Nothing leaves the process: dummy credentials, moto's in-process mock, no endpoint. Powertools
output (JSON logs, EMF metrics on stdout) is swallowed so the timeline stays readable; the
environment is restored afterwards, so `main()` can be called from tests.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
import time
import warnings
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from pydantic import TypeAdapter, ValidationError
from rich.console import Console
from rich.table import Table
from rich.text import Text

from mirror.models import AgentMessage, CallContext, CustomerMessage, Message, ToolMessage
from mirror_dev.lambda_context import LambdaContext
from mirror_dev.local import call_table_properties, create_call_table, import_file

REPO_ROOT = Path(__file__).resolve().parents[2]
"""dev/mirror_dev/demo.py -> the checkout (the development package is installed editable)."""
HANDLER_PATH = Path("functions/score_turn/app.py")
GATE_HANDLER_PATH = Path("functions/gate_tool/app.py")
CORRECTION_HANDLER_PATH = Path("functions/generate_correction/app.py")
TEMPLATE_PATH = Path("template.yaml")
DEFAULT_CALL = Path("events/sample_call.json")

TABLE_NAME = "mirror-demo-call-state"
REGION = "us-east-1"
CALL_ID = "CA-demo-sample"
TENANT_ID = "pizzeria"

DEMO_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": REGION,
    "AWS_REGION": REGION,
    "CALL_TABLE": TABLE_NAME,
    "POWERTOOLS_SERVICE_NAME": "mirror-demo",
    "POWERTOOLS_METRICS_NAMESPACE": "MirrorDemo",
    "POWERTOOLS_LOG_LEVEL": "ERROR",
    "POWERTOOLS_TRACE_DISABLED": "1",
}
"""POWERTOOLS_METRICS_DISABLED is not used: in Powertools 3.37 `single_metric` ignores it, and
with it set `log_metrics` never clears the (class-wide) metric set. stdout is redirected instead."""
UNSET_ENV = (
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_DYNAMODB",
    "MIRROR_CONFIG",
    "POWERTOOLS_DEV",
    "POWERTOOLS_LOGGER_LOG_EVENT",
    "POWERTOOLS_METRICS_DISABLED",
)

DECISION_STYLES = {
    "allow": ("ALLOW", "bold black on green"),
    "intervene": ("INTERVENE", "bold black on yellow"),
    "block": ("BLOCK", "bold white on red"),
}
LABEL_WIDTH = 7

_MESSAGES: TypeAdapter[list[Message]] = TypeAdapter(list[Message])


class DemoError(Exception):
    """Something the user can fix (wrong place, bad call file); printed without a traceback."""


# --- setup ------------------------------------------------------------------------------------


def find_checkout(root: Path = REPO_ROOT) -> Path:
    missing = [str(p) for p in (HANDLER_PATH, TEMPLATE_PATH) if not (root / p).is_file()]
    if missing:
        raise DemoError(
            f"mirror_dev.demo needs a Mirror checkout: {', '.join(missing)} not found under "
            f"{root}. "
            "Run `python -m mirror_dev.demo` from a git checkout with the development package "
            "installed in editable mode (`make venv`), not from a built layer, image or wheel."
        )
    return root


def table_properties(root: Path) -> dict[str, Any]:
    try:
        return call_table_properties(root / TEMPLATE_PATH)
    except ValueError as e:
        raise DemoError(str(e)) from None


def load_call(path: Path) -> list[Message]:
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise DemoError(f"cannot read the call file {path}: {e.strerror or e}") from None
    except ValueError as e:
        raise DemoError(f"{path} is not JSON: {e}") from None
    try:
        messages = _MESSAGES.validate_python(raw)
    except ValidationError as e:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(file)'}: {err['msg']}"
            for err in e.errors(include_url=False)[:5]
        )
        raise DemoError(
            f"{path} is not a recorded call (a JSON list of customer/agent/tool messages): "
            f"{problems}"
        ) from None
    if not any(isinstance(m, AgentMessage) for m in messages):
        raise DemoError(f"{path} has no agent turn to score")
    return messages


@contextlib.contextmanager
def demo_environment() -> Iterator[None]:
    """Dummy credentials and quiet Powertools for the demo; the caller's environment after."""
    saved = {k: os.environ.get(k) for k in (*DEMO_ENV, *UNSET_ENV)}
    try:
        for k in UNSET_ENV:
            os.environ.pop(k, None)
        os.environ.update(DEMO_ENV)
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextlib.contextmanager
def quiet(sink: io.StringIO) -> Iterator[None]:
    """Powertools' JSON logs and EMF lines go to stdout; the demo keeps them out of sight."""
    with contextlib.redirect_stdout(sink), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def import_handler(root: Path, path: Path = HANDLER_PATH) -> ModuleType:
    try:
        return import_file(root / path, f"mirror_demo_{path.parent.name}_app")
    except ImportError as e:
        raise DemoError(str(e)) from e


# --- replay -----------------------------------------------------------------------------------


def _context(request_id: str) -> LambdaContext:
    return LambdaContext("mirror-demo-score-turn", request_id, remaining_ms=10_000)


def turn_events(messages: Sequence[Message]) -> Iterator[tuple[int, dict[str, Any]]]:
    """(message index, ScoreTurn event) for each agent message: the turn and the caller's
    newest line before it. Tool results are not sent (the event has no field for them)."""
    caller = ""
    turn = 0
    for i, m in enumerate(messages):
        if isinstance(m, CustomerMessage):
            caller = m.text
        elif isinstance(m, AgentMessage):
            turn += 1
            yield (
                i,
                {
                    "call_id": CALL_ID,
                    "tenant_id": TENANT_ID,
                    "turn_id": f"turn-{turn:03d}",
                    "customer_text": caller,
                    "agent_text": m.text,
                    "tool_calls": [
                        c.model_dump(mode="json", exclude_none=True) for c in m.tool_calls
                    ],
                },
            )


class Timeline:
    def __init__(self, console: Console) -> None:
        self.console = console

    def row(self, label: str, style: str, body: Text) -> None:
        grid = Table.grid(padding=(0, 1))
        grid.add_column(width=LABEL_WIDTH, no_wrap=True)
        grid.add_column(ratio=1)
        grid.add_row(Text(label, style=style), body)
        self.console.print(grid)

    def message(self, m: Message) -> None:
        if isinstance(m, CustomerMessage):
            self.row("CALLER", "bold cyan", Text(m.text))
        elif isinstance(m, ToolMessage):
            self.row("TOOL", "dim", Text(f"{m.name} -> {m.text}", style="dim"))
        else:
            body = Text(m.text)
            for call in m.tool_calls:
                args = ", ".join(f"{k}={json.dumps(v)}" for k, v in call.args.items())
                if body:
                    body.append("\n")
                body.append(f"-> {call.name}({args})", style="magenta")
            self.row("AGENT", "bold blue", body)

    def verdict(self, response: dict[str, Any]) -> None:
        if "error" in response:
            err = response["error"]
            body = Text.assemble((" ERROR ", "bold white on red"), f" {err['type']}: ")
            body.append(str(err.get("message", "")))
            self.row("", "", body)
            return
        word, style = DECISION_STYLES.get(response["decision"], (response["decision"], "bold"))
        body = Text.assemble((f" {word} ", style), " ")
        reasons = response.get("reasons") or []
        if reasons:
            top = reasons[0]
            body.append(top["check"], style="bold")
            body.append(f": {top['evidence']}")
        else:
            body.append("clean", style="green")
        latency = response.get("latency_us", {}).get("tier0")
        if latency is not None:
            body.append(f"  [Tier 0 {latency:,.0f} µs]", style="dim")
        if response.get("blocked_tool_call_ids"):
            body.append(f"\nblocked: {', '.join(response['blocked_tool_call_ids'])}", style="red")
        if response.get("cooldown_suppressed"):
            body.append("\nintervention suppressed: cooldown active", style="yellow")
        if response.get("buffer_text"):
            body.append(f"\nbuffer line: {response['buffer_text']!r}", style="yellow")
        self.row("", "", body)

    def gate(self, response: dict[str, Any]) -> None:
        """GateTool's answer for the turn's planned calls."""
        if "error" in response:
            self.verdict(response)
            return
        for d in response["decisions"]:
            word, style = DECISION_STYLES.get(d["decision"], (d["decision"].upper(), "bold"))
            body = Text.assemble(("GATE ", "bold magenta"), (f" {word} ", style))
            body.append(f" {d['name']} ({d['decided_by']})")
            if d.get("spoken_line"):
                body.append(f"\nagent says: {d['spoken_line']!r}", style="red")
            self.row("", "", body)

    def correction(self, response: dict[str, Any]) -> None:
        """GenerateCorrection's line for the caller and note for the agent's next turn."""
        if "error" in response:
            self.verdict(response)
            return
        body = Text.assemble(("CORRECTION", "bold yellow"), f" ({response['source']})")
        body.append(f"\nagent says: {response['correction_text']!r}")
        body.append(f"\nnote for the agent's next turn: {response['override_note']!r}", style="dim")
        self.row("", "", body)


def summarize(console: Console, client: Any) -> None:
    from mirror.state import DynamoDBStateStore
    from mirror.state.base import SK

    store = DynamoDBStateStore(TABLE_NAME, client=client)
    ctx = CallContext(call_id=CALL_ID, tenant_id=TENANT_ID)
    now = time.time()
    history = store.get_history(ctx, now, 500)
    verdicts = store.list_verdicts(ctx, now)
    roles = Counter(m.role for m in history)
    decisions = Counter(v.verdict.decision for v in verdicts)
    items = client.scan(TableName=TABLE_NAME)["Items"]
    kinds = Counter(item[SK]["S"].split("#", 1)[0] for item in items)

    table = Table(title=f"DynamoDB now holds for {TENANT_ID}#{CALL_ID}", title_justify="left")
    table.add_column("what", style="bold")
    table.add_column("count", justify="right")
    table.add_column("detail")
    table.add_row(
        "messages",
        str(len(history)),
        ", ".join(f"{role} {n}" for role, n in sorted(roles.items())),
    )
    table.add_row(
        "verdicts",
        str(len(verdicts)),
        ", ".join(f"{d} {decisions[d]}" for d in ("allow", "intervene", "block") if decisions[d]),
    )
    table.add_row("items", str(len(items)), ", ".join(f"{k} {n}" for k, n in sorted(kinds.items())))
    console.print(table)


def replay(root: Path, messages: Sequence[Message], call_name: str, console: Console) -> int:
    """Replay under moto; returns the number of turns the handler answered with an error."""
    import boto3
    from moto import mock_aws

    props = table_properties(root)
    sink = io.StringIO()
    errors = 0
    with mock_aws():
        client = boto3.client("dynamodb", region_name=REGION)
        create_call_table(client, TABLE_NAME, props)
        with quiet(sink):
            app = import_handler(root)
            gate = import_handler(root, GATE_HANDLER_PATH)
            corrections = import_handler(root, CORRECTION_HANDLER_PATH)
        try:
            console.rule(f"Mirror demo: {call_name}")
            console.print(
                Text(
                    f"ScoreTurn handler {HANDLER_PATH} on moto DynamoDB ({TABLE_NAME}), "
                    "one event per agent turn, stored-history mode; GateTool for planned "
                    "irreversible calls, GenerateCorrection after an intervention (templates: "
                    "no LLM is configured)",
                    style="dim",
                )
            )
            timeline = Timeline(console)
            events = dict(turn_events(messages))
            for i, m in enumerate(messages):
                timeline.message(m)
                event = events.get(i)
                if event is None:
                    continue
                with quiet(sink):
                    response = app.lambda_handler(event, _context(event["turn_id"]))
                errors += "error" in response
                timeline.verdict(response)
                if event["tool_calls"]:
                    with quiet(sink):
                        gate_event = {k: v for k, v in event.items() if k != "turn_id"}
                        decided = gate.lambda_handler(gate_event, _context(f"{event['turn_id']}-g"))
                    errors += "error" in decided
                    timeline.gate(decided)
                if response.get("decision") == "intervene":
                    with quiet(sink):
                        fixed = corrections.lambda_handler(
                            {**event, "verdict": response},
                            _context(f"{event['turn_id']}-c"),
                        )
                    errors += "error" in fixed
                    timeline.correction(fixed)
            console.rule()
            summarize(console, client)
        finally:
            for module in (app, gate, corrections):
                module.deps.loop().close()  # its services go with the module
                sys.modules.pop(module.__name__, None)
    return errors


# --- entry point ------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mirror_dev.demo",
        description="Replay a recorded call through the real ScoreTurn handler, offline.",
    )
    parser.add_argument(
        "--call",
        type=Path,
        help=f"a recorded call: a JSON list of messages (default: {DEFAULT_CALL})",
    )
    args = parser.parse_args(argv)
    console = Console(highlight=False)
    try:
        root = find_checkout()
        path = args.call if args.call is not None else root / DEFAULT_CALL
        messages = load_call(path)
        try:
            call_name = str(path.resolve().relative_to(root))
        except ValueError:
            call_name = str(path)
        with demo_environment():
            errors = replay(root, messages, call_name, console)
    except DemoError as e:
        Console(stderr=True, highlight=False).print(
            Text(f"mirror demo: {e}", style="red"), soft_wrap=True
        )
        return 2
    return 1 if errors else 0


if __name__ == "__main__":
    raise SystemExit(main())
