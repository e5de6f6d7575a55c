"""Day shapes: when in the day a simulated shop sells.

A shape is a mixture of peaks (a normal curve around a time of day) and a flat part
over the opening hours; times past midnight wrap onto the same day's small hours (a bar
open until 02:00 sells at 01:00 every day, the night before's). `generate(shape=...)`
draws a history in a shape, and `benchmarks.simulated_day` draws the day itself.
"""

from __future__ import annotations

import datetime as dt
import random
from dataclasses import dataclass
from zoneinfo import ZoneInfo


@dataclass(frozen=True)
class DayShape:
    name: str
    says: str
    opens: float  # hours after midnight; `closes` past 24 runs into the night
    closes: float
    peaks: tuple[tuple[float, float, float], ...] = ()  # (share, hour, spread in hours)

    def seconds(self, rng: random.Random, count: int) -> list[int]:
        """`count` order times, seconds after local midnight, sorted."""
        out = []
        for _ in range(count):
            roll = rng.random()
            hour = None
            for share, at, spread in self.peaks:
                if roll < share:
                    hour = rng.gauss(at, spread)
                    break
                roll -= share
            if hour is None:
                hour = rng.uniform(self.opens, self.closes)
            hour = min(max(hour, self.opens + 1 / 60), self.closes - 1 / 60)
            out.append(int(hour * 3600) % 86400)
        return sorted(out)

    def times(self, day: dt.date, count: int, rng: random.Random, tz: ZoneInfo) -> list[dt.datetime]:
        """`count` order times on `day` (local wall times, aware)."""
        midnight = dt.datetime.combine(day, dt.time(), tzinfo=tz)
        return [midnight + dt.timedelta(seconds=s) for s in self.seconds(rng, count)]


SHAPES: dict[str, DayShape] = {s.name: s for s in (
    DayShape("restaurant", "lunch and dinner peaks, 10:00-23:00", 10, 23,
             ((0.4, 12.75, 0.75), (0.5, 19.5, 1.0))),
    DayShape("flat", "a shop selling evenly over the configured hours, 10:00-23:00", 10, 23),
    DayShape("bakery", "a morning peak, 06:30-14:00", 6.5, 14, ((0.7, 8.5, 1.0),)),
    DayShape("bar", "a late peak, 16:00-02:00", 16, 26, ((0.7, 22.5, 1.5),)),
    DayShape("holiday", "a restaurant open 08:00-16:00 for one day, one peak", 8, 16,
             ((0.6, 12.5, 1.25),)),
)}
