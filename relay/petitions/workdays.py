"""Working days and deadlines (Luật Tiếp công dân: so many working days from receipt).

A working day is Monday to Friday and not a configured holiday, counted in the
configured time zone (Asia/Ho_Chi_Minh). The deadline of a petition received on day D
is the Nth working day after D (D itself does not count, whatever the hour), where N
is the rule in force on D: `deadline_working_days`, or the latest
`[[petitions.rules]]` whose `valid_from` is on or before D. Laws change on given
dates, so a new rule is configuration with its date, and petitions received before
it keep the deadline they were given.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, timezone, tzinfo

from relay.config import PetitionsConfig

# Vietnam has kept UTC+7 without daylight saving since 1975: usable without tzdata
VIETNAM = timezone(timedelta(hours=7), "ICT")
DAY = timedelta(days=1)
MAX_SPAN = 3660  # days: a holidays list cannot make a deadline search run forever


def zone(name: str) -> tzinfo:
    try:
        from zoneinfo import ZoneInfo

        return ZoneInfo(name)
    except Exception:
        if name == "Asia/Ho_Chi_Minh":
            return VIETNAM
        raise


@dataclass(frozen=True)
class Calendar:
    holidays: frozenset[date]
    default_days: int
    rules: tuple[tuple[date, int], ...] = ()  # (valid_from, working days), sorted
    tz: tzinfo = VIETNAM

    @classmethod
    def from_config(cls, p: PetitionsConfig) -> Calendar:
        rules = tuple(sorted((r.valid_from, r.deadline_working_days) for r in p.rules))
        return cls(p.all_holidays, p.deadline_working_days, rules, zone(p.timezone))

    # --- days --------------------------------------------------------------------------
    def local_date(self, when: datetime) -> date:
        return when.astimezone(self.tz).date()

    def today(self) -> date:
        return self.local_date(datetime.now(UTC))

    def day_end(self, day: date) -> datetime:
        """The first instant (UTC) after `day` ends here: "as of day" includes all of it."""
        return datetime.combine(day + DAY, time(), self.tz).astimezone(UTC)

    def is_working_day(self, day: date) -> bool:
        return day.weekday() < 5 and day not in self.holidays

    def add_working_days(self, start: date, n: int) -> date:
        """The nth working day after `start` (`start` itself never counts)."""
        day, counted = start, 0
        for _ in range(MAX_SPAN):
            if counted >= n:
                return day
            day += DAY
            if self.is_working_day(day):
                counted += 1
        raise ValueError(f"no {n} working days within {MAX_SPAN} days of {start}")

    def working_days_between(self, start: date, end: date) -> int:
        """Working days in (start, end]; 0 when end is not after start."""
        count, day = 0, start
        while day < end and count < MAX_SPAN:
            day += DAY
            count += self.is_working_day(day)
        return count

    # --- the law ------------------------------------------------------------------------
    def working_days_on(self, received: date) -> int:
        """The number of working days the rule in force on `received` gives."""
        starts = [start for start, _ in self.rules]
        i = bisect.bisect_right(starts, received)
        return self.rules[i - 1][1] if i else self.default_days

    def deadline(self, received: datetime) -> tuple[date, int]:
        """(the last day to answer, the working days the rule gave) for a petition
        received at that instant."""
        day = self.local_date(received)
        n = self.working_days_on(day)
        return self.add_working_days(day, n), n
