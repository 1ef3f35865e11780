"""Conversation analytics of a tenant's bots (``GET /v1/analytics``) and their charts.

Counted from the conversations and their events (``conversation_events``), summed in SQL per
UTC hour and channel (SQLite and PostgreSQL alike) and rolled up here into hours, days or
ISO weeks (Monday to Sunday). Every time is UTC.

What the numbers mean:

- ``conversations``: conversations that started in the window (counted in the period they
  started); ``handoffs``: those of them the bot handed to a person (a ``handoff`` event, at any
  time); ``contained``: the others, which ended or are idle without a person.
  ``containment_rate`` = contained / conversations, ``handoff_rate`` = handoffs / conversations.
- ``messages``: the customers' messages in the window (``user`` events, counted when sent);
  ``fallbacks``: the messages the bot did not understand (``fallback`` events);
  ``fallback_rate`` = fallbacks / messages.
- ``top_intents``: the intents of the customers' messages the bot understood, typed or a
  button's payload (a message answered with a fallback is left out, whatever NLU guessed);
  ``average_confidence``: the NLU's mean confidence on the typed messages (a button's
  payload is 1.0 without NLU: left out).

A rate is ``null`` when what it divides by is 0.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, Literal, get_args

from sqlalchemy import ColumnElement, and_, case, exists, func, select
from sqlalchemy.orm import Session, aliased

from core import plots
from core.errors import InvalidInput, NotFound
from core.evaluation import OUT_OF_SCOPE
from core.tables import Conversation, ConversationEvent

__all__ = [
    "PLOT_KINDS",
    "Analytics",
    "Granularity",
    "Window",
    "analytics",
    "check_plot_kind",
    "plot",
    "window",
]

Granularity = Literal["hour", "day", "week"]
GRANULARITIES: tuple[str, ...] = get_args(Granularity)
DEFAULT_DAYS = 30
MAX_PERIODS = 2000
TOP_INTENTS = 10
PLOT_KINDS = ("conversations", "rates", "top-intents", "channels")
STEP = {"hour": timedelta(hours=1), "day": timedelta(days=1), "week": timedelta(weeks=1)}


@dataclass(frozen=True)
class Window:
    """``[start, end)`` in UTC, split into periods of ``granularity``."""

    start: datetime
    end: datetime
    granularity: Granularity

    def periods(self) -> list[datetime]:
        """The start of every period that overlaps the window."""
        first, step = bucket(self.start, self.granularity), STEP[self.granularity]
        out = []
        at = first
        while at < self.end:
            out.append(at)
            at += step
        return out


EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(9999, 1, 1, tzinfo=UTC)
"""``from`` and ``to`` lie in ``[EARLIEST, LATEST]`` (so the periods around them are dates)."""


def _parse_time(value: str, name: str, *, end: bool) -> datetime:
    """An ISO date (``to``: the whole day is included) or date-time (UTC unless it says)."""
    try:
        if len(value) == 10:
            day = date.fromisoformat(value)
            start = datetime(day.year, day.month, day.day, tzinfo=UTC)
            parsed = start + timedelta(days=1) if end else start
        else:
            parsed = datetime.fromisoformat(value)
            parsed = parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed
            parsed = parsed.astimezone(UTC)
    except ValueError:
        raise _invalid(
            name, f"{value!r} is not an ISO date (2026-11-30) or date-time (2026-11-30T14:00:00Z)"
        ) from None
    except OverflowError:  # a day after 9999-12-31 or before 0001-01-01 in UTC
        parsed = LATEST + timedelta(days=1)
    if not EARLIEST <= parsed <= LATEST:
        raise _invalid(
            name, f"{value!r} is out of range: use a time from 1970-01-01 to 9998-12-31 (UTC)"
        )
    return parsed


def _invalid(name: str, message: str) -> InvalidInput:
    """A 422 whose ``details`` name the query parameter, as request validation's do."""
    return InvalidInput(f"{name}: {message}", details=[{"field": name, "message": message}])


def window(
    start: str | None, end: str | None, granularity: str, *, now: datetime | None = None
) -> Window:
    """The window asked for: ``from`` and ``to`` as ISO dates (``to`` included) or date-times
    (``to`` excluded), default the last 30 days up to now; ``InvalidInput`` for a bad one."""
    if granularity not in GRANULARITIES:
        raise _invalid("granularity", f"{granularity!r}: use one of {', '.join(GRANULARITIES)}")
    gran: Granularity = granularity  # type: ignore[assignment]
    stop = _parse_time(end, "to", end=True) if end else (now or datetime.now(UTC))
    begin = (
        _parse_time(start, "from", end=False)
        if start
        else bucket(stop - timedelta(days=DEFAULT_DAYS), "day")
    )
    if begin >= stop:
        raise _invalid("from", f"{begin.isoformat()} must be before to ({stop.isoformat()})")
    win = Window(begin, stop, gran)
    count = (stop - bucket(begin, gran)) / STEP[gran]
    if count > MAX_PERIODS:
        raise InvalidInput(
            f"{int(count)} {gran} periods asked for; at most {MAX_PERIODS}: shorten the window "
            "or use a coarser granularity"
        )
    return win


def bucket(when: datetime, granularity: Granularity) -> datetime:
    """The start of the UTC hour, day or ISO week (Monday) holding ``when``."""
    when = when.astimezone(UTC)
    hour = when.replace(minute=0, second=0, microsecond=0)
    if granularity == "hour":
        return hour
    day = hour.replace(hour=0)
    return day if granularity == "day" else day - timedelta(days=day.weekday())


def period_label(start: datetime, granularity: Granularity) -> str:
    """``2026-11-30`` (day, week) or ``2026-11-30T14:00:00Z`` (hour)."""
    if granularity == "hour":
        return start.strftime("%Y-%m-%dT%H:00:00Z")
    return start.date().isoformat()


# --- counting ---------------------------------------------------------------------------------


@dataclass
class Counts:
    conversations: int = 0
    handoffs: int = 0
    messages: int = 0
    fallbacks: int = 0
    bot_messages: int = 0
    agent_messages: int = 0

    def add(self, other: Counts) -> None:
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def as_dict(self) -> dict[str, Any]:
        contained = self.conversations - self.handoffs
        return {
            "conversations": self.conversations,
            "messages": self.messages,
            "contained": contained,
            "handoffs": self.handoffs,
            "fallbacks": self.fallbacks,
            "bot_messages": self.bot_messages,
            "agent_messages": self.agent_messages,
            "containment_rate": _rate(contained, self.conversations),
            "handoff_rate": _rate(self.handoffs, self.conversations),
            "fallback_rate": _rate(self.fallbacks, self.messages),
        }


def _rate(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


@dataclass(frozen=True)
class Analytics:
    bot_id: str | None
    window: Window
    totals: dict[str, Any]
    series: list[dict[str, Any]]
    top_intents: list[dict[str, Any]]
    channels: list[dict[str, Any]]
    extras: dict[str, Any] = field(default_factory=dict)


EVENT_KINDS = {
    "user": "messages",
    "fallback": "fallbacks",
    "bot": "bot_messages",
    "agent": "agent_messages",
}


def _hour(column: Any, dialect: str) -> ColumnElement[str]:
    """The UTC hour of a timestamp column as ``YYYY-MM-DD HH`` text, in SQL."""
    if dialect == "sqlite":  # stored as UTC text: 2026-11-30 14:05:01.000000
        return func.substr(column, 1, 13)
    return func.to_char(func.timezone("UTC", column), "YYYY-MM-DD HH24")


def _from_hour(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%d %H").replace(tzinfo=UTC)


def _fell_back() -> ColumnElement[bool]:
    """The customer message (a ``user`` event) was answered with a fallback: a ``fallback``
    event follows it before the customer's next message."""
    fallback, later = aliased(ConversationEvent), aliased(ConversationEvent)
    between = (
        exists()
        .where(
            later.conversation_id == ConversationEvent.conversation_id,
            later.kind == "user",
            later.id > ConversationEvent.id,
            later.id < fallback.id,
        )
        .correlate_except(later)
    )
    return (
        exists()
        .where(
            fallback.conversation_id == ConversationEvent.conversation_id,
            fallback.kind == "fallback",
            fallback.id > ConversationEvent.id,
            ~between,
        )
        .correlate_except(fallback)
    )


def analytics(session: Session, *, tenant_id: str, bot_id: str | None, win: Window) -> Analytics:
    """The tenant's (or one of its bots') conversation numbers in ``win``; the caller checked
    that ``bot_id`` is the tenant's."""
    dialect = session.get_bind().dialect.name
    scope = [Conversation.tenant_id == tenant_id]
    if bot_id is not None:
        scope.append(Conversation.bot_id == bot_id)

    cells: dict[tuple[datetime, str], Counts] = defaultdict(Counts)
    started = _hour(Conversation.created_at, dialect)
    handed_off = exists().where(
        ConversationEvent.conversation_id == Conversation.id, ConversationEvent.kind == "handoff"
    )
    rows = session.execute(
        select(
            started,
            Conversation.channel,
            func.count(),
            func.sum(case((handed_off, 1), else_=0)),
        )
        .where(*scope, Conversation.created_at >= win.start, Conversation.created_at < win.end)
        .group_by(started, Conversation.channel)
    )
    for hour, channel, count, handoffs in rows:
        cell = cells[(bucket(_from_hour(hour), win.granularity), channel)]
        cell.conversations += int(count)
        cell.handoffs += int(handoffs or 0)

    sent = _hour(ConversationEvent.created_at, dialect)
    in_window = and_(
        ConversationEvent.created_at >= win.start, ConversationEvent.created_at < win.end
    )
    rows = session.execute(
        select(sent, Conversation.channel, ConversationEvent.kind, func.count())
        .join(Conversation, Conversation.id == ConversationEvent.conversation_id)
        .where(*scope, in_window, ConversationEvent.kind.in_(EVENT_KINDS))
        .group_by(sent, Conversation.channel, ConversationEvent.kind)
    )
    for hour, channel, kind, count in rows:
        cell = cells[(bucket(_from_hour(hour), win.granularity), channel)]
        name = EVENT_KINDS[kind]
        setattr(cell, name, getattr(cell, name) + int(count))

    intent = ConversationEvent.data[("parse_data", "intent", "name")].as_string()
    confidence = ConversationEvent.data[("parse_data", "intent", "confidence")].as_float()
    said = and_(*scope, in_window, ConversationEvent.kind == "user", intent.is_not(None))
    typed = and_(said, ConversationEvent.data[("parse_data", "payload")].as_string().is_(None))
    top = session.execute(
        select(intent, func.count())
        .join(Conversation, Conversation.id == ConversationEvent.conversation_id)
        .where(said, intent != OUT_OF_SCOPE, ~_fell_back())
        .group_by(intent)
        .order_by(func.count().desc(), intent)
        .limit(TOP_INTENTS)
    ).all()
    average = session.scalar(
        select(func.avg(confidence))
        .join(Conversation, Conversation.id == ConversationEvent.conversation_id)
        .where(typed)
    )
    return _assemble(bot_id, win, cells, top, average)


def _assemble(
    bot_id: str | None,
    win: Window,
    cells: dict[tuple[datetime, str], Counts],
    top: Iterable[Any],
    average: float | None,
) -> Analytics:
    by_period: dict[datetime, Counts] = defaultdict(Counts)
    by_channel: dict[str, Counts] = defaultdict(Counts)
    totals = Counts()
    for (period, channel), cell in cells.items():
        by_period[period].add(cell)
        by_channel[channel].add(cell)
        totals.add(cell)
    series = [
        {"period": period_label(p, win.granularity), **by_period[p].as_dict()}
        for p in win.periods()
    ]
    channels = [
        {"channel": name, **counts.as_dict()}
        for name, counts in sorted(by_channel.items(), key=lambda kv: (-kv[1].conversations, kv[0]))
    ]
    return Analytics(
        bot_id=bot_id,
        window=win,
        totals={
            **totals.as_dict(),
            "average_confidence": round(float(average), 4) if average is not None else None,
        },
        series=series,
        top_intents=[{"intent": name, "count": int(n)} for name, n in top],
        channels=channels,
    )


# --- charts -----------------------------------------------------------------------------------


def check_plot_kind(kind: str) -> None:
    """``NotFound`` naming the charts unless ``kind`` is one (``PLOT_KINDS``)."""
    if kind not in PLOT_KINDS:
        raise NotFound(f"no analytics chart {kind!r}; the charts are {', '.join(PLOT_KINDS)}")


def plot(report: Analytics, kind: str, fmt: plots.PlotFormat) -> bytes:
    """One chart of ``report`` (``PLOT_KINDS``) as SVG or PNG bytes."""
    check_plot_kind(kind)
    fig = plots.figure(8.0, 3.6)
    ax = fig.add_subplot()
    periods = [row["period"] for row in report.series]
    x = list(range(len(periods)))
    scope = f"bot {report.bot_id}" if report.bot_id else "all bots"
    if kind == "conversations":
        width = 0.4
        ax.bar([i - width / 2 for i in x], [r["conversations"] for r in report.series],
               width, label="conversations")  # fmt: skip
        ax.bar([i + width / 2 for i in x], [r["messages"] for r in report.series],
               width, label="customer messages")  # fmt: skip
        ax.set_title(f"Conversations and messages per {report.window.granularity} ({scope}, UTC)")
        plots.counts_axis(ax.yaxis)
        _period_ticks(ax, periods)
        ax.legend(loc="upper left")
    elif kind == "rates":
        for key, label in (
            ("containment_rate", "containment"),
            ("handoff_rate", "handoff"),
            ("fallback_rate", "fallback"),
        ):
            values = [r[key] * 100 if r[key] is not None else float("nan") for r in report.series]
            ax.plot(x, values, marker="o", markersize=3, label=label)
        ax.set_ylim(0, 100)
        ax.set_ylabel("%")
        ax.set_title(f"Rates per {report.window.granularity} ({scope}, UTC)")
        _period_ticks(ax, periods)
        ax.legend(loc="upper left")
    elif kind == "top-intents":
        names = [row["intent"] for row in report.top_intents][::-1]
        ax.barh(names, [row["count"] for row in report.top_intents][::-1])
        ax.set_xlabel("customer messages")
        plots.counts_axis(ax.xaxis)
        ax.set_title(f"Top intents ({scope})")
        if not names:
            ax.text(0.5, 0.5, "no messages in this window", ha="center", transform=ax.transAxes)
    else:
        names = [row["channel"] for row in report.channels]
        width = 0.4
        pos = list(range(len(names)))
        ax.bar([i - width / 2 for i in pos], [r["conversations"] for r in report.channels],
               width, label="conversations")  # fmt: skip
        ax.bar([i + width / 2 for i in pos], [r["handoffs"] for r in report.channels],
               width, label="handed off")  # fmt: skip
        ax.set_xticks(pos, names)
        ax.set_title(f"Conversations per channel ({scope})")
        plots.counts_axis(ax.yaxis)
        ax.legend(loc="upper right")
        if not names:
            ax.text(0.5, 0.5, "no conversations in this window", ha="center",
                    transform=ax.transAxes)  # fmt: skip
    return plots.render(fig, fmt)


def _period_ticks(ax: Any, periods: list[str]) -> None:
    """At most about 12 labelled periods, so long windows stay readable."""
    step = max(1, len(periods) // 12)
    ticks = list(range(0, len(periods), step))
    ax.set_xticks(ticks, [periods[i] for i in ticks], rotation=30, ha="right")
