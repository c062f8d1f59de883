"""celery.schedules: crontab and schedule, turned into Corral schedules (cron or every N seconds).

Each field takes what Celery's takes: a number, a string ("*/15", "1-5", "mon-fri", "sunday",
"0,30"), or a collection of numbers ({0, 30}). Day names, short or whole, become numbers (Sunday 0).
"""
import datetime
import re

_DAYS = {"sun": 0, "mon": 1, "tue": 2, "wed": 3, "thu": 4, "fri": 5, "sat": 6}
_MONTHS = {m: i + 1 for i, m in enumerate(["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct",
                                          "nov", "dec"])}


def _field(value, names, what):
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, (set, frozenset, list, tuple, range)):
        items = sorted(value)
        if not items or not all(isinstance(i, int) for i in items):
            raise ValueError(f"crontab {what}={value!r}: give numbers")
        return ",".join(str(i) for i in items)
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"crontab {what}={value!r}: give a number, a string like '*/15' or '1-5', or numbers")
    text = value.strip().lower().replace(" ", "")

    def name(m):
        word = m.group(0)
        short = word[:3]
        if short in names and word in (short, _WHOLE[short]):
            return str(names[short])
        raise ValueError(f"crontab {what}={value!r}: {word!r} is not a day or month name")
    return re.sub(r"[a-z]+", name, text)


_WHOLE = {"sun": "sunday", "mon": "monday", "tue": "tuesday", "wed": "wednesday", "thu": "thursday",
          "fri": "friday", "sat": "saturday", "jan": "january", "feb": "february", "mar": "march", "apr": "april",
          "may": "may", "jun": "june", "jul": "july", "aug": "august", "sep": "september", "oct": "october",
          "nov": "november", "dec": "december"}


def _expand(text, low, high, what):
    """The numbers a cron field names ("*/15", "1-5", "0,30", "2-30/2"), as Celery's crontab keeps them."""
    out = set()
    for part in text.split(","):
        body, _, step = part.partition("/")
        if body == "*":
            first, last = low, high
        elif "-" in body:
            first, last = (int(x) for x in body.split("-", 1))
        elif body.isdigit():
            first = last = int(body)
            if step:
                last = high
        else:
            raise ValueError(f"crontab {what}={text!r}: cannot read {part!r}")
        n = int(step) if step else 1
        if what == "day_of_week" and last == 7:
            out.add(0)
            last = 6
        if not (low <= first <= last <= high) or n < 1:
            raise ValueError(f"crontab {what}={text!r}: {part!r} is outside {low}-{high}")
        out.update(range(first, last + 1, n))
    return out


class crontab:
    """crontab(minute="*", hour="*", day_of_week="*", day_of_month="*", month_of_year="*"), as
    Celery's (each field then holds its set of numbers); ``tz``: a zone name for this schedule (else
    the app's ``timezone``, else UTC)."""

    def __init__(self, minute="*", hour="*", day_of_week="*", day_of_month="*", month_of_year="*", tz=None,
                 nowfun=None, app=None):
        self._orig = [_field(minute, {}, "minute"), _field(hour, {}, "hour"), _field(day_of_month, {}, "day_of_month"),
                      _field(month_of_year, _MONTHS, "month_of_year"), _field(day_of_week, _DAYS, "day_of_week")]
        self.minute = _expand(self._orig[0], 0, 59, "minute")
        self.hour = _expand(self._orig[1], 0, 23, "hour")
        self.day_of_month = _expand(self._orig[2], 1, 31, "day_of_month")
        self.month_of_year = _expand(self._orig[3], 1, 12, "month_of_year")
        self.day_of_week = _expand(self._orig[4], 0, 7, "day_of_week")
        self.tz = getattr(tz, "key", tz)

    @property
    def expression(self):
        """The five-field cron expression the head's schedule runs."""
        return " ".join(self._orig)

    def __eq__(self, other):
        return isinstance(other, crontab) and (self.expression, self.tz) == (other.expression, other.tz)

    def __hash__(self):
        return hash((self.expression, self.tz))

    def __repr__(self):
        return f"<crontab: {self.expression}>"


class schedule:
    """schedule(run_every=timedelta or seconds): every so often (Corral's `every`)."""

    def __init__(self, run_every=None, relative=False, nowfun=None, app=None):
        if relative:
            raise ValueError("schedule(relative=True) is not supported: Corral's `every` counts from the schedule's "
                             "creation")
        self.run_every = run_every if isinstance(run_every, datetime.timedelta) else \
            datetime.timedelta(seconds=float(run_every))

    @property
    def seconds(self):
        return self.run_every.total_seconds()

    def __repr__(self):
        return f"<freq: {self.run_every}>"


class solar:
    def __init__(self, *args, **kwargs):
        raise ValueError("solar schedules are not supported by Corral: use crontab() with the times you want")


def every_seconds(value):
    """A beat entry's schedule as seconds, or None if it is a crontab."""
    if isinstance(value, schedule):
        return value.seconds
    if isinstance(value, datetime.timedelta):
        return value.total_seconds()
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return None
