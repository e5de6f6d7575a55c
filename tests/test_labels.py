"""The catalogue of the pack's words: every language has every text, with the same
placeholders, and names every column the pack shows; its locale writes dates and numbers."""

from __future__ import annotations

import datetime as dt
import string
from decimal import Decimal

import pytest

from syncer import export, labels, reports

CHECKED = ("sheets", "summary", "sources", "receipts", "about")
OTHERS = [language for language in labels.LANGUAGES if language != "en"]


def placeholders(text: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(text) if name}


def test_english_dutch_and_french_are_there() -> None:
    assert set(labels.LANGUAGES) >= {"en", "nl", "fr"}


@pytest.mark.parametrize("language", OTHERS)
def test_every_language_has_every_text_with_the_same_placeholders(language: str) -> None:
    english, other = labels.load("en").catalogue, labels.load(language).catalogue
    for section in CHECKED:
        assert set(other[section]) == set(english[section]), section
        for key, text in english[section].items():
            assert placeholders(other[section][key]) == placeholders(text), (section, key)


@pytest.mark.parametrize("language", labels.LANGUAGES)
def test_sheet_names_are_ones_a_workbook_accepts(language: str) -> None:
    names = labels.load(language).catalogue["sheets"].values()
    assert len(set(names)) == len(names)
    for name in names:
        assert 0 < len(name) <= 31 and not set(name) & set("[]:*?/\\"), name


@pytest.mark.parametrize("language", OTHERS)
def test_every_column_of_the_pack_has_a_heading(language: str) -> None:
    shown = {c.name for c in export.TOTALS.columns} | {"day"}
    for name in ("vat_month", "vat_quarter", "payments", "register_day", "documents", "tickets"):
        shown |= {c.name for c in reports.get(name).view.columns}
    assert shown <= set(labels.load(language).catalogue["headings"])


def test_an_unknown_language_names_the_ones_there_are() -> None:
    with pytest.raises(ValueError, match="no labels for language 'de'; there are: en, fr, nl"):
        labels.load("de")


@pytest.mark.parametrize(("language", "day", "number"), [
    ("en", "1 November 2026", "5.5"), ("nl", "1 november 2026", "5,5"),
    ("fr", "1 novembre 2026", "5,5")])
def test_dates_and_numbers_follow_the_locale(language: str, day: str, number: str) -> None:
    words = labels.load(language)
    assert words.date(dt.date(2026, 11, 1)) == day
    assert words.number(Decimal("5.5")) == number
    from zoneinfo import ZoneInfo

    moment = words.moment(dt.datetime(2026, 12, 6, 19, 44, tzinfo=dt.UTC), ZoneInfo("Europe/Brussels"))
    assert "20:44" in moment and moment.endswith("(Europe/Brussels)")
