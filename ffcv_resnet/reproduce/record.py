"""The reproduce record: statistics over seeds, cross-seed errors, goals with their margins,
and the markdown table the README shows (generated, never copied by hand)."""
from __future__ import annotations

import statistics
from pathlib import Path

from ..io import atomic_write_bytes
from ..records import write_json
from ..device import slug

# on one H100: 20 epochs of training; every CAM method and faithfulness score of every error
GOALS = {"train_seconds": 12.0, "explain_seconds": 2.0}


CACHE = {"cold": "(cold cache)", "warm": "(warm cache)", "shared": "(cache of other shapes)",
         "off": "(no compile)"}


def stats(values: list[float]) -> dict:
    """n, mean, standard deviation (0 for one value), min and max."""
    return {"n": len(values), "mean": statistics.fmean(values),
            "sd": statistics.stdev(values) if len(values) > 1 else 0.0,
            "min": min(values), "max": max(values)}


def summary(seeds: list[dict]) -> dict:
    """Statistics over the seeds; warm-up and first-step seconds apart for the runs whose
    compile found the cache cold, warm, or did not compile (never averaged together)."""
    if not seeds:
        return {}
    out = {k: stats([s[k] for s in seeds]) for k in (
        "test_accuracy", "train_seconds", "images_per_second")}
    for cache in CACHE:
        group = [s for s in seeds if s["compile_cache"] == cache]
        for k in ("compile_seconds", "startup_seconds") if group else ():
            out[f"{k}_{cache}"] = stats([s[k] for s in group])
    return out


def cross_seed(errors: dict[int, list[int]]) -> dict:
    """Test images every seed gets wrong, and those only some seeds do."""
    sets = [set(v) for v in errors.values()]
    always = set.intersection(*sets) if sets else set()
    return {"seeds": sorted(errors), "always_wrong": sorted(always),
            "sometimes_wrong": sorted(set.union(*sets) - always) if sets else []}


def goals(record: dict) -> dict:
    """Each goal with its target, what was measured and by how much it was met or missed."""
    out = {}
    seeds, cal = record["summary"], record.get("calibration")
    if seeds and cal:
        out["accuracy_vs_calibration"] = {
            "target": cal["test_accuracy"], "measured": seeds["test_accuracy"]["mean"],
            "margin": seeds["test_accuracy"]["mean"] - cal["test_accuracy"]}
    if seeds and record["device_type"] == "cuda":
        out["train_seconds_20_epochs"] = {
            "target": GOALS["train_seconds"], "measured": seeds["train_seconds"]["mean"],
            "margin": GOALS["train_seconds"] - seeds["train_seconds"]["mean"],
            "note": "the goal is for one H100"}
    if record.get("explain"):
        e = record["explain"]
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


def write_record(record: dict, results: Path) -> tuple[Path, Path]:
    """reproduce-<device>.json and its markdown table in `results`."""
    results.mkdir(parents=True, exist_ok=True)
    name = f"reproduce-{'smoke-' if record['smoke'] else ''}{slug(record)}"
    json_path, md_path = results / f"{name}.json", results / f"{name}.md"
    write_json(json_path, record)
    atomic_write_bytes(md_path, markdown(record).encode())
    return json_path, md_path


def markdown(r: dict) -> str:
    """The record as the tables the README shows."""
    def f(x, pct=False):
        return "-" if x is None else (f"{100 * x:.2f}%" if pct else f"{x:.2f}")

    s = r["summary"]
    if "data" not in r:  # the data stage itself failed
        return (f"### {r['device']}, {r['date']}, git {r['git_sha']}\n\nFailed: " +
                "; ".join(x["error"] for x in r.get("failed", [])) + "\n")
    lines = [f"### {r['device']}, torch {r['torch']}{', CUDA ' + r['cuda'] if r['cuda'] else ''}"
             f", {r['date']}, git {r['git_sha']}", "",
             f"Data: {r['data']['source_kind']} ({Path(r['data']['source']).name}), "
             f"{r['data']['counts']['train']:,} train / {r['data']['counts']['test']:,} test"
             f"{' (smoke subsets)' if r['smoke'] else ''}. Command: `{r['command']}`.", "",
             "| run | seeds | test accuracy mean ± sd (min–max) | train s mean | warm-up s "
             "| first step s | img/s mean |", "|---|---|---|---|---|---|---|"]
    if not s and not r.get("calibration"):
        lines = lines[:-2] + ["No run was trained."]
    if s:
        a = s["test_accuracy"]
        lines.append(f"| default recipe, {r['seeds'][0]['epochs']} epochs | {a['n']} | {f(a['mean'], 1)} ± {f(a['sd'], 1)} "
                     f"({f(a['min'], 1)}–{f(a['max'], 1)}) | {f(s['train_seconds']['mean'])} | "
                     f"{by_cache(s, 'compile_seconds')} | {by_cache(s, 'startup_seconds')} | "
                     f"{s['images_per_second']['mean']:,.0f} |")
    c = r.get("calibration")
    if c:
        lines.append(f"| calibration {Path(c['recipe']).name}, {c['epochs']} epochs | 1 | {f(c['test_accuracy'], 1)}"
                     f" | {f(c['train_seconds'])} | {f(c['compile_seconds'])} "
                     f"{CACHE[c.get('compile_cache', 'off')]} | {f(c['startup_seconds'])} | "
                     f"{c['images_per_second']:,.0f} |")
    for a in r.get("ablations") or []:  # one seed-0 run each, beside seed 0
        lines.append(f"| ablation {a['name']} ({Path(a['recipe']).name}), {a['epochs']} epochs | 1 "
                     f"| {f(a['test_accuracy'], 1)} | {f(a['train_seconds'])} | "
                     f"{f(a['compile_seconds'])} {CACHE[a.get('compile_cache', 'off')]} | "
                     f"{f(a['startup_seconds'])} | {a['images_per_second']:,.0f} |")
    for a in r.get("ablations") or []:
        if a.get("vs_seed_0"):
            lines += ["", f"Seed 0 (A) vs ablation {a['name']} (B): {a['vs_seed_0']['summary']}."]
    for name, v in (r.get("vs_calibration") or {}).items():
        if v:
            who = "seed 0" if name == "seed_0" else "the seeds"
            lines += ["", f"Calibration (A) vs {who} (B): {v['summary']}."]
    if r.get("explain"):
        e = r["explain"]
        lines += ["", f"Explaining all {e['errors']} errors of seed 0 (both classes): "
                  f"{e['cams_seconds']:.3f} s for the maps of {len(e['methods'])} methods, "
                  f"{e['scores_seconds']:.3f} s for {len(e['metrics'])} scores of "
                  f"{e['scored']} errors; rendering {e['render_seconds']:.1f} s."]
    if r.get("bench") and r["bench"].get("plan"):
        b = r["bench"]
        ran = [f"{x['suite']} {x['seconds']:.0f} s (estimated {x['estimated_seconds']:.0f})"
               if "seconds" in x else f"{x['suite']} stopped unfinished (estimated "
               f"{x['estimated_seconds']:.0f} s)" for x in b["plan"] if not x["skipped"]]
        skipped = [f"{x['suite']} (needed ~{x['estimated_seconds']:.0f} s)"
                   for x in b["plan"] if x["skipped"]]
        lines += ["", f"Benchmarks within {b['budget_seconds']:.0f} s: "
                  + (", ".join(ran) or "none ran")
                  + (f"; skipped: {', '.join(skipped)}" if skipped else "") + "."]
    cs = r["cross_seed"]
    lines += ["", f"Across seeds {cs['seeds']}: {len(cs['always_wrong'])} test images are always "
              f"wrong, {len(cs['sometimes_wrong'])} only sometimes."]
    if r["goals"]:
        lines += ["", "| goal | target | measured | met | margin |", "|---|---|---|---|---|"]
        for name, g in r["goals"].items():
            lines.append(f"| {name} | {g['target']:.4g} | {g['measured']:.4g} | "
                         f"{'yes' if g['met'] else 'no'} | {g['margin']:+.4g} |")
    pre = r.get("preflight") or []
    if pre:
        failed = "; ".join(f"{c['check']} ({c['error']})" for c in pre if c["ok"] is False)
        skipped = ", ".join(c["check"] for c in pre if c["ok"] is None)
        lines += ["", f"Preflight: {sum(1 for c in pre if c['ok'])} of {len(pre)} checks passed"
                  + (f"; failed: {failed}" if failed else "")
                  + (f"; skipped: {skipped}" if skipped else "") + "."]
    if r.get("compile_off"):
        lines.append(f"\n{r['compile_off']}.")
    for x in r.get("failed") or []:
        lines.append(f"\nFailed {x['stage']}: {x['error']}" + (f" (log `{Path(x['log']).name}`)"
                                                              if x.get("log") else "") + ".")
    for s in r["skipped"]:
        why = s.get("reason") or (f"needed ~{s['estimated_seconds']} s, "
                                  f"{max(s['seconds_left'], 0):.1f} s of the "
                                  f"{r['budget_minutes']}-minute budget left")
        lines.append(f"\nSkipped {s['stage']}: {why}.")
    if r.get("disabled"):
        lines.append(f"\nNot asked for: {', '.join(r['disabled'])}.")
    return "\n".join(lines) + "\n"


BUNDLE_LIMIT = 16 << 20  # what one file of a device call's $OUT may weigh
RUN_FILES = ("config.yaml", "history.jsonl", "metrics.json", "explain.json", "errors.json",
             "report.png")


def bundle(path: Path, record: dict, files: list[Path], out: Path) -> Path:
    """One .tar.gz of the record, its logs and every run's small files (report.png last, left
    out first when the whole would pass 16 MB), written atomically."""
    import io as _io
    import tarfile
    members = [p for p in files if Path(p).is_file()]
    members += sorted(p for p in (out / "logs").glob("*.log"))
    runs = [Path(s["run_dir"]) for s in record.get("seeds", [])]
    if record.get("calibration"):
        runs.append(Path(record["calibration"]["run_dir"]))
    runs += [Path(a["run_dir"]) for a in record.get("ablations", [])]
    for run in runs:
        members += [run / n for n in RUN_FILES if (run / n).is_file()]
    if (out / "always-wrong.png").is_file():
        members.append(out / "always-wrong.png")
    bench = Path(record["bench"]["results"]) if record.get("bench") else None
    if bench is not None:
        members += sorted(p for p in bench.glob(f"*-{slug(record)}.*") if p.suffix in
                          (".json", ".md") and p not in members)

    def pack(chosen: list[Path]) -> bytes:
        buf = _io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w:gz") as tar:
            for p in chosen:
                try:
                    arc = Path(p).resolve().relative_to(out.resolve().parent)
                except ValueError:
                    arc = Path(Path(p).parent.name) / Path(p).name
                tar.add(str(p), arcname=str(arc))
        return buf.getvalue()

    data = pack(members)
    if len(data) > BUNDLE_LIMIT:
        data = pack([p for p in members if p.suffix != ".png"])
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, data)
    return path
