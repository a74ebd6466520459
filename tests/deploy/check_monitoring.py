#!/usr/bin/python3
"""Checks rnnserve's shipped monitoring files (issue 5 §6, §7).

    /usr/bin/python3 tests/deploy/check_monitoring.py [--promtool PATH] [--root DIR]

  * promtool check config deploy/prometheus/prometheus.yml
  * promtool check rules  deploy/prometheus/rnnserve-alerts.yml
  * promtool test rules   deploy/prometheus/rnnserve-alerts.test.yml
    (synthetic series: drift, clipping, error-rate, queue, latency, ... alerts
    fire and do not fire as intended)
  * the rules: every alert has `for:`, a severity label and summary and
    description annotations
  * deploy/grafana/rnnserve-dashboard.json: parses, unique panel ids, panels
    laid out on the 24-column grid without overlaps, the `datasource` and
    `model` template variables, every query PromQL that promtool accepts
  * every PromQL expression (dashboard and rules) uses only the metric names
    the server exports (METRICS below) plus the recording rules defined in the
    rules file (rules may also use Prometheus's own `up`), and every exported
    metric appears in at least one panel or rule.

Exits 0 when all pass; otherwise prints every failure and exits 1.
Needs PyYAML (Debian python3-yaml) and promtool (Debian prometheus).
"""

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

try:
    import yaml
except ImportError:  # pragma: no cover
    print("FAIL: PyYAML is missing (apt-get install python3-yaml)")
    sys.exit(1)

# The metric families rnnserve exports (server/metrics/server_metrics.h,
# SPEC §5): name -> Prometheus type. Keep in sync with the server.
METRICS = {
    # Serving
    "rnnserve_build_info": "gauge",
    "rnnserve_requests_total": "counter",
    "rnnserve_request_duration_seconds": "histogram",
    "rnnserve_queue_duration_seconds": "histogram",
    "rnnserve_compute_duration_seconds": "histogram",
    "rnnserve_batch_size": "histogram",
    "rnnserve_queue_depth": "gauge",
    "rnnserve_queue_capacity": "gauge",
    "rnnserve_live_sequences": "gauge",
    "rnnserve_live_sequences_capacity": "gauge",
    "rnnserve_model_ready": "gauge",
    "rnnserve_model_load_duration_seconds": "gauge",
    "rnnserve_model_weights_bytes": "gauge",
    # Accuracy drift
    "rnnserve_drift_samples_total": "counter",
    "rnnserve_drift_shed_total": "counter",
    "rnnserve_drift_max_abs_error": "histogram",
    "rnnserve_drift_mean_abs_error": "histogram",
    "rnnserve_drift_relative_l2": "histogram",
    "rnnserve_drift_kl_divergence": "histogram",
    "rnnserve_drift_top1_agreement_ratio": "gauge",
    "rnnserve_drift_window": "gauge",
    "rnnserve_drift_triggered": "gauge",
    # Calibration drift
    "rnnserve_calibration_values_total": "counter",
    "rnnserve_calibration_clipped_values_total": "counter",
    "rnnserve_calibration_clip_fraction": "gauge",
    "rnnserve_calibration_absmax": "gauge",
    # Actions
    "rnnserve_model_precision": "gauge",
    "rnnserve_precision_switches_total": "counter",
    "rnnserve_recalibrations_total": "counter",
    "rnnserve_reservoir_sequences": "gauge",
}
# Series Prometheus makes itself; allowed in rules only.
PROMETHEUS_SERIES = {"up"}
SEVERITIES = {"critical", "warning", "info"}

PROMQL_KEYWORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "bool",
    "and", "or", "unless", "offset", "inf", "nan", "start", "end",
}

# Grafana's variables, replaced before promtool parses a dashboard query.
GRAFANA_VARS = [
    (re.compile(r"\$__rate_interval\b|\$\{__rate_interval\}"), "5m"),
    (re.compile(r"\$__interval\b|\$\{__interval\}"), "1m"),
    (re.compile(r"\$__range\b|\$\{__range\}"), "1h"),
    (re.compile(r"\$\{?[A-Za-z_][A-Za-z0-9_]*(?::[a-z]+)?\}?"), ".*"),
]


class Checker:
    def __init__(self):
        self.failures = []

    def fail(self, msg):
        self.failures.append(msg)
        print("FAIL:", msg)

    def ok(self, msg):
        print("ok:", msg)


def series_names(expr):
    """Metric names a PromQL expression selects (recording rule names too)."""
    s = re.sub(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'|`[^`]*`', '""', expr)
    s = re.sub(r"\{[^{}]*\}", " ", s)          # label matchers
    s = re.sub(r"\[[^\[\]]*\]", " ", s)        # ranges, subqueries
    s = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)",
               " ", s)                          # grouping label lists
    s = re.sub(r"\$\{?[A-Za-z_][A-Za-z0-9_]*\}?", " ", s)
    names = set()
    for m in re.finditer(r"(?<![\w.:$])[A-Za-z_:][A-Za-z0-9_:]*", s):
        word = m.group(0)
        rest = s[m.end():]
        if re.match(r"\s*\(", rest):           # function or aggregation
            continue
        if word.lower() in PROMQL_KEYWORDS:
            continue
        names.add(word)
    return names


def base_metric(name):
    """rnnserve_x_bucket/_sum/_count of a histogram -> rnnserve_x."""
    for suffix in ("_bucket", "_sum", "_count"):
        if name.endswith(suffix):
            base = name[: -len(suffix)]
            if METRICS.get(base) == "histogram":
                return base
    return name


def run(cmd, cwd):
    p = subprocess.run(cmd, cwd=cwd, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, text=True)
    return p.returncode, p.stdout


def check_promtool(c, promtool, root, prom_dir):
    for args, what in (
        (["check", "config", os.path.join(prom_dir, "prometheus.yml")], "check config"),
        (["check", "rules", os.path.join(prom_dir, "rnnserve-alerts.yml")], "check rules"),
        (["test", "rules", os.path.join(prom_dir, "rnnserve-alerts.test.yml")], "test rules"),
    ):
        rc, out = run([promtool] + args, root)
        if rc != 0:
            c.fail(f"promtool {what} failed (exit {rc}):\n{out.rstrip()}")
        else:
            c.ok(f"promtool {what}")


def check_rules_file(c, path):
    """Returns (recording rule names, [(where, expr)])."""
    with open(path) as f:
        doc = yaml.safe_load(f)
    records, exprs, alerts = set(), [], set()
    for group in doc.get("groups", []):
        for rule in group.get("rules", []):
            expr = str(rule.get("expr", ""))
            if "record" in rule:
                records.add(rule["record"])
                exprs.append((f"recording rule {rule['record']}", expr))
                continue
            name = rule.get("alert", "?")
            where = f"alert {name}"
            exprs.append((where, expr))
            if name in alerts:
                c.fail(f"{where}: defined twice")
            alerts.add(name)
            if not rule.get("for"):
                c.fail(f"{where}: no `for:` duration")
            sev = (rule.get("labels") or {}).get("severity")
            if sev not in SEVERITIES:
                c.fail(f"{where}: severity label {sev!r} not one of {sorted(SEVERITIES)}")
            ann = rule.get("annotations") or {}
            for key in ("summary", "description"):
                if not str(ann.get(key, "")).strip():
                    c.fail(f"{where}: no {key} annotation")
            if "$labels" not in str(ann.get("summary", "")) + str(ann.get("description", "")):
                c.fail(f"{where}: annotations do not use $labels")
    if not alerts:
        c.fail(f"{path}: no alerts")
    c.ok(f"rules file: {len(alerts)} alerts, {len(records)} recording rules")
    return records, exprs


def all_panels(panels):
    for p in panels:
        yield p
        yield from all_panels(p.get("panels") or [])


def check_layout(c, panels, where):
    """No overlaps among `panels` (one level), all within 24 columns."""
    cells = {}
    for p in panels:
        gp = p.get("gridPos")
        title = p.get("title", "?")
        if not isinstance(gp, dict) or not all(isinstance(gp.get(k), int) for k in "hwxy"):
            c.fail(f"panel {p.get('id')} {title!r}: gridPos needs integer h, w, x, y")
            continue
        if gp["w"] < 1 or gp["h"] < 1 or gp["x"] < 0 or gp["y"] < 0 or gp["x"] + gp["w"] > 24:
            c.fail(f"panel {p.get('id')} {title!r}: gridPos {gp} outside the 24-column grid")
            continue
        for x in range(gp["x"], gp["x"] + gp["w"]):
            for y in range(gp["y"], gp["y"] + gp["h"]):
                other = cells.get((x, y))
                if other is not None:
                    c.fail(f"{where}: panel {p.get('id')} {title!r} overlaps panel {other} at x={x} y={y}")
                    break
                cells[(x, y)] = p.get("id")
            else:
                continue
            break


def check_dashboard(c, path):
    """Returns [(where, expr, is_promql)]."""
    try:
        with open(path) as f:
            d = json.load(f)
    except (OSError, ValueError) as e:
        c.fail(f"{path}: not valid JSON: {e}")
        return []
    exprs = []
    if not isinstance(d.get("schemaVersion"), int) or d["schemaVersion"] < 36:
        c.fail(f"dashboard schemaVersion {d.get('schemaVersion')!r}: expected >= 36")
    if not d.get("uid") or not d.get("title"):
        c.fail("dashboard needs a uid and a title")

    variables = {v.get("name"): v for v in (d.get("templating") or {}).get("list", [])}
    ds = variables.get("datasource")
    if not ds or ds.get("type") != "datasource" or ds.get("query") != "prometheus":
        c.fail("dashboard needs a `datasource` variable of type datasource, query prometheus")
    mv = variables.get("model")
    if not mv or mv.get("type") != "query":
        c.fail("dashboard needs a `model` query variable")
    else:
        q = mv.get("query")
        q = q.get("query") if isinstance(q, dict) else q
        if not re.fullmatch(r"label_values\(\s*rnnserve_requests_total\s*,\s*model\s*\)", str(q).strip()):
            c.fail(f"model variable query {q!r}: expected label_values(rnnserve_requests_total, model)")
        else:
            exprs.append(("variable model", "rnnserve_requests_total", False))

    panels = d.get("panels") or []
    ids = {}
    for p in all_panels(panels):
        pid = p.get("id")
        if not isinstance(pid, int):
            c.fail(f"panel {p.get('title')!r}: id {pid!r} is not an integer")
        elif pid in ids:
            c.fail(f"panel id {pid} used by {ids[pid]!r} and {p.get('title')!r}")
        else:
            ids[pid] = p.get("title")
    check_layout(c, panels, "dashboard")
    for p in panels:
        if p.get("type") == "row" and p.get("panels"):
            check_layout(c, p["panels"], f"collapsed row {p.get('title')!r}")

    for p in all_panels(panels):
        if p.get("type") == "row":
            continue
        title = p.get("title", "?")
        targets = p.get("targets") or []
        if not targets:
            c.fail(f"panel {p.get('id')} {title!r}: no queries")
        pds = p.get("datasource") or {}
        if pds.get("uid") != "${datasource}":
            c.fail(f"panel {p.get('id')} {title!r}: datasource is not ${{datasource}}")
        for t in targets:
            expr = t.get("expr", "")
            if not expr.strip():
                c.fail(f"panel {p.get('id')} {title!r} query {t.get('refId')}: empty expr")
                continue
            if "$model" not in expr and "${model" not in expr and "rnnserve_build_info" not in expr:
                c.fail(f"panel {p.get('id')} {title!r} query {t.get('refId')}: ignores $model")
            exprs.append((f"panel {p.get('id')} {title!r} query {t.get('refId')}", expr, True))
    for a in (d.get("annotations") or {}).get("list", []):
        if a.get("expr"):
            exprs.append((f"annotation {a.get('name')!r}", a["expr"], True))
    c.ok(f"dashboard: {len(ids)} panels, {sum(1 for e in exprs if e[2])} queries")
    return exprs


def check_dashboard_promql(c, promtool, root, exprs):
    """promtool parses every dashboard query (Grafana variables replaced)."""
    rules = []
    for i, (where, expr, is_promql) in enumerate(exprs):
        if not is_promql:
            continue
        e = expr
        for pattern, value in GRAFANA_VARS:
            e = pattern.sub(value, e)
        rules.append({"record": f"dashboard:query_{i}", "expr": e, "_where": where})
    doc = {"groups": [{"name": "dashboard", "rules": [
        {k: v for k, v in r.items() if k != "_where"} for r in rules]}]}
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "dashboard-queries.yml")
        with open(path, "w") as f:
            yaml.safe_dump(doc, f, sort_keys=False)
        rc, out = run([promtool, "check", "rules", path], root)
    if rc != 0:
        for r in rules:
            if f'"{r["record"]}"' in out:
                c.fail(f"{r['_where']}: promtool rejects {r['expr']!r}")
        c.fail(f"dashboard queries do not all parse as PromQL:\n{out.rstrip()}")
    else:
        c.ok(f"promtool parses all {len(rules)} dashboard queries")


def check_metric_names(c, rule_exprs, records, dash_exprs):
    used = set()
    for where, expr in rule_exprs:
        for n in series_names(expr):
            b = base_metric(n)
            if b in METRICS or n in records or n in PROMETHEUS_SERIES:
                used.add(b)
            else:
                c.fail(f"{where}: unknown metric {n!r} in {expr.strip()!r}")
    for where, expr, _ in dash_exprs:
        for n in series_names(expr):
            b = base_metric(n)
            if b in METRICS or n in records:
                used.add(b)
            else:
                c.fail(f"{where}: unknown metric {n!r} in {expr!r}")
    # Recording rules count as uses of the metrics they read.
    missing = sorted(set(METRICS) - used)
    for m in missing:
        c.fail(f"metric {m} appears in no dashboard panel and no rule")
    unused_records = sorted(r for r in records
                            if not any(r in series_names(e) for _, e, _ in dash_exprs)
                            and not any(r in series_names(e) for _, e in rule_exprs))
    for r in unused_records:
        c.fail(f"recording rule {r} is used by no panel or rule")
    if not missing:
        c.ok(f"all {len(METRICS)} exported metrics are used; no unknown names")


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--root", default=os.path.normpath(os.path.join(here, "..", "..")),
                    help="repository root (default: two folders up)")
    ap.add_argument("--promtool", default=os.environ.get("PROMTOOL") or shutil.which("promtool")
                    or "/usr/bin/promtool")
    args = ap.parse_args()

    c = Checker()
    root = args.root
    prom_dir = os.path.join("deploy", "prometheus")
    rules_path = os.path.join(root, prom_dir, "rnnserve-alerts.yml")
    dash_path = os.path.join(root, "deploy", "grafana", "rnnserve-dashboard.json")

    have_promtool = os.access(args.promtool, os.X_OK)
    if not have_promtool:
        c.fail(f"promtool not found at {args.promtool} (Debian package prometheus)")
    else:
        rc, out = run([args.promtool, "--version"], root)
        print(out.splitlines()[0] if out else "promtool: no version")
        check_promtool(c, args.promtool, root, prom_dir)

    records, rule_exprs = set(), []
    try:
        records, rule_exprs = check_rules_file(c, rules_path)
    except (OSError, yaml.YAMLError) as e:
        c.fail(f"{rules_path}: {e}")
    dash_exprs = check_dashboard(c, dash_path)
    if have_promtool and dash_exprs:
        check_dashboard_promql(c, args.promtool, root, dash_exprs)
    check_metric_names(c, rule_exprs, records, dash_exprs)

    if c.failures:
        print(f"\n{len(c.failures)} check(s) failed")
        return 1
    print("\nall monitoring checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
