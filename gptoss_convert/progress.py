"""Progress output that suits both a terminal and a CI log.

On a terminal a tqdm bar redraws in place. Anywhere else (a pipe, a file, a CI runner) a bar would write a line
per refresh or a wall of carriage returns, so a plain line is written instead, at most one per INTERVAL seconds:
`convert: 41% (5.62 GB of 13.76 GB), 0:01:20 elapsed`. `enabled=True` forces the bar, `enabled=False` turns
both off, `enabled=None` (the default) picks by `stream.isatty()`; the commands' `--progress/--no-progress`.
"""

import sys
import time

INTERVAL = 10.0  # seconds between two plain lines


def progress_bar(iterable=None, *, total=None, desc: str, unit: str = "B", enabled: bool | None = None,
                 stream=None, leave: bool = True):
    """A tqdm bar, a PlainProgress, or a silent stand-in, per the policy above. All three have update(), close(),
    iteration over `iterable` and the context-manager protocol."""
    stream = stream or sys.stderr
    chosen = mode(enabled, stream)
    if chosen == "lines":
        return PlainProgress(iterable, total=total, desc=desc, unit=unit, stream=stream)
    from tqdm import tqdm

    return tqdm(iterable, total=total, desc=desc, unit=unit, unit_scale=unit == "B", unit_divisor=1000,
                file=stream, disable=chosen == "off", leave=leave)


def mode(enabled: bool | None, stream=None) -> str:
    """"bar", "lines" or "off" for a --progress/--no-progress setting (None: decided by the stream)."""
    if enabled is None:
        return "bar" if _isatty(stream or sys.stderr) else "lines"
    return "bar" if enabled else "off"


def _isatty(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


class PlainProgress:
    """tqdm's interface, writing a whole line at most every `interval` seconds (never a carriage return)."""

    def __init__(self, iterable=None, *, total=None, desc="", unit="B", stream=None, interval=None,
                 clock=time.monotonic):
        self.iterable, self.desc, self.unit = iterable, desc, unit
        self.total = total if total is not None else (len(iterable) if hasattr(iterable, "__len__") else None)
        self.n, self.stream, self.clock = 0, stream or sys.stderr, clock
        self.interval = INTERVAL if interval is None else interval
        self.started = self.last = clock()

    def update(self, n=1) -> None:
        self.n += n
        now = self.clock()
        if now - self.last >= self.interval:
            self.last = now
            print(self.line(now), file=self.stream, flush=True)

    def line(self, now: float) -> str:
        done = _amount(self.n, self.unit)
        if self.total:
            done = f"{100 * self.n / self.total:.0f}% ({done} of {_amount(self.total, self.unit)})"
        return f"{self.desc}: {done}, {_clock(now - self.started)} elapsed"

    def __iter__(self):
        for item in self.iterable:
            yield item
            self.update(1)

    def close(self) -> None:
        pass

    def set_postfix_str(self, *args, **kwargs) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _amount(n: float, unit: str) -> str:
    if unit != "B":
        return f"{n:,.0f} {unit}"
    for prefix in ("", "k", "M", "G", "T"):
        if n < 1000 or prefix == "T":
            return f"{n:.0f} B" if not prefix else f"{n:.2f} {prefix}B"
        n /= 1000
    return f"{n} B"


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class watch:
    """Context manager for work whose progress only shows on disk (huggingface_hub's transfers): in "lines" mode a
    thread writes a PlainProgress line every INTERVAL seconds from `measure()` (bytes done so far)."""

    def __init__(self, *, total: int, measure, desc: str, enabled: bool | None = None, stream=None):
        import threading

        self.measure, self.stop = measure, threading.Event()
        self.lines = None
        if mode(enabled, stream) == "lines":
            self.lines = PlainProgress(total=total, desc=desc, unit="B", stream=stream or sys.stderr)
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self.stop.wait(INTERVAL):
            done = self.measure()
            self.lines.update(done - self.lines.n)

    def __enter__(self):
        if self.lines is not None:
            self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        if self.lines is not None:
            self.thread.join()


class hub_bars:
    """huggingface_hub draws its own bars: leave them on a terminal (or with --progress), turn them off otherwise
    (`watch` writes the plain lines instead)."""

    def __init__(self, enabled: bool | None = None, stream=None):
        self.off = mode(enabled, stream) != "bar"

    def __enter__(self):
        from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars

        self.were_off = are_progress_bars_disabled()
        if self.off:
            disable_progress_bars()
        return self

    def __exit__(self, *exc):
        from huggingface_hub.utils import enable_progress_bars

        if self.off and not self.were_off:
            enable_progress_bars()
