"""The catalog's ``calendar.yaml``: collective leave and regional days off, checked line by line.

```yaml
days:
  - {date: 2026-03-20, name: Cuti bersama Idul Fitri, kind: collective_leave}
  - {date: 2026-06-22, name: HUT Kota Jakarta, kind: regional}
```

The file is read from the YAML node tree rather than ``safe_load`` so that every problem
(a date given twice, an impossible date such as 2026-02-30, an unknown key) names its line.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import yaml

from core.domain.calendar import WorkingCalendar
from core.domain.errors import ConfigError

KINDS = ("collective_leave", "regional", "other")
KEYS = {"date", "name", "kind"}


def read_days_off(path: Path) -> dict[dt.date, str]:
    """The days of ``path`` as ``{date: name}``; every problem in one ``ConfigError``, each with its line."""
    file = str(path)
    try:
        root = yaml.compose(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"not valid YAML: {exc}", file=file) from exc
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror}", file=file) from exc
    if root is None:
        return {}
    problems: list[str] = []
    days: dict[dt.date, tuple[str, int]] = {}

    def problem(node: yaml.Node, text: str) -> None:
        problems.append(f"{file}: line {node.start_mark.line + 1}: {text}")

    if not isinstance(root, yaml.MappingNode) or [k.value for k, _ in root.value] != ["days"]:
        problem(root, "the file holds one key, days: a list of {date, name, kind}")
        raise ConfigError("the calendar is not valid:\n" + "\n".join("  " + p for p in problems))
    items = root.value[0][1]
    if not isinstance(items, yaml.SequenceNode):
        problem(items, "days: must be a list of {date, name, kind}")
        items = yaml.SequenceNode(tag="", value=[])
    for item in items.value:
        if not isinstance(item, yaml.MappingNode):
            problem(item, "each day is {date: YYYY-MM-DD, name: TEXT, kind: collective_leave|regional|other}")
            continue
        fields = {k.value: v for k, v in item.value}
        for key in set(fields) - KEYS:
            problem(item, f"unknown key {key!r}; a day has {', '.join(sorted(KEYS))}")
        date_node, name_node = fields.get("date"), fields.get("name")
        if date_node is None or name_node is None or not str(getattr(name_node, "value", "")).strip():
            problem(item, "a day needs a date and a name")
            continue
        try:
            day = dt.date.fromisoformat(str(date_node.value))
        except ValueError:
            problem(date_node, f"{date_node.value!r} is not a date (YYYY-MM-DD)")
            continue
        kind = fields.get("kind")
        if kind is not None and kind.value not in KINDS:
            problem(kind, f"kind {kind.value!r} is not one of {', '.join(KINDS)}")
        if day in days:
            problem(date_node, f"{day} is given twice (also on line {days[day][1]})")
            continue
        days[day] = (str(name_node.value), date_node.start_mark.line + 1)
    if problems:
        raise ConfigError("the calendar is not valid:\n" + "\n".join("  " + p for p in problems))
    return {day: name for day, (name, _line) in days.items()}


def load_calendar(folder: str | Path, timezone: str = "Asia/Jakarta") -> WorkingCalendar:
    """The hall's calendar: national holidays, weekends, and the folder's ``calendar.yaml`` if any."""
    path = Path(folder) / "calendar.yaml"
    return WorkingCalendar(timezone, read_days_off(path) if path.exists() else {})
