"""The reproduce record as typed records: the command and its state (running, finished,
interrupted), every stage of its plan with how it ended, each training run's figures read from
its metrics.json, statistics over seeds, cross-seed errors and goals; and its markdown, built
section by section (the README shows it; generated, never copied by hand)."""
from __future__ import annotations

import dataclasses
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from ..device import PROJECT_ROOT, slug
from ..io import atomic_write_bytes
from ..records import Errors, Metrics, write_json
from .plan import Stage

# on one H100: 20 epochs of training; every CAM method and faithfulness score of every error
GOALS = {"train_seconds": 12.0, "explain_seconds": 2.0}

CACHE = {"cold": "(cold cache)", "warm": "(warm cache)", "preflight": "(training graph "
         "cached by the preflight)", "shared": "(cache of other shapes)", "off": "(no compile)"}
STATES = ("planned", "running", "done", "failed", "skipped")
RUNNING, FINISHED, INTERRUPTED = "running", "finished", "interrupted"


@dataclass
class TrainResult:
    """One training stage's run, as its metrics.json and errors.json give it."""
    stage: str
    run_dir: str
    log: str
    recipe: str  # the -C file, "" for the default recipe
    seed: int
    test_accuracy: float
    errors: int
    epochs: int
    train_seconds: float
    compile_seconds: float
    compile: str
    compile_cache: str  # a key of CACHE
    startup_seconds: float
    images_per_second: float
    total_seconds: float
    error_indices: list[int]
    retried: dict | None = None  # the failure with compile on, when it was retried eager
    vs_seed_0: dict | None = None  # ablations: compare.py's figures against seed 0

    @classmethod
    def from_run(cls, stage: Stage, run_dir: Path, log: Path, m: Metrics, errors: Errors,
                 cache: str) -> "TrainResult":
        """A training stage's run as its metrics.json and errors.json give it."""
        return cls(stage=stage.name, run_dir=str(run_dir), log=str(log),
                   recipe=shown(stage.recipe),
                   seed=m.seed, test_accuracy=m.test_accuracy, errors=m.errors,
                   epochs=m.epochs, train_seconds=m.train_seconds,
                   compile_seconds=m.compile_seconds, compile=m.compile, compile_cache=cache,
                   startup_seconds=m.startup_seconds, images_per_second=m.images_per_second,
                   total_seconds=m.total_seconds,
                   error_indices=sorted(e.index for e in errors.errors))


@dataclass
class StageState:
    """A stage of the plan and how it ended (or that it is running, or never ran)."""
    name: str
    kind: str
    state: str = "planned"  # one of STATES
    seconds: float | None = None
    note: str = ""  # why it failed or was skipped


@dataclass
class Record:
    """reproduce-<device>.json: one command's record, rewritten after every stage."""
    device: str
    device_type: str
    torch: str
    cuda: str | None
    date: str
    git_sha: str
    command: str
    started: str  # when this command started (ISO, UTC)
    smoke: bool
    budget_minutes: float
    status: str = RUNNING  # running (or cut short, if no process is left), finished, interrupted
    data: dict | None = None
    stages: list[StageState] = field(default_factory=list)
    preflight: list[dict] = field(default_factory=list)
    compile_off: str = ""  # why every stage ran eager
    seeds: list[TrainResult] = field(default_factory=list)
    calibration: TrainResult | None = None
    vs_calibration: dict = field(default_factory=dict)
    ablations: list[TrainResult] = field(default_factory=list)
    explain: dict | None = None
    bench: dict | None = None
    failed: list[dict] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)
    disabled: list[str] = field(default_factory=list)
    summary: dict = field(default_factory=dict)
    cross_seed: dict = field(default_factory=dict)
    goals: dict = field(default_factory=dict)
    seconds: float = 0.0

    def stage(self, name: str) -> StageState:
        return next(s for s in self.stages if s.name == name)

    def runs(self) -> list[TrainResult]:
        """Every training run of this command."""
        return [*self.seeds, *([self.calibration] if self.calibration else []),
                *self.ablations]

    def refresh(self) -> None:
        """The figures derived from the runs: seed statistics, cross-seed errors, goals."""
        self.summary = summary(self.seeds)
        self.cross_seed = cross_seed({s.seed: s.error_indices for s in self.seeds})
        self.goals = {} if self.smoke else goals(self)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict, where: str = "reproduce record") -> "Record":
        """A record read back (a committed one, for the README); UserError if it is not one."""
        from ..records import from_fields
        r = from_fields(cls, d, where)

        def run(x):
            return None if x is None else from_fields(TrainResult, x, where)
        return dataclasses.replace(
            r, stages=[from_fields(StageState, x, where) for x in r.stages],
            seeds=[run(x) for x in r.seeds], calibration=run(r.calibration),
            ablations=[run(x) for x in r.ablations])


def shown(recipe: str) -> str:
    """A recipe's path as the record shows it: relative to the project where it lies in it."""
    if not recipe:
        return ""
    p = Path(recipe)
    return str(p.relative_to(PROJECT_ROOT)) if p.is_relative_to(PROJECT_ROOT) else recipe


def stats(values: list[float]) -> dict:
    """n, mean, standard deviation (0 for one value), min and max."""
    return {"n": len(values), "mean": statistics.fmean(values),
            "sd": statistics.stdev(values) if len(values) > 1 else 0.0,
            "min": min(values), "max": max(values)}


def summary(seeds: list[TrainResult]) -> dict:
    """Statistics over the seeds; warm-up and first-step seconds apart for the runs whose
    compile found the cache cold, warm, or did not compile (never averaged together)."""
    if not seeds:
        return {}
    out = {k: stats([getattr(s, k) for s in seeds]) for k in (
        "test_accuracy", "train_seconds", "images_per_second")}
    for cache in CACHE:
        group = [s for s in seeds if s.compile_cache == cache]
        for k in ("compile_seconds", "startup_seconds") if group else ():
            out[f"{k}_{cache}"] = stats([getattr(s, k) for s in group])
    return out


def cross_seed(errors: dict[int, list[int]]) -> dict:
    """Test images every seed gets wrong, and those only some seeds do."""
    sets = [set(v) for v in errors.values()]
    always = set.intersection(*sets) if sets else set()
    return {"seeds": sorted(errors), "always_wrong": sorted(always),
            "sometimes_wrong": sorted(set.union(*sets) - always) if sets else []}


def goals(r: Record) -> dict:
    """Each goal with its target, what was measured and by how much it was met or missed."""
    out = {}
    seeds, cal = r.summary, r.calibration
    if seeds and cal:
        out["accuracy_vs_calibration"] = {
            "target": cal.test_accuracy, "measured": seeds["test_accuracy"]["mean"],
            "margin": seeds["test_accuracy"]["mean"] - cal.test_accuracy}
    if seeds and r.device_type == "cuda":
        out["train_seconds_20_epochs"] = {
            "target": GOALS["train_seconds"], "measured": seeds["train_seconds"]["mean"],
            "margin": GOALS["train_seconds"] - seeds["train_seconds"]["mean"],
            "note": "the goal is for one H100"}
    if r.explain:
        e = r.explain
        out["explain_seconds"] = {"target": GOALS["explain_seconds"],
                                  "measured": e["explain_seconds"],
                                  "margin": GOALS["explain_seconds"] - e["explain_seconds"],
                                  "note": f"{len(e['methods'])} methods, {len(e['metrics'])} "
                                          f"scores, {e['scored']} of {e['errors']} errors "
                                          "scored; the goal is for one H100"}
    for goal in out.values():
        goal["met"] = goal["margin"] >= 0
    return out


def by_cache(summary: dict, key: str) -> str:
    """A start-up figure of the seeds, cold and warm compile caches apart (never averaged
    together): "41.20 (cold cache); 6.10 (warm cache, mean of 2)"."""
    parts = []
    for cache in CACHE:
        v = summary.get(f"{key}_{cache}")
        if v:
            more = f", mean of {v['n']}" if v["n"] > 1 else ""
            parts.append(f"{v['mean']:.2f} {CACHE[cache][:-1]}{more})")
    return "; ".join(parts) or "-"


def record_name(r: Record) -> str:
    return f"reproduce-{'smoke-' if r.smoke else ''}{slug(dataclasses.asdict(r))}"


def write_record(r: Record, results: Path) -> tuple[Path, Path]:
    """reproduce-<device>.json and its markdown table in `results`."""
    results.mkdir(parents=True, exist_ok=True)
    json_path, md_path = results / f"{record_name(r)}.json", results / f"{record_name(r)}.md"
    write_json(json_path, r.to_dict())
    atomic_write_bytes(md_path, markdown(r).encode())
    return json_path, md_path


# --- the markdown, one section at a time ---

def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.2f}%"


def _num(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"


def _heading(r: Record) -> list[str]:
    cuda = f", CUDA {r.cuda}" if r.cuda else ""
    lines = [f"### {r.device}, torch {r.torch}{cuda}, {r.date}, git {r.git_sha}", ""]
    if r.status == RUNNING:
        done = sum(s.state in ("done", "failed", "skipped") for s in r.stages)
        lines += [f"**Cut short, or still running**: this command started at {r.started} and "
                  f"has not ended; {done} of its {len(r.stages)} stages ended (see the stages "
                  "below). Nothing here is a finished reproduction.", ""]
    elif r.status == INTERRUPTED:
        lines += [f"**Interrupted** (Ctrl-C or SIGTERM) after {r.seconds:.0f} s: the stages "
                  "not ended are named below.", ""]
    return lines


def _runs_table(r: Record) -> list[str]:
    d = r.data
    lines = [f"Data: {d['source_kind']} ({Path(d['source']).name}), "
             f"{d['counts']['train']:,} train / {d['counts']['test']:,} test"
             f"{' (smoke subsets)' if r.smoke else ''}. Command: `{r.command}`.", ""]
    s = r.summary
    if not s and not r.runs():
        return lines + ["No run was trained."]
    lines += ["| run | seeds | test accuracy mean ± sd (min–max) | train s mean | warm-up s "
              "| first step s | img/s mean |", "|---|---|---|---|---|---|---|"]
    if s:
        a = s["test_accuracy"]
        spread = (f"{_pct(a['mean'])} ± {_pct(a['sd'])} ({_pct(a['min'])}–{_pct(a['max'])})"
                  if a["n"] > 1 else f"{_pct(a['mean'])} (one seed: no spread)")
        lines.append(f"| default recipe, {r.seeds[0].epochs} epochs | {a['n']} | {spread} | "
                     f"{_num(s['train_seconds']['mean'])} | {by_cache(s, 'compile_seconds')} | "
                     f"{by_cache(s, 'startup_seconds')} | "
                     f"{s['images_per_second']['mean']:,.0f} |")
    rows = ([(f"calibration {Path(r.calibration.recipe).name}", r.calibration)]
            if r.calibration else [])
    rows += [(f"ablation {Path(a.recipe).stem} ({Path(a.recipe).name})", a) for a in r.ablations]
    for name, x in rows:  # one seed-0 run each
        lines.append(f"| {name}, {x.epochs} epochs | 1 | {_pct(x.test_accuracy)} | "
                     f"{_num(x.train_seconds)} | {_num(x.compile_seconds)} "
                     f"{CACHE[x.compile_cache]} | {_num(x.startup_seconds)} | "
                     f"{x.images_per_second:,.0f} |")
    return lines


def _comparisons(r: Record) -> list[str]:
    lines = []
    for a in r.ablations:
        if a.vs_seed_0:
            lines += ["", f"Seed 0 (A) vs ablation {Path(a.recipe).stem} (B): "
                          f"{a.vs_seed_0['summary']}."]
    for name, v in r.vs_calibration.items():
        if v:
            who = "seed 0" if name == "seed_0" else "the seeds"
            lines += ["", f"Calibration (A) vs {who} (B): {v['summary']}."]
    return lines


def _explain(r: Record) -> list[str]:
    if not r.explain:
        return []
    e = r.explain
    return ["", f"Explaining all {e['errors']} errors of seed 0 (both classes): "
                f"{e['cams_seconds']:.3f} s for the maps of {len(e['methods'])} methods, "
                f"{e['scores_seconds']:.3f} s for {len(e['metrics'])} scores of "
                f"{e['scored']} errors; rendering {e['render_seconds']:.1f} s."]


def _bench(r: Record) -> list[str]:
    if not r.bench or not r.bench.get("plan"):
        return []
    b = r.bench
    ran = [f"{x['suite']} {x['seconds']:.0f} s (estimated {x['estimated_seconds']:.0f})"
           if "seconds" in x else f"{x['suite']} stopped unfinished (estimated "
           f"{x['estimated_seconds']:.0f} s)" for x in b["plan"] if not x["skipped"]]
    skipped = [f"{x['suite']} (needed ~{x['estimated_seconds']:.0f} s)"
               for x in b["plan"] if x["skipped"]]
    return ["", f"Benchmarks within {b['budget_seconds']:.0f} s: " + (", ".join(ran) or
                                                                       "none ran")
            + (f"; skipped: {', '.join(skipped)}" if skipped else "") + "."]


def _cross_seed_and_goals(r: Record) -> list[str]:
    cs = r.cross_seed
    lines = ["", f"Across seeds {cs['seeds']}: {len(cs['always_wrong'])} test images are always "
                 f"wrong, {len(cs['sometimes_wrong'])} only sometimes."] if cs.get("seeds") \
        else []
    if r.goals:
        lines += ["", "| goal | target | measured | met | margin |", "|---|---|---|---|---|"]
        for name, g in r.goals.items():
            lines.append(f"| {name} | {g['target']:.4g} | {g['measured']:.4g} | "
                         f"{'yes' if g['met'] else 'no'} | {g['margin']:+.4g} |")
    return lines


def _preflight(r: Record) -> list[str]:
    pre = r.preflight
    if not pre:
        return []
    failed = "; ".join(f"{c['check']} ({c['error']})" for c in pre if c["ok"] is False)
    skipped = ", ".join(c["check"] for c in pre if c["ok"] is None)
    lines = ["", f"Preflight: {sum(1 for c in pre if c['ok'])} of {len(pre)} checks passed"
             + (f"; failed: {failed}" if failed else "")
             + (f"; skipped: {skipped}" if skipped else "") + "."]
    return lines + ([f"\n{r.compile_off}."] if r.compile_off else [])


def _outcomes(r: Record) -> list[str]:
    lines = []
    for x in r.failed:
        log = f" (log `{Path(x['log']).name}`)" if x.get("log") else ""
        lines.append(f"\nFailed {x['stage']}: {x['error']}{log}.")
    for s in r.skipped:
        why = s.get("reason") or (f"needed ~{s['estimated_seconds']} s, "
                                  f"{max(s['seconds_left'], 0):.1f} s of the "
                                  f"{r.budget_minutes}-minute budget left")
        lines.append(f"\nSkipped {s['stage']}: {why}.")
    unended = [s.name + (" (running when the record was last written)" if s.state == "running"
                         else "") for s in r.stages if s.state in ("planned", "running")]
    if unended and r.status != FINISHED:
        lines.append(f"\nNot ended: {', '.join(unended)}.")
    if r.disabled:
        lines.append(f"\nNot asked for: {', '.join(r.disabled)}.")
    return lines


def markdown(r: Record) -> str:
    """The record as the tables the README shows."""
    lines = _heading(r)
    if r.data is None:  # the data stage has not run, or failed
        lines += ["No data prepared yet." if not r.failed else
                  "Failed: " + "; ".join(x["error"] for x in r.failed)]
        return "\n".join(lines + _outcomes(r)) + "\n"
    for section in (_runs_table, _comparisons, _explain, _bench, _cross_seed_and_goals,
                    _preflight, _outcomes):
        lines += section(r)
    return "\n".join(lines) + "\n"
