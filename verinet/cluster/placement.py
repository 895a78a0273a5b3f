"""Where each ensemble member runs: a pure resource plan, checked before Ray is asked for anything.

``plan(config, cluster)`` packs the members onto the cluster's nodes the way Ray will have
to (no Ray import here, so the logic is testable on any machine):

* a member with ``tensor_parallel_size`` > 1 gets a placement group of one bundle per GPU,
  ``STRICT_PACK`` (all on one node: tensor parallelism needs the fast intra-node link); its
  actor holds no GPU itself and runs in bundle 0, the engine's workers take the bundles;
* a member asking ``num_gpus`` >= 1 needs that many whole GPUs of one node;
* a fractional member (``num_gpus`` < 1) must fit inside one GPU, which it shares with other
  fractional members (Ray gives each a share of the same device);
* CPUs are counted per node, and so are custom resources (``resources.custom``, e.g. ``{node_a: 1}``):
  a member asking for one goes only to nodes that declare it (``ray start --resources``), which
  is how members are pinned to nodes of a multi-node cluster.

Anything the cluster can never satisfy raises :class:`EnsembleConfigError` saying what to
change, instead of leaving actors pending forever.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

from verinet.backends.config import EnsembleConfig, EnsembleConfigError, MemberSpec

EPS = 1e-6
TP_STRATEGY = "STRICT_PACK"


@dataclass(frozen=True)
class MemberPlacement:
    """What Ray is asked for on behalf of one member, and where the plan put it."""

    name: str
    num_cpus: float  # the actor's CPUs (inside bundle 0 for a tensor-parallel group)
    num_gpus: float  # the actor's own GPU request: 0 for a tensor-parallel group's driver actor
    tensor_parallel_size: int = 1
    bundles: tuple[dict[str, float], ...] = ()  # placement-group bundles; () = no group
    strategy: str | None = None
    node: int = 0  # index into the plan's nodes
    gpus: tuple[int, ...] = ()  # GPU slots of that node the plan counted this member on
    custom: tuple[tuple[str, float], ...] = ()  # Ray custom resources (name, amount), sorted by name

    @property
    def gpus_total(self) -> float:
        return sum(b.get("GPU", 0.0) for b in self.bundles) if self.bundles else self.num_gpus

    @property
    def uses_group(self) -> bool:
        return bool(self.bundles)


@dataclass(frozen=True)
class PlacementPlan:
    members: tuple[MemberPlacement, ...]
    nodes: tuple[dict[str, float], ...]  # the resources planned against, one dict per node
    cpus: float  # demanded in all
    gpus: float

    def __getitem__(self, name: str) -> MemberPlacement:
        for m in self.members:
            if m.name == name:
                return m
        raise KeyError(name)

    def shared_gpus(self) -> dict[tuple[int, int], list[str]]:
        """(node, gpu slot) -> the members counted on it; fractional members share slots."""
        out: dict[tuple[int, int], list[str]] = {}
        for m in self.members:
            for g in m.gpus:
                out.setdefault((m.node, g), []).append(m.name)
        return out

    def summary(self) -> str:
        have_c = sum(n.get("CPU", 0) for n in self.nodes)
        have_g = sum(n.get("GPU", 0) for n in self.nodes)
        head = (f"{len(self.members)} members: {_num(self.cpus)} CPUs, {_num(self.gpus)} GPUs "
                f"of {_num(have_c)} CPUs, {_num(have_g)} GPUs")
        lines = [head]
        for m in self.members:
            where = f"node {m.node}" + (f", GPU slot(s) {list(m.gpus)}" if m.gpus else "")
            group = f", group of {len(m.bundles)} bundles ({m.strategy})" if m.bundles else ""
            custom = "".join(f", {_num(v)} {k}" for k, v in m.custom)
            lines.append(f"  {m.name}: {_num(m.num_cpus)} CPU, {_num(m.gpus_total)} GPU{custom}{group} -> {where}")
        return "\n".join(lines)


@dataclass
class _Node:
    cpu: float
    gpu_free: list[float] = field(default_factory=list)
    custom: dict[str, float] = field(default_factory=dict)


def member_request(spec: MemberSpec) -> MemberPlacement:
    """The Ray request of one member, before it is placed on a node."""
    r = spec.resources
    custom = tuple(sorted((k, float(v)) for k, v in r.custom.items()))
    if r.tensor_parallel_size > 1:
        first: dict[str, float] = {"GPU": 1.0}
        if r.num_cpus > 0:
            first["CPU"] = float(r.num_cpus)
        first.update(custom)  # the actor runs in bundle 0 and takes its custom resources from there
        bundles = (first,) + tuple({"GPU": 1.0} for _ in range(r.tensor_parallel_size - 1))
        return MemberPlacement(spec.name, float(r.num_cpus), 0.0, r.tensor_parallel_size, bundles,
                               TP_STRATEGY, custom=custom)
    return MemberPlacement(spec.name, float(r.num_cpus), float(r.num_gpus), custom=custom)


def plan(config: EnsembleConfig | Sequence[MemberSpec],
         cluster: Mapping[str, float] | Sequence[Mapping[str, float]]) -> PlacementPlan:
    """Place every member on the cluster, or raise EnsembleConfigError saying what to change.

    ``cluster`` is ``ray.cluster_resources()`` (read as one node) or a list of per-node
    resource dicts (``[n["Resources"] for n in ray.nodes() if n["Alive"]]``).
    """
    specs = list(config.members if isinstance(config, EnsembleConfig) else config)
    node_res = [dict(cluster)] if isinstance(cluster, Mapping) else [dict(n) for n in cluster]
    if not node_res:
        raise EnsembleConfigError("the Ray cluster has no live nodes")
    reqs = [member_request(s) for s in specs]
    _check_totals(reqs, node_res)

    nodes = [_Node(float(n.get("CPU", 0.0)), _gpu_slots(float(n.get("GPU", 0.0))),
                   {k: float(n.get(k, 0.0)) for m in reqs for k, _ in m.custom}) for n in node_res]
    placed: dict[str, MemberPlacement] = {}

    def kind(m: MemberPlacement) -> tuple[int, float]:
        if m.uses_group:
            return (0, -m.gpus_total)
        if m.num_gpus >= 1 - EPS:
            return (1, -m.num_gpus)
        if m.num_gpus > EPS:
            return (2, -m.num_gpus)
        return (3, -m.num_cpus)

    for m in sorted(reqs, key=kind):  # hardest first; sorted() is stable, so ties keep config order
        placed[m.name] = _place(m, nodes)
    members = tuple(placed[m.name] for m in reqs)
    return PlacementPlan(members, tuple(node_res), sum(m.num_cpus for m in reqs),
                         sum(m.gpus_total for m in reqs))


def _gpu_slots(total: float) -> list[float]:
    whole = int(total + EPS)
    slots = [1.0] * whole
    if total - whole > EPS:
        slots.append(total - whole)
    return slots


def _check_totals(reqs: list[MemberPlacement], nodes: list[dict[str, float]]) -> None:
    cpus = sum(float(n.get("CPU", 0.0)) for n in nodes)
    gpus = sum(float(n.get("GPU", 0.0)) for n in nodes)
    gpu_members = [m for m in reqs if m.gpus_total > EPS]
    if gpu_members and gpus < EPS:
        asks = ", ".join(f"{m.name} ({_ask(m)})" for m in gpu_members)
        raise EnsembleConfigError(
            f"members {asks} ask for GPUs but the Ray cluster has none (CPU {_num(cpus)}, GPU 0): set their "
            "resources.num_gpus to 0 and tensor_parallel_size to 1 (backend hf runs on the CPU), "
            "or start Ray on a machine with GPUs")
    max_node_gpus = max(int(float(n.get("GPU", 0.0)) + EPS) for n in nodes)
    for m in reqs:
        if m.uses_group and m.tensor_parallel_size > max_node_gpus:
            raise EnsembleConfigError(
                f"member {m.name}: tensor_parallel_size {m.tensor_parallel_size} needs "
                f"{m.tensor_parallel_size} GPUs on one node, but the largest node has {max_node_gpus}: "
                + (f"lower tensor_parallel_size to at most {max_node_gpus} (a divisor of the model's attention "
                   "heads)" if max_node_gpus >= 2 else "set tensor_parallel_size to 1 with a model that fits "
                   "one GPU") + " or add GPUs to a node")
        if not m.uses_group and m.num_gpus > max_node_gpus + EPS:
            raise EnsembleConfigError(
                f"member {m.name}: num_gpus {_num(m.num_gpus)} is more than the largest node's "
                f"{max_node_gpus} GPUs: lower num_gpus, or use tensor_parallel_size for a model that needs "
                "several GPUs")
    need_g = sum(m.gpus_total for m in reqs)
    if need_g > gpus + EPS:
        parts = ", ".join(f"{m.name} {_num(m.gpus_total)}" for m in gpu_members)
        raise EnsembleConfigError(
            f"the members ask for {_num(need_g)} GPUs in all ({parts}) but the Ray cluster has {_num(gpus)}: "
            "lower resources.num_gpus (fractions such as 0.25 share one GPU), lower tensor_parallel_size, "
            "or remove members")
    for name in sorted({k for m in reqs for k, _ in m.custom}):
        askers = [(m.name, v) for m in reqs for k, v in m.custom if k == name]
        have = sum(float(n.get(name, 0.0)) for n in nodes)
        need = sum(v for _, v in askers)
        who = ", ".join(f"{n} {_num(v)}" for n, v in askers)
        if have < EPS:
            raise EnsembleConfigError(
                f"members ask for the custom resource {name!r} ({who}) but no live node of the Ray cluster declares "
                f"it: start a node with `ray start --resources '{{\"{name}\": {_num(need)}}}'` (or bring back the "
                f"node that had it), or remove {name} from their resources.custom")
        if need > have + EPS:
            raise EnsembleConfigError(
                f"members ask for {_num(need)} of the custom resource {name!r} in all ({who}) but the Ray cluster's "
                f"live nodes declare {_num(have)}: lower the amounts in resources.custom or declare more")
    need_c = sum(m.num_cpus for m in reqs)
    if need_c > cpus + EPS:
        parts = ", ".join(f"{m.name} {_num(m.num_cpus)}" for m in reqs)
        raise EnsembleConfigError(
            f"the members ask for {_num(need_c)} CPUs in all ({parts}) but the Ray cluster has {_num(cpus)}: "
            "lower resources.num_cpus (fractions such as 0.5 are fine) or start Ray with more CPUs")


def _place(m: MemberPlacement, nodes: list[_Node]) -> MemberPlacement:
    for i, node in enumerate(nodes):
        if node.cpu + EPS < m.num_cpus:
            continue
        if any(node.custom.get(k, 0.0) + EPS < v for k, v in m.custom):
            continue
        if m.uses_group or m.num_gpus >= 1 - EPS:
            k = m.tensor_parallel_size if m.uses_group else int(m.num_gpus + EPS)
            free = [g for g, f in enumerate(node.gpu_free) if f >= 1 - EPS]
            if len(free) < k:
                continue
            take = tuple(free[:k])
            for g in take:
                node.gpu_free[g] = 0.0
        elif m.num_gpus > EPS:
            fits = [(f, g) for g, f in enumerate(node.gpu_free) if f + EPS >= m.num_gpus]
            if not fits:
                continue
            _, g = min(fits)  # best fit: fill shared GPUs before opening a new one
            node.gpu_free[g] -= m.num_gpus
            take = (g,)
        else:
            take = ()
        node.cpu -= m.num_cpus
        for k, v in m.custom:
            node.custom[k] -= v
        return replace(m, node=i, gpus=take)
    free = "; ".join(f"node {i}: {_num(n.cpu)} CPU free, GPUs free {[_num(f) for f in n.gpu_free]}"
                     + "".join(f", {_num(v)} {k} free" for k, v in sorted(n.custom.items()) if v > EPS)
                     for i, n in enumerate(nodes))
    raise EnsembleConfigError(
        f"member {m.name} ({_ask(m)}) fits on no node once the members before it are placed ({free}): "
        "lower its resources or those of other members (a fractional num_gpus must fit inside one GPU)")


def _ask(m: MemberPlacement) -> str:
    custom = "".join(f", {k} {_num(v)}" for k, v in m.custom)
    if m.uses_group:
        return f"tensor_parallel_size {m.tensor_parallel_size}, num_cpus {_num(m.num_cpus)}{custom}"
    return f"num_gpus {_num(m.num_gpus)}, num_cpus {_num(m.num_cpus)}{custom}"


def _num(x: float) -> str:
    return f"{x:g}"
