"""Run order and progress of a set of specs: what `auxcli plan` prints.

A spec whose `transfer.from` names another spec of the set needs that spec's weights, so it runs after
it (the study's Tables 2 and 3 reuse the models of Table 1). Other `from` values (`init`, a checkpoint
path, an MLflow run id, a spec outside the set) impose no order.

Progress is read from the run-folder contract, `<runtime.runs_dir>/<name>/seed-<k>/`: `complete.json` is
written when a run is finished and recorded, `metrics.json` when training finished, `last.pt` after
every epoch, `spec.resolved.yaml` when it starts (compared with the spec for `stale`). Planning reads
files only and never imports torch.
"""

from __future__ import annotations

from collections.abc import Sequence

from auxcli.errors import Problem, SpecError
from auxcli.spec import Spec



def plan_order(specs: Sequence[Spec], *, sources: Sequence[str] | None = None) -> list[Spec]:
    """The specs in an order where every transfer runs after the spec it transfers from.

    Stable: among specs that are ready, the one given first runs first, so a set without transfers
    keeps its order. `sources` (one file name per spec) only improves error messages. Raises `SpecError`
    for two specs with one name (they would share a run folder) or a cycle of transfers.
    """
    where = list(sources) if sources is not None else [spec.name for spec in specs]
    index: dict[str, int] = {}
    for i, spec in enumerate(specs):
        if spec.name in index:
            first = where[index[spec.name]]
            raise SpecError([Problem(where[i], None, None, "name",
                                     f"{spec.name!r} is also the name of {first}; both would write one run folder",
                                     "a distinct name per spec")])
        index[spec.name] = i
    source_of = [index.get(spec.transfer.from_) if spec.transfer else None for spec in specs]

    order: list[int] = []
    placed: set[int] = set()
    while len(order) < len(specs):
        ready = next((i for i in range(len(specs)) if i not in placed
                      and (source_of[i] is None or source_of[i] in placed)), None)
        if ready is None:
            raise _cycle_error(specs, source_of, placed, where)
        order.append(ready)
        placed.add(ready)
    return [specs[i] for i in order]


def _cycle_error(specs: Sequence[Spec], source_of: list[int | None], placed: set[int],
                 where: list[str]) -> SpecError:
    # Every unplaced spec transfers from an unplaced spec; follow `from` links until one repeats.
    i = next(i for i in range(len(specs)) if i not in placed)
    seen: list[int] = []
    while i not in seen:
        seen.append(i)
        i = source_of[i]  # type: ignore[assignment]  # never None inside a cycle
    cycle = seen[seen.index(i):]
    chain = " -> ".join(specs[j].name for j in cycle + [i])
    return SpecError([Problem(where[cycle[0]], None, None, "transfer.from",
                              f"transfers form a cycle ({chain}, each runs after its transfer.from)",
                              "transfer.from naming a spec that does not depend on this one")])


def run_statuses(specs: Sequence[Spec]) -> dict[tuple[str, int], str]:
    """The state of every (spec name, seed): `auxcli.catalogue.seed_states`."""
    from auxcli.catalogue import seed_states

    return seed_states(specs)


def plan_rows(specs: Sequence[Spec], statuses: dict[tuple[str, int], str], *,
              sources: Sequence[str] | None = None) -> list[dict[str, str | int]]:
    """One row per spec in run order: step, spec name, seeds, transfer source and status per seed
    (`statuses`: `run_statuses(specs)`)."""
    rows: list[dict[str, str | int]] = []
    ordered = plan_order(specs, sources=sources)
    step_of = {spec.name: step for step, spec in enumerate(ordered, 1)}
    for step, spec in enumerate(ordered, 1):
        transfer = "-"
        if spec.transfer is not None:
            source = spec.transfer.from_
            after = f", after step {step_of[source]}" if source in step_of else ""
            transfer = f"{source} ({spec.transfer.mode}{after})"
        rows.append({
            "step": step,
            "spec": spec.name,
            "seeds": ",".join(map(str, spec.seeds)),
            "transfer from": transfer,
            "status": " ".join(f"{seed}:{statuses[spec.name, seed]}" for seed in spec.seeds),
        })
    return rows


def plan_table(specs: Sequence[Spec], statuses: dict[tuple[str, int], str], *,
               sources: Sequence[str] | None = None) -> str:
    """`plan_rows` as a plain-text table."""
    from tabulate import tabulate

    return tabulate(plan_rows(specs, statuses, sources=sources), headers="keys", tablefmt="simple")
