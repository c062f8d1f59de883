"""celery.schedules.crontab for Corral schedules."""


class crontab:
    """crontab(minute="*", hour="*", day_of_week="*", day_of_month="*", month_of_year="*"), as Celery's."""

    def __init__(self, minute="*", hour="*", day_of_week="*", day_of_month="*", month_of_year="*", tz=None):
        self.minute, self.hour = str(minute), str(hour)
        self.day_of_week, self.day_of_month, self.month_of_year = str(day_of_week), str(day_of_month), str(month_of_year)
        self.tz = tz

    @property
    def expression(self):
        return f"{self.minute} {self.hour} {self.day_of_month} {self.month_of_year} {self.day_of_week}"

    def __repr__(self):
        return f"<crontab: {self.expression}>"
