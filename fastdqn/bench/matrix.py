"""Matrix files: named cells (a preset plus setting overrides) x seeds, parsed as TOML data and
validated whole before anything runs.

    name = "quick"                 # optional, default: the file's stem
    description = "..."            # optional
    seeds = [123]                  # optional, default [123]
    reference = "full"             # optional: a ladder's reference cell, the report's ratios are to it
    [defaults]                     # settings for every cell: any config field, e.g. budgets
    max_steps = 2000
    [[cell]]
    name = "baseline"              # unique, directory-safe
    preset = "baseline"            # optional, default baseline
    no_grad = false                # any config field overrides the defaults
    [[cell]]
    name = "ppo"
    peer = "sb3_ppo"               # instead of a preset: a peer trainer (fastdqn/peers). It takes env,
                                   # stop_reward, the budgets and run settings (peers.keys); [defaults]
                                   # it does not take (replay, flags) are the fastdqn cells'
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from .. import peers
from ..config import PRESETS, all_fields, build_config, load_toml
from ..errors import UsageError

TOP_KEYS = {"name", "description", "seeds", "defaults", "cell", "reference"}
# set by the runner per cell and seed; a matrix may not set them
RESERVED = {"seed", "out", "logdir", "name", "progress"}
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass
class Cell:
    name: str
    preset: str  # a peer cell: the peer's name
    settings: dict = field(default_factory=dict)
    peer: str = ""  # a peer trainer (fastdqn/peers) instead of a fastdqn preset


@dataclass
class Matrix:
    name: str
    path: str
    description: str
    seeds: list[int]
    cells: list[Cell]
    reference: str | None = None  # a ladder's reference cell (report.py: ladder table)


def _check_settings(settings: dict, where: str, path: str) -> None:
    known = all_fields()
    for key in settings:
        if key in RESERVED:
            raise UsageError(f"{path}: key {key!r} in {where} is set by the runner per cell and seed")
        if key not in known:
            raise UsageError(f"{path}: unknown key {key!r} in {where}")


def _peer_cell(name: str, raw: dict, defaults: dict, path: str) -> Cell:
    where = f"{path}: cell {name!r}: "
    peer = raw.pop("peer")
    if "preset" in raw:
        raise UsageError(f"{where}peer {peer!r} and preset {raw['preset']!r}: a cell runs one of them")
    for key in raw:
        if key in RESERVED:
            raise UsageError(f"{path}: key {key!r} in cell {name!r} is set by the runner per cell and seed")
    return Cell(name, peer, peers.cell_settings(peer, defaults, raw, where), peer=peer)


def load_matrix(path: str | Path) -> Matrix:
    path = str(path)
    doc = load_toml(path)
    for key in doc:
        if key not in TOP_KEYS:
            raise UsageError(f"{path}: unknown key {key!r}: expected one of {', '.join(sorted(TOP_KEYS))}")
    name = doc.get("name", Path(path).stem)
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise UsageError(f"{path}: name {name!r}: expected letters, digits, '_', '-', '.'")
    seeds = doc.get("seeds", [123])
    if (not isinstance(seeds, list) or not seeds or len(set(seeds)) != len(seeds)
            or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds)):
        raise UsageError(f"{path}: seeds {seeds!r}: expected a non-empty list of distinct integers >= 0")
    defaults = doc.get("defaults", {})
    if not isinstance(defaults, dict):
        raise UsageError(f"{path}: defaults: expected a table [defaults]")
    _check_settings(defaults, "[defaults]", path)
    raw_cells = doc.get("cell")
    if not isinstance(raw_cells, list) or not raw_cells or not all(isinstance(c, dict) for c in raw_cells):
        raise UsageError(f"{path}: expected at least one [[cell]] table")
    cells, seen = [], set()
    for i, raw in enumerate(raw_cells, 1):
        raw = dict(raw)
        cname = raw.pop("name", None)
        if not isinstance(cname, str) or not NAME_RE.match(cname):
            raise UsageError(f"{path}: cell #{i}: name {cname!r}: expected letters, digits, '_', '-', '.'")
        if cname in seen:
            raise UsageError(f"{path}: duplicate cell name {cname!r}")
        seen.add(cname)
        if "peer" in raw:  # peer cells (fastdqn/peers): a peer trainer instead of a preset
            cells.append(_peer_cell(cname, raw, defaults, path))
            continue
        preset = raw.pop("preset", "baseline")
        if preset not in PRESETS:
            raise UsageError(f"{path}: cell {cname!r}: unknown preset {preset!r}: expected one of {', '.join(PRESETS)}")
        _check_settings(raw, f"cell {cname!r}", path)
        settings = {**defaults, **raw}
        try:  # every value validated now, before any run starts
            build_config(preset, None, {k: v for k, v in settings.items()})
        except UsageError as e:
            raise UsageError(f"{path}: cell {cname!r}: {e}") from None
        cells.append(Cell(cname, preset, settings))
    description = doc.get("description", "")
    if not isinstance(description, str):
        raise UsageError(f"{path}: description: expected a string")
    reference = doc.get("reference")
    if reference is not None and (not isinstance(reference, str) or reference not in seen):
        raise UsageError(f"{path}: reference {reference!r} names no cell: expected one of "
                         f"{', '.join(c.name for c in cells)}")
    return Matrix(name, path, description, seeds, cells, reference)
