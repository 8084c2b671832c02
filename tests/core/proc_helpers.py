"""Process-tree inspection through /proc, to prove nothing is left running."""

from __future__ import annotations

from pathlib import Path


def _stat(pid: int) -> tuple[str, int, int] | None:
    """(state, ppid, pgid) of a live process, or None."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text.rsplit(")", 1)[1].split()
    return fields[0], int(fields[1]), int(fields[2])


def descendants(root: int) -> set[int]:
    """Every live process whose parent chain leads to ``root``."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (st := _stat(int(entry.name))):
            children.setdefault(st[1], []).append(int(entry.name))
    found: set[int] = set()
    stack = [root]
    while stack:
        for child in children.get(stack.pop(), []):
            if child not in found:
                found.add(child)
                stack.append(child)
    return found


def process_groups(pids: set[int]) -> set[int]:
    return {st[2] for pid in pids if (st := _stat(pid))}


def alive(pids: set[int], groups: set[int]) -> set[int]:
    """Live, non-zombie processes among ``pids`` or in any of ``groups``."""
    out = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        st = _stat(pid)
        if st and st[0] != "Z" and (pid in pids or st[2] in groups):
            out.add(pid)
    return out
