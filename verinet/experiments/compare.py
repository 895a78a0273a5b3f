"""The comparison job's driver: an ensemble of small models against one scaled-up model.

Phases, each written as it completes and skipped on a rerun (so a crashed or cancelled job
resumes where it stopped, without losing or repeating a result):

1. thresholds  -- per arm and task slice, the earliest-error threshold chosen on a labelled
   dev split (``thresholds.json``), unless the config fixes one, and the ensemble members'
   reliabilities learned on the same split (``reliabilities.json``: Dawid-Skene clamped to the
   checker's labels; the Dawid-Skene arms use it, and ``verinet serve`` can load it);
2. problems    -- both arms on every problem, in chunks of ``chunk_size`` batched calls
   (``results.jsonl``, one record per problem);
3. faithfulness -- interventions on each model's chains and on the ensemble pipeline
   (``faithfulness.jsonl``, one record per slice and arm);
4. frontier    -- every model size alone and ensembles of K members of each size, K also matched
   to the baseline's FLOPs (``sweep.jsonl``);
5. summary.json, the report (Markdown + self-contained HTML, with plots) and metrics.prom.

Models run as Ray actors (an embedded local Ray, or the cluster of ``ray job submit``), or in
this process with ``ray.local``. Everything model-facing goes through a caller, so the same
code runs either way.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from verinet.backends.config import EnsembleConfig
from verinet.backends.base import peak_memory
from verinet.experiments.arms import calibrate, calibrate_threshold, run_chunk
from verinet.experiments.config import CompareConfig, ConfigError, TaskSpec
from verinet.experiments.cost import CostError, checkpoint_parameters, matched_k, shares
from verinet.experiments.sweep import frontier_point
from verinet.graph.aggregate import ReliabilityTable
from verinet.orchestration.views import SubsetCaller
from verinet.results import ResultsLog
from verinet.schema import Problem
from verinet.tasks import get_family

Progress = Callable[[str, int, int], None]


def slice_problems(config: CompareConfig, index: int, spec: TaskSpec) -> tuple[list[Problem], list[Problem]]:
    """(test problems, dev problems) of one task slice; the two never overlap."""
    fam = get_family(spec.family)
    dev_n = config.dev_n if config.threshold is None else 0
    if spec.family == "gsm8k":
        from verinet.tasks.gsm8k import load_gsm8k

        loaded = load_gsm8k(spec.path, limit=spec.n + dev_n)
        config.check_file_length(index, len(loaded))
        return loaded[dev_n:], loaded[:dev_n]
    return generated_split(fam, spec.n, dev_n, seed=config.seed * 1000 + index, params=spec.params)


def generated_split(fam: Any, n: int, dev_n: int, *, seed: int, params: dict | None = None
                    ) -> tuple[list[Problem], list[Problem]]:
    """(test, dev) problems of a generated family: the one split rule of ``verinet compare`` and
    ``verinet verify`` (dev drawn with ``seed + 500_000``; no dev problem repeats a test one)."""
    test = fam.sample(n, seed=seed, params=params)
    dev = fam.sample(dev_n, seed=seed + 500_000, params=params) if dev_n else []
    ids = {p.id for p in test}
    return test, [p for p in dev if p.id not in ids]


def _check_unique_ids(slices: list[tuple[TaskSpec, list[Problem], list[Problem]]]) -> None:
    """Results are keyed by problem id: a repeated id would let one problem's results stand in for another's."""
    seen: dict[str, int] = {}
    for i, (spec, test, _) in enumerate(slices):
        for p in test:
            if p.id in seen:
                where = "twice in tasks.%d" % i if seen[p.id] == i else f"in tasks.{seen[p.id]} and tasks.{i}"
                raise ConfigError(
                    f"problem id {p.id!r} occurs {where}; results are kept per problem id. The same file listed "
                    "twice, or GSM8K files whose lines have no 'id' (each is numbered gsm8k-1, gsm8k-2, ... from "
                    "its first line), give the same ids: list each file once, or give every line its own 'id'")
            seen[p.id] = i


def _check_out_dir(config: CompareConfig, out: Path) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    resolved = config.model_dump(mode="json")
    cfg_path = out / "config.yaml"
    if cfg_path.exists():
        previous = yaml.safe_load(cfg_path.read_text(encoding="utf-8"))
        try:  # read back through the model, so fields added since (with their defaults) compare equal
            previous = CompareConfig.model_validate(previous).model_dump(mode="json")
        except Exception as e:  # noqa: BLE001 - unreadable: refuse rather than mix results
            raise ConfigError(f"{cfg_path}: cannot read the config of the earlier run ({e}); choose another "
                              "--out, or delete that directory to start over") from None
        if previous != {**resolved, "out_dir": previous.get("out_dir")}:
            raise ConfigError(
                f"{out} holds results of a different config ({cfg_path}); "
                "choose another --out, or delete that directory to start over"
            )
    else:
        cfg_path.write_text(yaml.safe_dump(resolved, sort_keys=False), encoding="utf-8")
    _check_inputs(config, out)
    return resolved


def _inputs(config: CompareConfig) -> dict[str, Any]:
    """What the config points at and does not hold itself: the ensemble file's members, the task files."""
    import hashlib

    files = {spec.path: hashlib.sha256(Path(spec.path).read_bytes()).hexdigest()
             for spec in config.tasks if spec.path and Path(spec.path).is_file()}
    return {"ensemble": config.ensemble_config().model_dump(mode="json"), "task_files_sha256": files}


def _check_inputs(config: CompareConfig, out: Path) -> None:
    """Refuse to resume when the ensemble YAML or a task file changed since the run began: config.yaml holds
    only their paths, and the new results would be appended to the old ones as if from one setup."""
    path, now = out / "inputs.json", _inputs(config)
    if not path.exists():  # a new run (or one begun before this record): what it runs on from here
        _write_json(path, now)
        return
    before = json.loads(path.read_text(encoding="utf-8"))
    try:  # read back through the model, so member fields added since (with their defaults) compare equal
        before["ensemble"] = EnsembleConfig.model_validate(before.get("ensemble")).model_dump(mode="json")
    except Exception:  # noqa: BLE001 - unreadable: counts as changed
        before["ensemble"] = None
    changed = [k for k in now if before.get(k) != now[k]]
    if changed:
        what = {"ensemble": f"the ensemble's members ({config.ensemble.config})",
                "task_files_sha256": "a task file's content"}
        raise ConfigError(f"{out} holds results of another setup: {', '.join(what[k] for k in changed)} changed "
                          f"since the run began ({path}); choose another --out, or delete that directory to start "
                          "over")


@contextmanager
def open_callers(config: CompareConfig) -> Iterator[tuple[Any, dict]]:
    """(caller over every member and the baseline, prompt formats); Ray actors unless ray.local."""
    from verinet.orchestration import open_members

    all_members = config.all_members()
    if config.ray.local:
        with open_members(all_members, local=True) as pair:
            yield pair
        return
    from verinet.cluster.local import init_ray

    init_ray(config.ray.address, num_cpus=config.ray.num_cpus)
    with open_members(all_members, local=False) as pair:
        yield pair


def _infos(caller: Any, config: CompareConfig) -> dict[str, dict[str, Any]]:
    res = caller.call_each({m: ("info", (), {}) for m in caller.members})
    out = {m: dict(info) for m, info in res.results.items()}
    if config.ray.local:  # every model lives in this process
        for info in out.values():
            info.update(peak_memory())
    return out


def _thresholds(config: CompareConfig, out: Path, slices, ens, base, formats, progress: Progress | None
                ) -> tuple[dict[str, dict[str, float]], dict[str, ReliabilityTable]]:
    """Per slice: the arms' thresholds (``thresholds.json``) and the ensemble's reliabilities learned on
    the labelled dev split (``reliabilities.json``), both fitted once and reused on resume."""
    path, rpath = out / "thresholds.json", out / "reliabilities.json"
    done: dict[str, dict[str, float]] = json.loads(path.read_text()) if path.exists() else {}
    tables: dict[str, dict] = json.loads(rpath.read_text()) if rpath.exists() else {}
    if progress:
        progress("thresholds", sum(str(i) in done for i in range(len(slices))), len(slices))
    for i, (spec, _, dev) in enumerate(slices):
        key = str(i)
        if key in done:
            continue
        kinds = list(config.inject)
        if config.threshold is None and not dev:
            raise ConfigError(f"tasks.{i}: no dev problems to calibrate on (every one repeated a test problem); "
                              "raise dev_n or fix `threshold`")
        cal = None
        if dev:
            cal = calibrate(ens, formats, dev, aggregation=config.ensemble.aggregation, seed=config.seed + 1,
                            kinds=kinds, also=["dawid_skene"])
            absent = sorted(set(ens.members) - set(cal.reliabilities.verifiers))
            if absent:
                raise ConfigError(f"tasks.{i}: members {absent} gave no verdicts on the dev split, so no "
                                  "reliabilities could be learned for them; check their logs and rerun")
            tables[key] = cal.reliabilities.to_dict()
            _write_json(rpath, tables)
        if config.threshold is not None:
            done[key] = {"ensemble": config.threshold, "baseline": config.threshold,
                         "reliability_weighted": config.threshold}
        else:
            assert cal is not None
            done[key] = {
                "ensemble": cal.threshold,
                "reliability_weighted": cal.by_aggregation["dawid_skene"],  # the arm pools by Dawid-Skene
                "baseline": calibrate_threshold(base, formats, dev, aggregation="mean", seed=config.seed + 1,
                                                kinds=kinds) if config.baseline.self_verify else 0.5,
            }
        _write_json(path, done)
        if progress:
            progress("thresholds", len(done), len(slices))
    return done, {k: ReliabilityTable.from_dict(t) for k, t in tables.items()}


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2))
    tmp.replace(path)


def run_compare(config: CompareConfig, *, progress: Progress | None = None, out_dir: Path | None = None) -> Path:
    """Run the job, writing results as it goes; return the Markdown report's path."""
    from verinet.experiments.report import write_report
    from verinet.experiments.summary import summarize

    out = Path(out_dir or config.out_dir)
    slices = []  # read and checked before anything is written, so fixing a task file is not a 'changed input'
    for i, spec in enumerate(config.tasks):
        test, dev = slice_problems(config, i, spec)
        slices.append((spec, test, dev))
    _check_unique_ids(slices)
    resolved = _check_out_dir(config, out)
    ens_names = [m.name for m in config.ensemble_config().members]
    base_name = config.baseline.member.name
    specs = config.all_members().members
    try:  # FLOPs need every model's size, read from its checkpoint config, before any work is done
        parameters = {m.name: checkpoint_parameters(m, config.cost.parameters) for m in specs}
    except CostError as e:
        raise ConfigError(str(e)) from None
    member_shares = {m.name: shares(m) for m in specs}
    for m in config.frontier_members():  # frontier-only models are accounted like the baseline
        member_shares[m.name] = shares(config.baseline.member)

    with open_callers(config) as (caller, formats):
        ens, base = SubsetCaller(caller, ens_names), SubsetCaller(caller, [base_name])
        infos = _infos(caller, config)
        thresholds, reliabilities = _thresholds(config, out, slices, ens, base, formats, progress)

        with ResultsLog(out / "results.jsonl") as log:
            total = sum(len(t) for _, t, _ in slices)
            done = sum(p.id in log for _, t, _ in slices for p in t)
            if progress:
                progress("problems", done, total)
            for i, (spec, test, _) in enumerate(slices):
                for start in range(0, len(test), config.chunk_size):
                    chunk = test[start:start + config.chunk_size]
                    if all(p.id in log for p in chunk):
                        continue
                    records = run_chunk(config, caller, ens, base, formats, chunk, thresholds=thresholds[str(i)],
                                        parameters=parameters, member_shares=member_shares, chunk_id=f"{i}:{start}",
                                        reliabilities=reliabilities.get(str(i)))
                    for r in records:
                        if r["problem_id"] not in log:
                            log.append({**r, "slice": i})
                            done += 1
                    if progress:
                        progress("problems", done, total)
            records = [log.records[p.id] for _, t, _ in slices for p in t]

        faith = _faithfulness(config, out, slices, caller, ens, base, formats, thresholds, progress,
                              reliabilities)
        sweep = _frontier(config, out, slices, caller, formats, thresholds, parameters, member_shares, records,
                          progress)
        infos = _infos(caller, config)  # peak memory after the work

    summary = summarize(config, records, faith, sweep, infos, parameters, thresholds)
    summary["config"] = resolved
    (out / "summary.json").write_text(dumps_json(summary), encoding="utf-8")
    return write_report(config, summary, records, faith, out)


def _faithfulness(config, out, slices, caller, ens, base, formats, thresholds, progress,
                  reliabilities=None) -> list[dict[str, Any]]:
    spec = config.faithfulness
    if spec.n == 0 or not spec.tests:
        return []
    from verinet.faithfulness import evaluate_model, evaluate_pipeline

    e = config.ensemble
    units = []
    for i, (_, test, _) in enumerate(slices):
        problems = test[:spec.n]
        units += [(f"faith/{i}/{m}", i, m, "model", problems) for m in [config.baseline.member.name, *ens.members]
                  if formats[m].can_solve]  # a process reward model writes no chain to intervene on
        if spec.pipeline:
            units.append((f"faith/{i}/ensemble", i, "ensemble", "pipeline", problems))
    with ResultsLog(out / "faithfulness.jsonl", key="unit") as log:
        done = sum(u[0] in log for u in units)
        if progress:
            progress("faithfulness", done, len(units))
        for unit, i, arm, kind, problems in units:
            if unit not in log:
                if kind == "model":
                    one = SubsetCaller(caller, [arm])
                    res = evaluate_model(one, arm, formats[arm], problems, tests=spec.tests, seed=config.seed,
                                         n_boot=spec.n_boot)
                else:
                    res = evaluate_pipeline(ens, formats, problems, seed=config.seed, n_boot=spec.n_boot,
                                            topology=e.topology, k=e.k, aggregation=e.aggregation,
                                            threshold=thresholds[str(i)]["ensemble"], selection=e.selection,
                                            reliabilities=(reliabilities or {}).get(str(i)))
                log.append({"unit": unit, "slice": i, "family": problems[0].family, "arm": arm, "kind": kind,
                            "summary": res.summary, "records": res.records})
                done += 1
                if progress:
                    progress("faithfulness", done, len(units))
        return [log.records[u[0]] for u in units]


def dumps_json(obj: Any) -> str:
    """Strict JSON: NaN and infinities become null (``json`` would write a bare NaN, which is not JSON)."""
    return json.dumps(_finite(obj), indent=2, default=str, allow_nan=False)


def _finite(x: Any) -> Any:
    if isinstance(x, float):
        return x if x == x and x not in (float("inf"), float("-inf")) else None
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_finite(v) for v in x]
    if hasattr(x, "item") and callable(x.item):  # numpy scalars
        return _finite(x.item())
    return x


def _frontier(config, out, slices, caller, formats, thresholds, parameters, member_shares, records, progress
              ) -> list[dict[str, Any]]:
    sw = config.sweep
    if sw.n == 0 or not sw.ks:
        return []
    from verinet.experiments.summary import frontier_flops, per_problem_flops

    sizes = config.frontier_sizes()
    ens_names = set(m.name for m in config.ensemble_config().members)
    ens_label = next((lab for lab, ms in sizes.items() if ens_names & set(ms)), None)
    ks = sorted(set(sw.ks))
    matched: dict[int, int] = {}
    uncapped: dict[int, int] = {}  # the K that would match the baseline's FLOPs without sweep.max_k
    if sw.compute_matched and ens_label is not None:
        for i in range(len(slices)):
            flops = per_problem_flops(config, [r for r in records if r["slice"] == i], parameters)
            matched[i], uncapped[i] = matched_k(flops["baseline"], lambda k, f=flops: frontier_flops(config, f, k),
                                                sw.max_k)
    def matched_fields(i: int, label: str, k: int) -> dict[str, Any]:
        hit = matched.get(i) == k and label == ens_label
        return {"compute_matched": hit, "matched_k_uncapped": uncapped.get(i) if hit else None}

    units = [(f"sweep/{i}/{label}/{k}", i, label, k) for i in range(len(slices)) for label in sizes
             for k in sorted(set(ks) | ({matched[i]} if i in matched and label == ens_label else set()))]
    calibrated: dict[tuple[int, str], float] = {}
    with ResultsLog(out / "sweep.jsonl", key="unit") as log:
        done = sum(u[0] in log for u in units)
        if progress:
            progress("frontier", done, len(units))
        for unit, i, label, k in units:
            if unit in log:
                calibrated.setdefault((i, label), log.records[unit]["threshold"])
                continue
            models = sizes[label]
            if (i, label) not in calibrated:  # one earliest-error threshold per size, on the dev split
                dev = slices[i][2]
                calibrated[(i, label)] = config.threshold if config.threshold is not None or not dev else \
                    calibrate_threshold(SubsetCaller(caller, models), formats, dev, aggregation="mean",
                                        seed=config.seed + 1, kinds=list(config.inject))
            problems = slices[i][1][:sw.n]
            point = frontier_point(config, caller, label, models, formats, problems, k,
                                   threshold=calibrated[(i, label)] if calibrated[(i, label)] is not None else 0.5,
                                   parameters=parameters, member_shares=member_shares, unit=unit)
            log.append({**point, "slice": i, **matched_fields(i, label, k)})
            done += 1
            if progress:
                progress("frontier", done, len(units))
        # the flag as this run computes it: a record written by an earlier version may have matched another K
        return [{**log.records[unit], **matched_fields(i, label, k)} for unit, i, label, k in units]
