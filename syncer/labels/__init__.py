"""The words of the accountant's pack in each language: one TOML file per language here
(`en.toml`, `nl.toml`, `fr.toml`), so the next language is one file; `LANGUAGES` is
the files found.

Dates, times and numbers in those words are written by the file's `locale` with Babel
(the CLDR's rules: "1 november 2026", "5,5"), the library every Python i18n tool uses,
rather than month names and separators kept here by hand. Cells of a workbook stay
typed: the spreadsheet shows them in its own locale.
"""

from __future__ import annotations

import datetime as dt
import tomllib
from dataclasses import dataclass
from decimal import Decimal
from functools import cache
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

HERE = Path(__file__).parent
LANGUAGES: tuple[str, ...] = tuple(sorted(p.stem for p in HERE.glob("*.toml")))
SECTIONS = ("sheets", "summary", "sources", "receipts", "about", "headings")


@dataclass(frozen=True)
class Labels:
    """One language's catalogue, and its locale's way with dates and numbers."""

    language: str
    locale: str
    catalogue: dict[str, dict[str, str]]

    def __call__(self, section: str, key: str, **values: Any) -> str:
        """The text `key` of `section`, its `{names}` filled in; KeyError if it lacks one."""
        return self.catalogue[section][key].format(**values)

    def get(self, section: str, key: str, default: str) -> str:
        return self.catalogue[section].get(key, default)

    def heading(self, name: str) -> str:
        """A column's heading: its name in this language, else the column's own name."""
        return self.catalogue["headings"].get(name, name)

    def date(self, day: dt.date) -> str:
        from babel.dates import format_date  # noqa: PLC0415  (only where words are written)

        return str(format_date(day, "long", locale=self.locale))

    def moment(self, moment: dt.datetime, tz: ZoneInfo) -> str:
        """A time in `tz`, in words, with the zone's name: every time a person reads says it."""
        from babel.dates import format_datetime  # noqa: PLC0415

        return f"{format_datetime(moment, 'medium', tzinfo=tz, locale=self.locale)} ({tz.key})"

    def number(self, value: Decimal) -> str:
        from babel.numbers import format_decimal  # noqa: PLC0415

        return str(format_decimal(value, locale=self.locale))


@cache
def load(language: str) -> Labels:
    """The catalogue of `language`; ValueError naming the languages there are."""
    if language not in LANGUAGES:
        raise ValueError(f"no labels for language {language!r}; there are: {', '.join(LANGUAGES)}")
    with (HERE / f"{language}.toml").open("rb") as file:
        data = tomllib.load(file)
    locale = data.pop("locale")
    return Labels(language, str(locale), {section: dict(data.get(section, {}))
                                          for section in SECTIONS})
