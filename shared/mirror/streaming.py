"""Streaming scoring: judge the agent's words at each sentence boundary while TTS still encodes.

`first_sentence_end` runs on every streamed chunk, so it is a compiled regex plus a few character
tests: no I/O, no slicing except of the one short word before a period. A boundary fires only
when the punctuation is followed by whitespace and the first character of a new sentence, so a
chunk ending in "$31." waits for the next one (which may be "50"). Missing a boundary costs only
latency (the next boundary or the flush scores the words); a false one would judge half a
sentence, so ambiguous periods (titles, "U.S.", initials) are not boundaries.

`StreamingScorer` scores cumulatively: each partial judges the whole agent text up to the latest
complete sentence, not the new sentence alone, because the checks read the utterance as a whole
(a read-back, a negation) and the flush must judge exactly what a one-shot ScoreTurn would.
Tier 0 costs microseconds, so rescoring the prefix is cheaper than keeping partial state.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from mirror.models import MAX_TEXT_CHARS, MirrorConfig, ScoreTurnEvent, Verdict
from mirror.policy import is_directive, parse_directive
from mirror.service import ScoredTurn, ScoreTurnService
from mirror.state.base import MAX_TURN_ID_CHARS

# --- sentence boundaries --------------------------------------------------------------------

_CANDIDATE = re.compile("([.?!\u2026]+)[\"'\u201d\u2019)\\]}\u00bb]*")
"""Terminal punctuation (a run: "...", "?!") and the closing quotes or brackets after it."""
_SPACE = re.compile(r"\s+")
_OPENERS = frozenset("\"'\u201c\u2018([{\u00bf\u00a1$\u00a3\u20ac")
"""Characters a sentence may start with besides capitals and digits."""
_LIST_AFTER = frozenset(".?!:;\u2026\"'\u201d\u2019)")
"""What may precede a numbered item ("1.") other than the start of the text or a line."""

_NEVER_FINAL = frozenset(
    "mr mrs ms mx dr prof rev st mt e.g i.e vs approx incl excl apt ext tel dept cf viz".split()
)
"""Titles come before a name and these before what they introduce: never a sentence's end.
"St." may end one ("Elm St."), but "St. Louis" is likelier to be misjudged than late."""
_FINAL_BEFORE_CAPITAL = frozenset(("a.m", "p.m", "etc"))
"""May end a sentence: only when a capital letter follows ("at 10 a.m. Shall I ...")."""
_INITIALISM = re.compile(r"(?:[a-z]\.)+[a-z]")
"""U.S, U.K, D.C: mostly mid-sentence ("the U.S. Army", "U.S. Bank")."""
_MAX_WORD = 10
"""Longer words before a period are no abbreviation, list number or initial: stop looking."""


def first_sentence_end(text: str, start: int = 0, *, final: bool = False) -> int | None:
    """The index just after the first sentence boundary at or after `start`, or None.

    A boundary is terminal punctuation (plus closing quotes/brackets) followed by whitespace and
    the start of a new sentence. With `final` (the stream has ended), punctuation at the very end
    is one too; otherwise it is undecided and the function returns None until more text comes.
    Decisions never change as text is appended, so boundaries found in a prefix are the
    boundaries of the whole text.
    """
    n = len(text)
    search = _CANDIDATE.search
    m = search(text, start)
    while m is not None:
        end = m.end()
        if end == n:
            return end if final else None
        if not text[end].isspace():  # "$31.50", "a.m", "jo.smith@", "www.example.com"
            m = search(text, end)
            continue
        space = _SPACE.match(text, end)
        nxt = space.end() if space is not None else end + 1
        if nxt == n:
            return end if final else None  # the next sentence's first character is unknown
        first = text[nxt]
        if (first.isupper() or first.isdigit() or first in _OPENERS) and not (
            m.end(1) - m.start(1) == 1
            and text[m.start(1)] == "."
            and _not_an_end(text, m.start(1), first)
        ):
            return end
        m = search(text, nxt)
    return None


def _not_an_end(text: str, dot: int, first: str) -> bool:
    """Whether the period at `dot` closes an abbreviation, an initial or a list number.
    `first` is the next sentence's would-be first character."""
    lo = max(0, dot - _MAX_WORD)
    k = dot
    while k > lo and not text[k - 1].isspace():
        k -= 1
    if k == lo and k > 0 and not text[k - 1].isspace():
        return False  # a long word
    while k < dot and text[k] in _OPENERS:
        k += 1
    if k == dot:
        return False
    word = text[k:dot].lower()
    if word in _NEVER_FINAL:
        return True
    if word in _FINAL_BEFORE_CAPITAL:
        return not first.isupper()
    if word == "no":  # "No. 5" is a number; "No. That's not right." is an answer
        return first.isdigit()
    if word.isdigit():
        return len(word) <= 3 and _starts_item(text, k)
    if len(word) == 1:
        return text[k].isupper()  # an initial: "John J. Smith"
    return _INITIALISM.fullmatch(word) is not None


def _starts_item(text: str, k: int) -> bool:
    """Whether the number at `k` starts the text, a line, or follows a sentence or a colon:
    a numbered item ("1. Pepperoni"), not the last word of a sentence ("I'll take 2.")."""
    j = k - 1
    while j >= 0 and text[j].isspace():
        if text[j] == "\n":
            return True
        j -= 1
    return j < 0 or text[j] in _LIST_AFTER


# --- scoring ----------------------------------------------------------------------------------


class TurnScorer(Protocol):
    """How a `StreamingScorer` judges (and records) one agent turn: prefixes, then the whole."""

    def partial(self, agent_text: str, sentences: int) -> Verdict:
        """Judge the first `sentences` complete sentences of the turn (`agent_text`)."""
        ...

    def final(self, agent_text: str, decided: Verdict | None) -> Verdict:
        """Judge the whole turn; `decided` is a partial's verdict that already stands for it."""
        ...


@dataclass(frozen=True, slots=True)
class FunctionScorer:
    """A plain `score(agent_text) -> Verdict` function as a `TurnScorer`; records nothing."""

    score: Callable[[str], Verdict]

    def partial(self, agent_text: str, sentences: int) -> Verdict:
        return self.score(agent_text)

    def final(self, agent_text: str, decided: Verdict | None) -> Verdict:
        return decided if decided is not None else self.score(agent_text)


PARTIAL_MARK = "#p"
_PARTIAL_ROOM = len(PARTIAL_MARK) + 6
"""A partial's turn id is the turn's plus `#p` and a sentence count (at most 6 digits)."""


def partial_turn_id(turn_id: str, sentences: int) -> str:
    """The id a partial is recorded under. It names the prefix (its sentence count), not the
    call order, so a redelivered stream chunked differently replays the same verdicts."""
    return f"{turn_id}{PARTIAL_MARK}{sentences}"


def without_require(config: MirrorConfig) -> MirrorConfig:
    """The config partials are judged with: `REQUIRE` directives dropped, since the required
    phrase may still come later in the turn (the flush judges them). Every other check flags
    something present in the words, which stays present as the text grows."""
    kept = [p for p in config.policies if not (is_directive(p) and _is_require(p))]
    if len(kept) == len(config.policies):
        return config
    return config.model_copy(update={"policies": kept})


def _is_require(policy: str) -> bool:
    return parse_directive(policy).kind == "require"


@dataclass
class ServiceScorer:
    """Judges and records through `ScoreTurnService`, so streaming verdicts are recorded like any
    other and stay idempotent per turn id.

    A partial is recorded as `{turn_id}#p{n}` (n: its sentence count) with its verdict only; the
    whole turn as `turn_id` with its messages and verdict, so the history gets the agent line
    once. Partials judge speech only: the event's tool calls are judged at the flush, always.
    All scorings of the turn share one cooldown owner (`turn_id`), so a partial's intervention
    does not suppress the same turn's final scoring.
    """

    service: ScoreTurnService
    event: ScoreTurnEvent
    config: MirrorConfig
    turn_id: str
    results: list[ScoredTurn] = field(default_factory=list)
    """Every scoring, in order (`replayed` tells a redelivery's stored verdicts)."""
    _partial_config: MirrorConfig = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not 0 < len(self.turn_id) <= MAX_TURN_ID_CHARS - _PARTIAL_ROOM:
            raise ValueError(
                f"a streamed turn's id has 1..{MAX_TURN_ID_CHARS - _PARTIAL_ROOM} characters "
                "(its partials add a suffix)"
            )
        self._partial_config = without_require(self.config)

    def partial(self, agent_text: str, sentences: int) -> Verdict:
        event = self._event(agent_text, partial=True)
        scored = self.service.score(
            event,
            self._partial_config,
            partial_turn_id(self.turn_id, sentences),
            record_history=False,
            cooldown_owner=self.turn_id,
        )
        self.results.append(scored)
        return scored.verdict

    def final(self, agent_text: str, decided: Verdict | None) -> Verdict:
        if self.event.tool_calls:
            decided = None  # no partial judged them
        scored = self.service.score(
            self._event(agent_text, partial=False),
            self.config,
            self.turn_id,
            cooldown_owner=self.turn_id,
            decided=decided,
        )
        self.results.append(scored)
        return scored.verdict

    def _event(self, agent_text: str, *, partial: bool) -> ScoreTurnEvent:
        if len(agent_text) > MAX_TEXT_CHARS:  # model_copy does not validate
            raise ValueError(f"agent text has more than {MAX_TEXT_CHARS} characters")
        update: dict[str, object] = {"agent_text": agent_text}
        if partial:
            update["tool_calls"] = []
        return self.event.model_copy(update=update)


class StreamingScorer:
    """One agent turn's streamed text: a verdict at each new complete sentence, then the whole.

    Feed `score_partial` the text so far after every chunk (it only grows) and `flush` the
    final text once the stream ends. Not thread-safe: one scorer per turn, one caller.
    """

    __slots__ = ("_scorer", "_end", "_sentences", "_prefix", "_verdict", "_final")

    def __init__(self, scorer: TurnScorer) -> None:
        self._scorer = scorer
        self._end = 0
        """Where the last scored prefix ends (0: nothing scored yet)."""
        self._sentences = 0
        self._prefix = ""
        self._verdict: Verdict | None = None
        self._final: Verdict | None = None

    @classmethod
    def for_service(
        cls,
        service: ScoreTurnService,
        event: ScoreTurnEvent,
        config: MirrorConfig,
        turn_id: str,
    ) -> StreamingScorer:
        """Score and record through the service; `event` is the turn (its `agent_text` is
        replaced by the streamed text)."""
        return cls(ServiceScorer(service, event, config, turn_id))

    @property
    def verdict(self) -> Verdict | None:
        """The latest verdict (the final one after `flush`)."""
        return self._final if self._final is not None else self._verdict

    @property
    def sentences(self) -> int:
        """Complete sentences scored so far."""
        return self._sentences

    @property
    def stopped(self) -> bool:
        """A partial intervened or blocked: nothing more is scored before the flush."""
        return self._verdict is not None and self._verdict.decision != "allow"

    def score_partial(self, text_so_far: str) -> Verdict | None:
        """A verdict when a new complete sentence arrived (the text up to the last boundary is
        scored), else None; after an intervention, that verdict again without rescoring."""
        if self._final is not None:
            raise RuntimeError("the turn was flushed")
        if self.stopped:
            return self._verdict
        if not text_so_far.startswith(self._prefix):
            raise ValueError("streamed text must extend the text scored before")
        end, pos, count = 0, self._end, self._sentences
        while (found := first_sentence_end(text_so_far, pos)) is not None:
            end, pos, count = found, found, count + 1
        if not end:
            return None
        self._prefix = text_so_far[:end]
        self._end, self._sentences = end, count
        self._verdict = self._scorer.partial(self._prefix, count)
        return self._verdict

    def flush(self, final_text: str) -> Verdict:
        """The whole turn's verdict, recorded once. A partial's verdict stands for it when that
        partial intervened (the agent is being corrected) or scored exactly this text.
        `final_text` may be shorter than what was streamed (speech cut off by an intervention)."""
        if self._final is None:
            decided = None
            if self._verdict is not None and (
                self.stopped or final_text.strip() == self._prefix.strip()
            ):
                decided = self._verdict
            self._final = self._scorer.final(final_text, decided)
        return self._final
