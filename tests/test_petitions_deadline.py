"""Deadlines: N working days after the day of receipt (Asia/Ho_Chi_Minh), weekends and
configured holidays skipped, the rule in force on that day (fixed dates throughout)."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from relay.config import ConfigError, from_dict
from relay.petitions.numbers import NumberFormat
from relay.petitions.workdays import Calendar


def calendar(**petitions) -> Calendar:
    return Calendar.from_config(from_dict({"petitions": petitions}).petitions)


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


@pytest.mark.parametrize(("received", "deadline"), [
    ("2026-07-06T10:00+07:00", date(2026, 7, 20)),  # Monday: the Monday two weeks on
    ("2026-07-10T16:59+07:00", date(2026, 7, 24)),  # Friday: the weekend does not count
    ("2026-07-11T09:00+07:00", date(2026, 7, 24)),  # Saturday: counted from Monday
    ("2026-07-12T09:00+07:00", date(2026, 7, 24)),  # Sunday
    # Sunday 23:30 UTC is Monday 06:30 in Điện Biên: received on Monday
    ("2026-07-12T23:30+00:00", date(2026, 7, 27)),
    ("2026-07-13T16:59+00:00", date(2026, 7, 27)),  # Monday 23:59 there
])
def test_ten_working_days_skip_weekends_in_vietnam_time(received, deadline):
    assert calendar().deadline(at(received)) == (deadline, 10)


def test_configured_holidays_are_skipped_and_a_weekend_holiday_changes_nothing():
    national_day = calendar(holidays=["2026-09-01", "2026-09-02", "2026-09-05"])
    # Mon 31/8: Tue 1 and Wed 2 are holidays, Sat 5 is a Saturday anyway
    assert national_day.deadline(at("2026-08-31T08:00+07:00")) == (date(2026, 9, 16), 10)
    assert calendar().deadline(at("2026-08-31T08:00+07:00")) == (date(2026, 9, 14), 10)
    # received on a holiday: counted from the next working day
    assert national_day.deadline(at("2026-09-01T08:00+07:00")) == (date(2026, 9, 16), 10)


def test_holidays_file_adds_to_the_list(tmp_path):
    (tmp_path / "holidays.txt").write_text("# Tết Bính Ngọ\n2026-02-16\n2026-02-17  # mùng 1\n\n")
    (tmp_path / "relay.toml").write_text(
        '[petitions]\nholidays = ["2026-02-18"]\nholidays_file = "holidays.txt"\n')
    from relay.config import load

    p = load(tmp_path / "relay.toml").petitions
    cal = Calendar.from_config(p)
    assert cal.holidays == {date(2026, 2, 16), date(2026, 2, 17), date(2026, 2, 18)}
    # Fri 13/2: Mon 16, Tue 17, Wed 18 off -> Thu 19 is the first working day
    assert cal.deadline(at("2026-02-13T08:00+07:00"))[0] == date(2026, 3, 4)


def test_a_rule_applies_from_its_valid_from_day_in_local_time():
    cal = calendar(rules=[{"valid_from": "2026-07-01", "deadline_working_days": 5},
                          {"valid_from": "2027-01-01", "deadline_working_days": 15}])
    assert cal.deadline(at("2026-06-30T09:00+07:00")) == (date(2026, 7, 14), 10)
    assert cal.deadline(at("2026-07-01T09:00+07:00")) == (date(2026, 7, 8), 5)
    # 30 June 17:30 UTC is already 1 July 00:30 in Điện Biên: the new rule
    assert cal.deadline(at("2026-06-30T17:30+00:00")) == (date(2026, 7, 8), 5)
    assert cal.deadline(at("2026-12-31T09:00+07:00")) == (date(2027, 1, 7), 5)
    assert cal.deadline(at("2027-01-01T09:00+07:00")) == (date(2027, 1, 22), 15)


def test_rules_may_be_written_as_toml_dates(tmp_path):
    (tmp_path / "relay.toml").write_text(
        "[petitions]\nholidays = [2027-01-01]\n"
        "[[petitions.rules]]\nvalid_from = 2026-07-01\ndeadline_working_days = 12\n")
    from relay.config import load

    p = load(tmp_path / "relay.toml").petitions
    assert p.rules[0].valid_from == date(2026, 7, 1) and p.holidays == [date(2027, 1, 1)]


def test_working_days_between_counts_the_end_not_the_start():
    cal = calendar(holidays=["2026-07-08"])
    assert cal.working_days_between(date(2026, 7, 6), date(2026, 7, 6)) == 0
    assert cal.working_days_between(date(2026, 7, 6), date(2026, 7, 7)) == 1
    assert cal.working_days_between(date(2026, 7, 6), date(2026, 7, 10)) == 3  # Wed off
    assert cal.working_days_between(date(2026, 7, 10), date(2026, 7, 13)) == 1  # weekend


@pytest.mark.parametrize(("petitions", "error"), [
    ({"holidays": [1]}, "petitions.holidays.0: expected a date"),
    ({"holidays": ["2026-02-30"]}, "petitions.holidays.0: expected a date"),
    ({"holidays": ["2026-07-01T00:00:00"]}, "petitions.holidays.0: expected a date"),
    ({"holidays_file": "missing.txt"}, "petitions.holidays_file: "),
    ({"rules": [{"valid_from": "2026-07-01"}]},
     "petitions.rules.0.deadline_working_days: required key is missing"),
    ({"rules": [{"valid_from": "2026-07-01", "deadline_working_days": 0}]},
     "petitions.rules.0.deadline_working_days"),
    ({"rules": [{"valid_from": "2026-07-01", "deadline_working_days": 5},
                {"valid_from": "2026-07-01", "deadline_working_days": 6}]},
     "petitions.rules: two rules have the same valid_from"),
    ({"deadline_working_days": "10"}, "petitions.deadline_working_days"),
    ({"timezone": "Mars/Olympus"}, "petitions.timezone: unknown time zone"),
    ({"number_format": "TD-{seq}-{seq}"}, "petitions.number_format"),
    ({"number_format": "TD-{year}"}, "petitions.number_format"),
    ({"number_format": "TD {seq}"}, "petitions.number_format"),
    ({"number_format": "TD-{name}-{seq}"}, "petitions.number_format"),
    ({"number_format": "TD\r\nBcc: x@y-{seq}"}, "petitions.number_format"),
    ({"surprise": 1}, "petitions.surprise: unknown key"),
])
def test_bad_petitions_config_names_the_key(petitions, error):
    with pytest.raises(ConfigError) as err:
        from_dict({"petitions": petitions})
    assert error in str(err.value)


def test_a_bad_line_in_the_holidays_file_is_named(tmp_path):
    (tmp_path / "holidays.txt").write_text("2026-02-16\nmùng 1 Tết\n")
    (tmp_path / "relay.toml").write_text('[petitions]\nholidays_file = "holidays.txt"\n')
    from relay.config import load

    with pytest.raises(ConfigError) as err:
        load(tmp_path / "relay.toml")
    assert "petitions.holidays_file:" in str(err.value) and "line 2" in str(err.value)


def test_numbers_are_formatted_and_read_back_from_a_subject():
    fmt = NumberFormat("TD-{year}-{seq:06d}")
    assert fmt.format(2026, 1) == "TD-2026-000001" and fmt.scope(2026) == 2026
    assert fmt.find("Re: [TD-2026-000001] Kiến nghị") == ["TD-2026-000001"]
    assert fmt.find("TL: td-2026-12 và TD-2026-000003, TD-2026-000012") == [
        "TD-2026-000012", "TD-2026-000003"]
    assert fmt.find("XTD-2026-000001 and TD-2026-0000019999999999999") == []
    assert fmt.find("TD-2026-" * 10_000) == []  # bounded, and no match
    assert len(fmt.find(" ".join(f"TD-2026-{n:06d}" for n in range(50)))) == 5
    plain = NumberFormat("{seq}/TD")
    assert plain.scope(2026) == 0 and plain.find("số 17/TD ngày") == ["17/TD"]
