"""``satupintu calendar check YEAR``: the year's non-working days in the hall's time zone,
and why each is one, as every working-day deadline will count them (DESIGN §2)."""

from __future__ import annotations

import argparse
import sys
from collections import Counter

from core.domain.errors import SatupintuError
from core.settings import Settings

WEEKEND = ("Saturday", "Sunday")


def cmd_calendar_check(args: argparse.Namespace, settings: Settings) -> int:
    from gateway.calendar_file import load_calendar
    try:
        calendar = load_calendar(settings.config_dir, settings.timezone)
    except SatupintuError as exc:  # the file's problems, each naming its line
        print(exc, file=sys.stderr)
        return 1
    days = calendar.non_working_days(args.year)
    weekend = Counter(reason for _day, reason in days if reason in WEEKEND)
    others = [(day, reason) for day, reason in days if reason not in WEEKEND]
    print(f"{args.year} in {settings.timezone}: {len(days)} non-working day(s): "
          f"{weekend['Saturday']} Saturdays and {weekend['Sunday']} Sundays, and these {len(others)}:")
    for day, reason in others:
        source = "calendar.yaml" if day in calendar.days_off else "national holiday"
        print(f"{day}  {day.strftime('%a')}  {reason}  ({source})")
    return 0
