"""SPANet event-file YAML (inputs, particles, permutation groups, targets) as a typed, validated EventTopology."""

from __future__ import annotations

import itertools
import logging
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from spanet2.atomic import atomic_path
from spanet2.errors import ConfigError
from spanet2.events.layout import classification_path, input_path, mask_path, regression_path, target_path

__all__ = [
    "InputFeature",
    "InputSource",
    "Particle",
    "EventTopology",
    "load_topology",
    "parse_topology",
    "dump_topology",
    "topology_to_dict",
    "INPUT_KINDS",
    "KNOWN_NORMALIZATIONS",
]

log = logging.getLogger(__name__)

INPUT_KINDS = ("SEQUENTIAL", "GLOBAL", "RELATIVE")
TOP_LEVEL_SECTIONS = ("INPUTS", "EVENT", "PERMUTATIONS", "REGRESSIONS", "CLASSIFICATIONS")
# Upstream matches options by substring ("log" → log(x+1), "normalize"/"true" → standardise);
# these are the spellings it documents. Any other word still parses by substring, with a warning.
KNOWN_NORMALIZATIONS = ("none", "false", "normalize", "log_normalize", "log", "true")
REGRESSION_TYPES = ("gaussian", "laplacian", "log_gaussian")
RESERVED_NAMES = ("MASK", "EVENT", "PARTICLE")

Permutation = tuple[int, ...]
Generators = tuple[tuple[tuple[str, ...], ...], ...]


@dataclass(frozen=True)
class InputFeature:
    """One feature of an input: its name, the raw option word, and what the option means."""

    name: str
    option: str
    log_scale: bool
    normalize: bool


@dataclass(frozen=True)
class InputSource:
    """One input group `INPUTS/<name>`: SEQUENTIAL (N, J) vectors with a MASK, GLOBAL (N,) scalars, or RELATIVE."""

    name: str
    kind: str
    features: tuple[InputFeature, ...]

    @property
    def feature_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.features)


@dataclass(frozen=True)
class Particle:
    """An event particle and its daughters; `daughter_sources[i]` names the input daughter i indexes (None = first)."""

    name: str
    daughters: tuple[str, ...]
    daughter_sources: tuple[str | None, ...]


@dataclass(frozen=True)
class EventTopology:
    """The event file: inputs (YAML order = network order), particles, symmetry generators, targets.

    `event_permutations` and each `particle_permutations[p]` are group generators: a tuple of
    generators, each a tuple of disjoint cycles of names. A flat YAML list `[a, b, c]` (the full
    symmetric group) is stored as its adjacent transpositions `((a, b),), ((b, c),)`.
    """

    path: str | None
    inputs: tuple[InputSource, ...]
    particles: tuple[Particle, ...]
    event_permutations: Generators = ()
    particle_permutations: dict[str, Generators] = field(default_factory=dict)
    classifications: dict[str, tuple[str, ...]] = field(default_factory=dict)
    regressions: dict[str, tuple[tuple[str, str], ...]] = field(default_factory=dict)

    # ---- derived helpers -------------------------------------------------------------------
    @property
    def sequential_inputs(self) -> tuple[InputSource, ...]:
        return tuple(s for s in self.inputs if s.kind == "SEQUENTIAL")

    @property
    def global_inputs(self) -> tuple[InputSource, ...]:
        return tuple(s for s in self.inputs if s.kind == "GLOBAL")

    @property
    def relative_inputs(self) -> tuple[InputSource, ...]:
        return tuple(s for s in self.inputs if s.kind == "RELATIVE")

    @property
    def particle_names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.particles)

    def input(self, name: str) -> InputSource:
        for source in self.inputs:
            if source.name == name:
                return source
        raise KeyError(name)

    def particle(self, name: str) -> Particle:
        for particle in self.particles:
            if particle.name == name:
                return particle
        raise KeyError(name)

    def daughter_source(self, particle: str, daughter: str) -> str:
        """The input a daughter's target indexes into (default: the first sequential input)."""
        p = self.particle(particle)
        source = p.daughter_sources[p.daughters.index(daughter)]
        if source is None:
            return self.sequential_inputs[0].name
        return source

    def mask_paths(self) -> list[str]:
        """`INPUTS/<seq>/MASK` for every sequential (and relative) input."""
        return [mask_path(s.name) for s in self.inputs if s.kind != "GLOBAL"]

    def feature_paths(self) -> list[str]:
        """Every feature dataset, in network input order: `INPUTS/<source>/<feature>` (no MASK)."""
        return [input_path(s.name, f.name) for s in self.inputs for f in s.features]

    def target_paths(self) -> list[str]:
        """`TARGETS/<particle>/<daughter>` in particle, daughter order."""
        return [target_path(p.name, d) for p in self.particles for d in p.daughters]

    def classification_paths(self) -> list[str]:
        """`CLASSIFICATIONS/<key>/<name>`, e.g. `CLASSIFICATIONS/EVENT/signal`."""
        return [classification_path(f"{k}/{n}") for k, names in self.classifications.items() for n in names]

    def regression_paths(self) -> list[str]:
        """`REGRESSIONS/<key>/<name>`, e.g. `REGRESSIONS/EVENT/m_hh` or `REGRESSIONS/h1/PARTICLE/pt`."""
        return [regression_path(f"{k}/{n}") for k, items in self.regressions.items() for n, _ in items]

    def event_permutation_group(self) -> list[Permutation]:
        """All permutations of particle indices generated by EVENT permutations (identity first, sorted)."""
        return _group_closure(self.particle_names, self.event_permutations)

    def daughter_permutation_group(self, particle: str) -> list[Permutation]:
        """All permutations of `particle`'s daughter indices (identity first, sorted)."""
        p = self.particle(particle)
        return _group_closure(p.daughters, self.particle_permutations.get(particle, ()))


# ---- group closure ---------------------------------------------------------------------------
def _generator_to_permutation(names: tuple[str, ...], cycles: tuple[tuple[str, ...], ...]) -> Permutation:
    """A generator of disjoint cycles as an index map: perm[i] = index that position i takes its item from."""
    index = {n: i for i, n in enumerate(names)}
    perm = list(range(len(names)))
    for cycle in cycles:
        for a, b in zip(cycle, cycle[1:] + cycle[:1], strict=True):
            perm[index[a]] = index[b]
    return tuple(perm)


def _group_closure(names: tuple[str, ...], generators: Generators) -> list[Permutation]:
    identity = tuple(range(len(names)))
    gens = [_generator_to_permutation(names, g) for g in generators]
    group = {identity}
    frontier = [identity]
    while frontier:
        new = []
        for perm in frontier:
            for gen in gens:
                composed = tuple(perm[g] for g in gen)
                if composed not in group:
                    group.add(composed)
                    new.append(composed)
        frontier = new
    return sorted(group)


# ---- YAML loading with duplicate-key detection ------------------------------------------------
class _StrictSafeLoader(yaml.SafeLoader):
    """yaml.SafeLoader that rejects duplicate mapping keys (PyYAML silently keeps the last one)."""


def _construct_mapping(loader: _StrictSafeLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    loader.flatten_mapping(node)
    mapping: dict = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in mapping:
            raise _DuplicateKey(str(key), key_node.start_mark.line + 1)
        mapping[key] = loader.construct_object(value_node, deep=deep)
    return mapping


class _DuplicateKey(Exception):
    def __init__(self, key: str, line: int):
        self.key, self.line = key, line
        super().__init__(key)


_StrictSafeLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def load_topology(path: str | os.PathLike) -> EventTopology:
    """Read and validate an event-file YAML; raise ConfigError naming the file and key at fault."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(path, None, "event file not found") from None
    except IsADirectoryError:
        raise ConfigError(path, None, "expected an event-file YAML, found a directory") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(path, None, f"cannot read the event file: {exc}") from None
    try:
        config = yaml.load(text, Loader=_StrictSafeLoader)  # noqa: S506 - a SafeLoader subclass
    except _DuplicateKey as exc:
        raise ConfigError(path, exc.key, f"duplicate key on line {exc.line}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" on line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "invalid syntax"
        raise ConfigError(path, None, f"not valid YAML{where}: {problem}") from None
    return parse_topology(config, path=str(path))


def parse_topology(config: Any, *, path: str | None = None) -> EventTopology:
    """Build an EventTopology from an already-parsed YAML mapping (see `load_topology`)."""
    if config is None or (isinstance(config, Mapping) and not config):
        raise ConfigError(path, None, "the event file is empty; expected INPUTS and EVENT sections")
    if not isinstance(config, Mapping):
        raise ConfigError(path, None, f"expected a mapping of sections, found {type(config).__name__}")
    unknown = [str(k) for k in config if k not in TOP_LEVEL_SECTIONS]
    if unknown:
        raise ConfigError(
            path, unknown[0], f"unknown section (expected one of {', '.join(TOP_LEVEL_SECTIONS)})"
        )
    for section in ("INPUTS", "EVENT"):
        if config.get(section) is None:
            raise ConfigError(path, section, "missing required section")

    inputs = _parse_inputs(config["INPUTS"], path)
    particles = _parse_particles(config["EVENT"], inputs, path)
    event_perms, particle_perms = _parse_permutations(config.get("PERMUTATIONS"), particles, path)
    classifications = _parse_targets_tree(config.get("CLASSIFICATIONS"), particles, path, "CLASSIFICATIONS")
    regressions_raw = _parse_targets_tree(config.get("REGRESSIONS"), particles, path, "REGRESSIONS")
    regressions = {
        k: tuple(_regression_item(v, path, f"REGRESSIONS/{k}") for v in items)
        for k, items in regressions_raw.items()
    }
    for key, items in regressions.items():
        _no_duplicates([n for n, _ in items], path, f"REGRESSIONS/{key}", "regression")
    classifications = {
        k: tuple(_name(v, path, f"CLASSIFICATIONS/{k}") for v in items)
        for k, items in classifications.items()
    }
    for key, names in classifications.items():
        _no_duplicates(names, path, f"CLASSIFICATIONS/{key}", "classification")
    return EventTopology(
        path=path,
        inputs=inputs,
        particles=particles,
        event_permutations=event_perms,
        particle_permutations=particle_perms,
        classifications=classifications,
        regressions=regressions,
    )


def _name(value: Any, path: str | None, key: str) -> str:
    if isinstance(value, bool) or value is None or isinstance(value, (list, dict)):
        raise ConfigError(path, key, f"expected a name, found {value!r}")
    name = str(value)
    if not name or "/" in name:
        raise ConfigError(path, key, f"invalid name {name!r} (empty or containing '/')")
    return name


def _no_duplicates(names: Iterable[str], path: str | None, key: str, what: str) -> None:
    seen: set[str] = set()
    for n in names:
        if n in seen:
            raise ConfigError(path, key, f"duplicate {what} name {n!r}")
        seen.add(n)


def _option_word(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value).strip()


def _parse_inputs(section: Any, path: str | None) -> tuple[InputSource, ...]:
    if not isinstance(section, Mapping):
        raise ConfigError(path, "INPUTS", "expected a mapping with SEQUENTIAL / GLOBAL inputs")
    sources: list[InputSource] = []
    unknown_words: list[str] = []
    for kind, groups in section.items():
        if kind not in INPUT_KINDS:
            raise ConfigError(
                path, f"INPUTS/{kind}", f"unknown input kind (expected one of {', '.join(INPUT_KINDS)})"
            )
        if groups is None:
            continue
        if not isinstance(groups, Mapping):
            raise ConfigError(path, f"INPUTS/{kind}", "expected a mapping of input name -> features")
        for name, features in groups.items():
            key = f"INPUTS/{kind}/{name}"
            name = _name(name, path, key)
            if name in RESERVED_NAMES:
                raise ConfigError(path, key, f"{name!r} is a reserved name")
            if not isinstance(features, Mapping) or not features:
                raise ConfigError(path, key, "expected a non-empty mapping of feature -> normalisation")
            parsed = []
            for fname, option in features.items():
                fkey = f"{key}/{fname}"
                fname = _name(fname, path, fkey)
                if fname == "MASK":
                    raise ConfigError(path, fkey, "MASK is reserved for the padding mask, not a feature")
                if isinstance(option, (list, dict)):
                    raise ConfigError(path, fkey, f"expected a normalisation word, found {option!r}")
                word = _option_word(option)
                lower = word.lower()
                if lower not in KNOWN_NORMALIZATIONS:
                    unknown_words.append(f"{fkey}={word!r}")
                parsed.append(
                    InputFeature(
                        name=fname,
                        option=word,
                        log_scale="log" in lower,
                        normalize=("normalize" in lower) or ("true" in lower),
                    )
                )
            sources.append(InputSource(name=name, kind=kind, features=tuple(parsed)))
    _no_duplicates([s.name for s in sources], path, "INPUTS", "input")
    if not any(s.kind == "SEQUENTIAL" for s in sources):
        raise ConfigError(path, "INPUTS/SEQUENTIAL", "at least one sequential input is required")
    if unknown_words:
        log.warning(
            "%s: unknown normalisation word(s) %s (known: %s); read by substring as upstream SPANet does",
            path,
            ", ".join(unknown_words),
            ", ".join(KNOWN_NORMALIZATIONS),
        )
    return tuple(sources)


def _parse_particles(section: Any, inputs: tuple[InputSource, ...], path: str | None) -> tuple[Particle, ...]:
    if not isinstance(section, Mapping) or not section:
        raise ConfigError(path, "EVENT", "expected a mapping of particle -> list of daughters")
    input_names = {s.name: s.kind for s in inputs}
    particles = []
    for pname, daughters in section.items():
        key = f"EVENT/{pname}"
        pname = _name(pname, path, key)
        if pname in RESERVED_NAMES:
            raise ConfigError(path, key, f"{pname!r} is a reserved name")
        if daughters is None or (isinstance(daughters, (list, Mapping)) and not daughters):
            raise ConfigError(path, key, "particle has no daughters")
        items: list[tuple[Any, Any]]
        if isinstance(daughters, Mapping):
            items = list(daughters.items())
        elif isinstance(daughters, list):
            items = []
            for d in daughters:
                if isinstance(d, Mapping):
                    if len(d) != 1:
                        raise ConfigError(
                            path, key, f"expected '- daughter' or '- daughter: Input', found {d!r}"
                        )
                    items.append(next(iter(d.items())))
                else:
                    items.append((d, None))
        else:
            raise ConfigError(path, key, f"expected a list of daughters, found {daughters!r}")
        names, sources = [], []
        for dname, source in items:
            dname = _name(dname, path, key)
            if dname in RESERVED_NAMES:
                raise ConfigError(path, f"{key}/{dname}", f"{dname!r} is a reserved name")
            if source is not None:
                source = _name(source, path, f"{key}/{dname}")
                if source not in input_names:
                    raise ConfigError(
                        path, f"{key}/{dname}", f"unknown input {source!r} (inputs: {', '.join(input_names)})"
                    )
                if input_names[source] == "GLOBAL":
                    raise ConfigError(
                        path,
                        f"{key}/{dname}",
                        f"daughters must index a sequential input, {source!r} is GLOBAL",
                    )
            names.append(dname)
            sources.append(source)
        _no_duplicates(names, path, key, "daughter")
        particles.append(Particle(name=pname, daughters=tuple(names), daughter_sources=tuple(sources)))
    clash = set(p.name for p in particles) & set(input_names)
    if clash:
        raise ConfigError(
            path, f"EVENT/{sorted(clash)[0]}", "a particle may not share its name with an input"
        )
    return tuple(particles)


def _parse_generators(
    value: Any, names: tuple[str, ...], path: str | None, key: str, what: str
) -> Generators:
    """One PERMUTATIONS entry list → generators (tuples of disjoint cycles)."""
    if value is None:
        return ()
    if not isinstance(value, list):
        raise ConfigError(path, key, f"expected a list of permutation groups, found {value!r}")
    if value and all(not isinstance(v, (list, dict)) for v in value):
        value = [value]  # `EVENT: [h1, h2]`: a single flat group
    generators: list[tuple[tuple[str, ...], ...]] = []
    for entry in value:
        if not isinstance(entry, list) or not entry:
            raise ConfigError(path, key, f"expected a list of {what}s or a list of cycles, found {entry!r}")
        nested = [isinstance(e, list) for e in entry]
        if all(nested):
            cycles = [tuple(_name(n, path, key) for n in cycle) for cycle in entry]
        elif not any(nested):
            flat = tuple(_name(n, path, key) for n in entry)
            cycles = [flat]  # checked below, then expanded to adjacent transpositions
        else:
            raise ConfigError(path, key, f"mixes names and cycles in one entry: {entry!r}")
        used: list[str] = [n for c in cycles for n in c]
        for n in used:
            if n not in names:
                raise ConfigError(path, key, f"unknown {what} {n!r} (known: {', '.join(names)})")
        if len(set(used)) != len(used):
            raise ConfigError(path, key, f"a {what} appears twice in one permutation entry: {entry!r}")
        if not any(nested):
            flat = cycles[0]
            generators.extend((((a, b),) for a, b in itertools.pairwise(flat)))
        else:
            if any(len(c) < 2 for c in cycles):
                raise ConfigError(path, key, f"a cycle needs at least two names: {entry!r}")
            generators.append(tuple(cycles))
    return tuple(generators)


def _parse_permutations(
    section: Any, particles: tuple[Particle, ...], path: str | None
) -> tuple[Generators, dict[str, Generators]]:
    if section is None:
        return (), {}
    if not isinstance(section, Mapping):
        raise ConfigError(
            path, "PERMUTATIONS", "expected a mapping of EVENT / particle -> permutation groups"
        )
    by_name = {p.name: p for p in particles}
    event_perms: Generators = ()
    particle_perms: dict[str, Generators] = {}
    for owner, value in section.items():
        key = f"PERMUTATIONS/{owner}"
        if owner == "EVENT":
            event_perms = _parse_generators(value, tuple(by_name), path, key, "particle")
        elif owner in by_name:
            particle_perms[owner] = _parse_generators(value, by_name[owner].daughters, path, key, "daughter")
        else:
            raise ConfigError(path, key, f"unknown particle {owner!r} (known: EVENT, {', '.join(by_name)})")
    # Swapping particles is only meaningful between particles with the same number of daughters.
    for gen in event_perms:
        for cycle in gen:
            sizes = {len(by_name[n].daughters) for n in cycle}
            if len(sizes) > 1:
                raise ConfigError(
                    path,
                    "PERMUTATIONS/EVENT",
                    f"particles {', '.join(cycle)} have different daughter counts and cannot be swapped",
                )
    return event_perms, particle_perms


def _parse_targets_tree(
    section: Any, particles: tuple[Particle, ...], path: str | None, name: str
) -> dict[str, list[Any]]:
    """CLASSIFICATIONS / REGRESSIONS: `{EVENT: [...], <particle>: {PARTICLE: [...], <daughter>: [...]}}`."""
    if section is None:
        return {}
    if not isinstance(section, Mapping):
        raise ConfigError(path, name, "expected a mapping (EVENT: [...])")
    by_name = {p.name: p for p in particles}
    out: dict[str, list[Any]] = {}
    for owner, value in section.items():
        key = f"{name}/{owner}"
        if owner == "EVENT":
            if value is None:
                continue
            if not isinstance(value, list):
                raise ConfigError(path, key, f"expected a list of names, found {value!r}")
            out["EVENT"] = list(value)
        elif owner in by_name:
            if value is None:
                continue
            if not isinstance(value, Mapping):
                raise ConfigError(path, key, "expected a mapping PARTICLE / <daughter> -> list of names")
            for sub, items in value.items():
                if sub != "PARTICLE" and sub not in by_name[owner].daughters:
                    raise ConfigError(path, f"{key}/{sub}", f"unknown daughter {sub!r} of {owner}")
                if items is None:
                    continue
                if not isinstance(items, list):
                    raise ConfigError(path, f"{key}/{sub}", f"expected a list of names, found {items!r}")
                out[f"{owner}/{sub}"] = list(items)
        else:
            raise ConfigError(path, key, f"unknown particle {owner!r} (known: EVENT, {', '.join(by_name)})")
    return out


def _regression_item(value: Any, path: str | None, key: str) -> tuple[str, str]:
    if isinstance(value, Mapping) and len(value) == 1:
        name, kind = next(iter(value.items()))
    elif isinstance(value, list) and len(value) == 2:
        name, kind = value
    else:
        name, kind = value, "gaussian"
    name = _name(name, path, key)
    kind = str(kind)
    if kind not in REGRESSION_TYPES:
        raise ConfigError(
            path,
            f"{key}/{name}",
            f"unknown regression type {kind!r} (expected one of {', '.join(REGRESSION_TYPES)})",
        )
    return name, kind


# ---- writing ---------------------------------------------------------------------------------
def topology_to_dict(topology: EventTopology) -> dict[str, Any]:
    """The SPANet YAML mapping for `topology` (loads back to an equal EventTopology, up to `path`)."""
    inputs: dict[str, dict[str, dict[str, str]]] = {}
    for source in topology.inputs:
        inputs.setdefault(source.kind, {})[source.name] = {f.name: f.option for f in source.features}
    event: dict[str, list[Any]] = {}
    for p in topology.particles:
        event[p.name] = [
            d if s is None else {d: s} for d, s in zip(p.daughters, p.daughter_sources, strict=True)
        ]

    def gens(g: Generators) -> list[list[list[str]]]:
        return [[list(c) for c in gen] for gen in g]

    permutations: dict[str, Any] = {}
    if topology.event_permutations:
        permutations["EVENT"] = gens(topology.event_permutations)
    for name, g in topology.particle_permutations.items():
        if g:
            permutations[name] = gens(g)

    def tree(flat: Mapping[str, Any], convert) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, items in flat.items():
            parts = key.split("/")
            if len(parts) == 1:
                out[parts[0]] = [convert(i) for i in items]
            else:
                out.setdefault(parts[0], {})[parts[1]] = [convert(i) for i in items]
        return out

    return {
        "INPUTS": inputs,
        "EVENT": event,
        "PERMUTATIONS": permutations or None,
        "REGRESSIONS": tree(topology.regressions, lambda i: i[0] if i[1] == "gaussian" else {i[0]: i[1]})
        or None,
        "CLASSIFICATIONS": tree(topology.classifications, str) or None,
    }


def dump_topology(topology: EventTopology, path: str | os.PathLike) -> None:
    """Write `topology` as SPANet event-file YAML (atomically)."""
    text = yaml.safe_dump(topology_to_dict(topology), sort_keys=False, default_flow_style=None)
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text)
