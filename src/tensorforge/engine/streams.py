"""Stream schedule: which CUDA stream runs each layer of a plan, and which earlier layers it waits for.

Why: at batch 1 a GPU runs one small convolution far below its capacity, and a block's independent branches
(GoogLeNet's Inception: the 1x1, 3x3, 5x5 and pool branches) could run side by side. On separate streams they
do, inside the plan's CUDA graph as well: a capture follows cross-stream event dependencies.

Each stream runs its layers in the graph's node order. A node is *serial* when every earlier node is one of its
ancestors and every later node one of its descendants: nothing can run beside it. A maximal run of non-serial
nodes is a *section*, the nodes between a fork and its join. Inside a section the nodes are dealt out chain by
chain: a node continues the stream of a producer that is the last node that stream ran, and otherwise starts a
new chain on the next unused stream (up to `max_streams`, then on the least loaded one, in MACs). Serial nodes
run on stream 0, the caller's stream.

Streams cost events, so they must carry real work: a side stream with fewer than `min_stream_macs`
multiply-accumulates in a section gives its nodes back to stream 0, and a section with fewer than two such
streams runs on stream 0 alone. A graph without such a section gets the single-stream schedule (no events).

Waits: a node waits for each of its producers that ran on another stream, unless its own stream already waited
for that point of the other stream (vector clocks), so a fork or a join costs one event per side stream. The
serial nodes around a section need nothing more: every node of a section descends from the serial node before
it, and the serial node after it descends from every node of the section, so both orders follow from the data
waits. The execution context forks its side streams from the caller's stream at entry and joins them back at
the end (context.py).

Memory (memory.py): two nodes of one section on different streams may run at the same time, so a value a side
stream touches (defines or reads) in a section counts as live over the whole section. Every other pair of
accesses runs in node order: on stream 0 within a section, and across sections through the serial nodes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ..ir import Graph
from ..ir.profile import Profile
from .config import as_profile

MIN_STREAM_MACS = 1 << 20  # at the profile's opt: below this a branch is cheaper to run in line than to synchronize


@dataclass(frozen=True)
class StreamSchedule:
    streams: tuple[int, ...]  # per node position: 0 is the caller's stream, 1.. the execution context's own
    waits: tuple[tuple[int, ...], ...]  # per node position: positions of earlier nodes on other streams it waits for
    sections: tuple[tuple[int, int], ...]  # (first, last) node positions of each section that uses several streams

    @property
    def num_streams(self) -> int:
        return max(self.streams, default=0) + 1

    @property
    def signals(self) -> frozenset[int]:
        """Positions of the nodes some other stream waits for (each records an event after it runs)."""
        return frozenset(p for waits in self.waits for p in waits)

    def section_index(self) -> dict[int, int]:
        """Node position -> index in `sections`, for the nodes inside a multi-stream section."""
        return {i: k for k, (first, last) in enumerate(self.sections) for i in range(first, last + 1)}


def single_stream(graph: Graph) -> StreamSchedule:
    """Every node on the caller's stream, in node order: what a plan does without independent heavy branches."""
    n = len(graph.nodes)
    return StreamSchedule((0,) * n, ((),) * n, ())


def plan_streams(graph: Graph, device_type: str, max_streams: int, profile: Profile | int) -> StreamSchedule:
    """The schedule a plan runs with: several streams on CUDA only (a CPU plan runs its layers one by one). Work is
    weighed at the profile's opt (an int n: `Profile.batch(n)`), the sizes the plan is tuned for."""
    if device_type != "cuda":
        return single_stream(graph)
    return schedule_streams(graph, max_streams=max_streams, env=as_profile(profile).opt_env)


def schedule_streams(
    graph: Graph, *, max_streams: int, env: Mapping[str, int] | None = None, min_stream_macs: int = MIN_STREAM_MACS
) -> StreamSchedule:
    """The stream of every node of `graph` and the waits between streams (see the module docstring); MACs are
    counted with `env` binding the symbols. A pure function of the graph: a loaded plan recomputes it."""
    if max_streams < 2:
        return single_stream(graph)
    producers = _producers(graph)
    macs = [
        node.opdef.count_macs([v.type for v in node.inputs], [v.type for v in node.outputs], node.attrs, env or {})
        for node in graph.nodes
    ]
    streams = [0] * len(graph.nodes)
    sections = []
    for first, last in _sections(producers):
        assigned = _assign_section(range(first, last + 1), producers, macs, max_streams, min_stream_macs)
        if assigned is not None:
            streams[first : last + 1] = assigned
            sections.append((first, last))
    if not sections:
        return single_stream(graph)
    return StreamSchedule(tuple(streams), _waits(streams, producers), tuple(sections))


def _producers(graph: Graph) -> list[tuple[int, ...]]:
    """Per node position: the positions of the nodes that produce its inputs (graph inputs and constants have none)."""
    position = {id(v): i for i, node in enumerate(graph.nodes) for v in node.outputs}
    return [tuple(sorted({position[id(v)] for v in node.inputs if id(v) in position})) for node in graph.nodes]


def _sections(producers: Sequence[tuple[int, ...]]) -> list[tuple[int, int]]:
    """(first, last) of every maximal run of at least two non-serial nodes (bit sets of ancestors and descendants)."""
    n = len(producers)
    ancestors = [0] * n
    for i, ps in enumerate(producers):
        for p in ps:
            ancestors[i] |= ancestors[p] | (1 << p)
    descendants = [0] * n
    for i in reversed(range(n)):  # every consumer of i comes after i, so descendants[i] is complete here
        for p in producers[i]:
            descendants[p] |= descendants[i] | (1 << i)
    serial = [ancestors[i].bit_count() == i and descendants[i].bit_count() == n - 1 - i for i in range(n)]
    runs, start = [], None
    for i in range(n + 1):
        if i < n and not serial[i]:
            start = i if start is None else start
        elif start is not None:
            if i - start >= 2:
                runs.append((start, i - 1))
            start = None
    return runs


def _assign_section(
    positions: range, producers: Sequence[tuple[int, ...]], macs: Sequence[int], max_streams: int, min_stream_macs: int
) -> list[int] | None:
    """The stream of each node of one section, numbered from 0 by first use, or None when fewer than two streams
    would carry `min_stream_macs` (the section then stays on stream 0)."""
    stream_of: dict[int, int] = {}
    tail: dict[int, int] = {}  # stream -> the last position it runs so far
    load = [0] * max_streams
    for i in positions:
        continuing = [stream_of[p] for p in producers[i] if p in stream_of and tail[stream_of[p]] == p]
        if continuing:
            stream = continuing[0]
        elif len(tail) < max_streams:
            stream = len(tail)  # streams are taken in order, so this is the first unused one
        else:
            stream = min(range(max_streams), key=lambda k: (load[k], k))
        stream_of[i] = stream
        tail[stream] = i
        load[stream] += macs[i]
    heavy = {k for k in tail if load[k] >= min_stream_macs}
    if len(heavy) < 2:
        return None
    renumbered: dict[int, int] = {}  # stream 0 keeps 0: the section's first node starts on it
    streams = []
    for i in positions:
        stream = stream_of[i] if stream_of[i] in heavy else 0
        streams.append(renumbered.setdefault(stream, len(renumbered)))
    return streams


def _waits(streams: Sequence[int], producers: Sequence[tuple[int, ...]]) -> tuple[tuple[int, ...], ...]:
    """Per node: the producers on other streams it must wait for, leaving out those its stream already waited for
    (directly or through another wait). clock[j] is the last position of stream j known to have finished."""
    num_streams = max(streams, default=0) + 1
    stream_clock = [[-1] * num_streams for _ in range(num_streams)]  # at entry every side stream forks from stream 0
    clock_after: list[list[int]] = []
    waits = []
    for i, stream in enumerate(streams):
        clock = list(stream_clock[stream])
        needed = []
        for p in sorted(producers[i], reverse=True):  # the latest first: waiting for it may cover the others
            if streams[p] != stream and clock[streams[p]] < p:
                needed.append(p)
                clock = [max(a, b) for a, b in zip(clock, clock_after[p])]
        clock[stream] = i
        stream_clock[stream] = clock
        clock_after.append(clock)
        waits.append(tuple(sorted(needed)))
    return tuple(waits)
