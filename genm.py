"""Synthetic 1-minute bars (start-stamped, extended hours included) around the DST switches."""
import datetime as dt, random, sys
from zoneinfo import ZoneInfo
NY = ZoneInfo("America/New_York")
sys.path.insert(0, "/tmp/fix_calendar")
from monitor.calendar import nyse_sessions
S = nyse_sessions(dt.date(2024, 1, 1))
rng = random.Random(2)
rows = ["datetime,symbol,open,high,low,close,volume"]
days = [dt.date(2024, 3, d) for d in range(4, 16)] + [dt.date(2024, 10, 28) + dt.timedelta(days=i) for i in range(12)] + [dt.date(2024, 7, d) for d in range(1, 9)] + [dt.date(2024, 11, 25) + dt.timedelta(days=i) for i in range(9)]
for d in days:
    if not S.is_session(d):
        continue
    for sym, p0 in (("X", 30.0), ("Y", 12.0)):
        p = p0 * (1 + rng.uniform(-0.05, 0.05))
        t = dt.datetime(d.year, d.month, d.day, 4, 0, tzinfo=NY)
        end = dt.datetime(d.year, d.month, d.day, 20, 0, tzinfo=NY)
        while t < end:
            o = p; p *= 1 + rng.uniform(-0.003, 0.003); c = p
            rows.append(f"{t.astimezone(dt.UTC).strftime('%Y-%m-%d %H:%M:%S')}Z,{sym},{o:.4f},{max(o,c):.4f},{min(o,c):.4f},{c:.4f},{rng.randint(1,50)*100}")
            t += dt.timedelta(minutes=1)
open("/tmp/cal/minutes.csv", "w").write("\n".join(rows) + "\n"); print(len(rows) - 1)
