"""Summarize py-spy's collapsed stacks (``--format raw``): where the samples went.

    python -m bench.profile_summary bench/.logs/profile-offpost-worker0.txt [--top 30]

Prints, for the functions with the most samples, their inclusive share (the
function or anything it called was on the CPU) and their self share.
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path

_FRAME = re.compile(r"^(?P<func>[^ ]+) \((?P<file>[^:]+)(?::\d+)?\)$")


def short(frame: str) -> str:
    match = _FRAME.match(frame.strip())
    if not match:
        return frame.strip()
    path = match.group("file")
    for marker in ("site-packages/", "src/", "lib/python3.11/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{match.group('func')} ({path})"


def summarize(path: Path, top: int, grep: str | None) -> None:
    inclusive: Counter[str] = Counter()
    self_: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [short(f) for f in stack.split(";")]
        total += count
        for name in set(frames):
            inclusive[name] += count
        self_[frames[-1]] += count
    print(f"{total} samples")
    print(f"{'incl %':>7} {'self %':>7}  function")
    shown = 0
    for name, count in inclusive.most_common():
        if grep and not re.search(grep, name):
            continue
        print(f"{100 * count / total:7.1f} {100 * self_[name] / total:7.1f}  {name}")
        shown += 1
        if shown >= top:
            break


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("path", type=Path)
    parser.add_argument("--top", type=int, default=40)
    parser.add_argument("--grep", help="only functions matching this regular expression")
    args = parser.parse_args()
    summarize(args.path, args.top, args.grep)


if __name__ == "__main__":
    main()
