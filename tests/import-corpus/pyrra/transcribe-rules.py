#!/usr/bin/env python3
"""Write Pyrra's burn-rate rule group for each corpus SLO that Headroom
imports, into _gen/, as Pyrra's generator (slo/rules.go, Burnrates) writes it.

Why a transcription: Pyrra's Go module is not served by the module proxy
this project can reach, so `pyrra generate` could not be built here. This
script follows slo/rules.go (Windows, Burnrates, commonRuleLabels,
BurnrateName) at the corpus commit line by line, and checks itself against
the expected output of Pyrra's own test (slo/rules_test.go, case
"http-ratio") before writing anything. It reads only the corpus files and
builds no upstream code.

Usage: python3 tests/import-corpus/pyrra/transcribe-rules.py
Needs PyYAML (Debian: python3-yaml).
"""

import os
import re
import sys

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
NS = 1_000_000_000
MINUTE = 60 * NS
UNITS = [("y", 365 * 86400 * 1000, True), ("w", 7 * 86400 * 1000, True),
         ("d", 86400 * 1000, False), ("h", 3600 * 1000, False),
         ("m", 60 * 1000, False), ("s", 1000, False), ("ms", 1, False)]


def parse_duration(text):
    """Prometheus model.ParseDuration, in nanoseconds."""
    total = 0
    for number, unit in re.findall(r"(\d+)(ms|y|w|d|h|m|s)", text):
        ms = dict((u, m) for u, m, _ in UNITS)[unit]
        total += int(number) * ms
    return total * 1_000_000


def fmt(ns):
    """Prometheus model.Duration.String()."""
    ms = ns // 1_000_000
    if ms == 0:
        return "0s"
    out = ""
    for unit, mult, exact in UNITS:
        if exact and ms % mult != 0:
            continue
        v = ms // mult
        if v > 0:
            out += f"{v}{unit}"
            ms -= v * mult
    return out


def go_duration(ns):
    """Go time.Duration.String(), as the `for:` of Pyrra's rules."""
    s = ns // NS
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    if h:
        return f"{h}h{m}m{sec}s"
    if m:
        return f"{m}m{sec}s"
    return f"{sec}s"


def round_minute(ns):
    return (ns + MINUTE // 2) // MINUTE * MINUTE


def windows(slo_window):
    """slo/rules.go Windows: Go integer division, then Round(time.Minute)."""
    w = slo_window
    d = lambda div: round_minute(w // div)  # noqa: E731
    return [
        ("critical", d(28 * 24 * 30), d(28 * 24), d(28 * 24 * 12), 14),
        ("critical", d(28 * 24 * 4), d(28 * 4), d(28 * 24 * 2), 7),
        ("warning", d(28 * 24), d(28), d(28 * 12), 2),
        ("warning", d(28 * 8), d(7), d(28 * 4), 1),
    ]


MATCHER = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"\s*,?')


def selector(text):
    """(name, [(label, op, value)]) of a plain selector."""
    text = text.strip()
    m = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)?\s*(\{(.*)\})?$", text, re.S)
    if not m:
        raise ValueError(f"not a selector: {text}")
    name, body = m.group(1), m.group(3) or ""
    matchers = []
    pos = 0
    while pos < len(body):
        mm = MATCHER.match(body, pos)
        if not mm:
            raise ValueError(f"cannot read matchers of {text}")
        matchers.append((mm.group(1), mm.group(2), mm.group(3)))
        pos = mm.end()
    return name, matchers


def burnrate_name(metric, window):
    for suffix in ("_total", "_count"):
        if metric.endswith(suffix):
            metric = metric[: -len(suffix)]
    return f"{metric}:burnrate{fmt(window)}"


def burnrates(slo):
    """The rule group Pyrra's Burnrates writes for an ungrouped SLO."""
    meta, spec = slo["metadata"], slo["spec"]
    name = meta["name"]
    target = float(str(spec["target"])) / 100
    window = parse_duration(spec["window"])
    ind = spec["indicator"]
    alerting = spec.get("alerting") or {}
    if "ratio" in ind:
        kind, total_text = "ratio", ind["ratio"]["total"]["metric"]
        other_text = ind["ratio"]["errors"]["metric"]
    elif "latency" in ind:
        kind, total_text = "latency", ind["latency"]["total"]["metric"]
        other_text = ind["latency"]["success"]["metric"]
    elif "bool_gauge" in ind:
        kind, total_text = "bool_gauge", ind["bool_gauge"]["metric"]
        other_text = total_text
    else:
        raise ValueError(f"{name}: no transcribed indicator")
    total_name, total_matchers = selector(total_text)

    labels = {"slo": name}
    for k, v in (meta.get("labels") or {}).items():
        if k.startswith("pyrra.dev/"):
            labels[k[len("pyrra.dev/"):]] = str(v)
    rule_labels = dict(labels)
    for lname, op, value in total_matchers:
        if op == "=" and lname != "__name__":
            rule_labels[lname] = value

    ws = windows(window)
    rates = sorted({w for _, _, long, short, _ in ws for w in (long, short)})
    rules = []
    for w in rates:
        r = fmt(w)
        if kind == "ratio":
            expr = f"sum(rate({other_text.strip()}[{r}])) / sum(rate({total_text.strip()}[{r}]))"
        elif kind == "latency":
            expr = (f"(sum(rate({total_text.strip()}[{r}])) - sum(rate({other_text.strip()}[{r}])))"
                    f" / sum(rate({total_text.strip()}[{r}]))")
        else:
            expr = (f"(sum(count_over_time({total_text.strip()}[{r}])) - sum(sum_over_time({total_text.strip()}[{r}])))"
                    f" / sum(count_over_time({total_text.strip()}[{r}]))")
        rules.append({"record": burnrate_name(total_name, w), "expr": expr, "labels": dict(rule_labels)})

    if not (alerting.get("disabled") is True or alerting.get("burnrates") is False):
        alert_matchers = sorted(
            [f'{n}{op}"{v}"' for n, op, v in total_matchers
             if n != "__name__" and op not in ("=~", "!~")] + [f'slo="{name}"'])
        sel = ",".join(alert_matchers)
        severities = alerting.get("severities") or {}
        keys = ["fastBurn", "mediumBurn", "slowBurn", "longTermBurn"]
        t = repr(target)
        for i, (sev, for_, long, short, factor) in enumerate(ws):
            alert_labels = dict(labels)
            for n, op, v in total_matchers:
                if op == "=" and n != "__name__":
                    alert_labels[n] = v
            alert_labels["short"] = fmt(short)
            alert_labels["long"] = fmt(long)
            alert_labels["severity"] = severities.get(keys[i]) or sev
            alert_labels["exhaustion"] = fmt(int(window / NS / factor) * NS)
            rules.append({
                "alert": alerting.get("name") or "ErrorBudgetBurn",
                "expr": (f"{burnrate_name(total_name, short)}{{{sel}}} > ({factor} * (1-{t})) and "
                         f"{burnrate_name(total_name, long)}{{{sel}}} > ({factor} * (1-{t}))"),
                "for": go_duration(for_),
                "labels": alert_labels,
            })
    return {"name": name, "interval": "30s", "rules": rules}


def self_check():
    """slo/rules_test.go, TestObjective_Burnrates, case "http-ratio"."""
    slo = {"metadata": {"name": "monitoring-http-errors"},
           "spec": {"target": "99", "window": "28d", "indicator": {"ratio": {
               "errors": {"metric": 'http_requests_total{job="thanos-receive-default",code=~"5.."}'},
               "total": {"metric": 'http_requests_total{job="thanos-receive-default"}'}}}}}
    g = burnrates(slo)
    records = [r["record"] for r in g["rules"] if "record" in r]
    assert records == [f"http_requests:burnrate{w}" for w in
                       ["5m", "30m", "1h", "2h", "6h", "1d", "4d"]], records
    alerts = [r for r in g["rules"] if "alert" in r]
    sel = 'job="thanos-receive-default",slo="monitoring-http-errors"'
    want = [("2m0s", "5m", "1h", 14, "critical", "2d"), ("15m0s", "30m", "6h", 7, "critical", "4d"),
            ("1h0m0s", "2h", "1d", 2, "warning", "2w"), ("3h0m0s", "6h", "4d", 1, "warning", "4w")]
    for a, (for_, short, long, f, sev, exh) in zip(alerts, want):
        assert a["for"] == for_, a
        assert a["expr"] == (f"http_requests:burnrate{short}{{{sel}}} > ({f} * (1-0.99)) and "
                             f"http_requests:burnrate{long}{{{sel}}} > ({f} * (1-0.99))"), a["expr"]
        assert a["labels"] == {"severity": sev, "job": "thanos-receive-default", "long": long,
                               "slo": "monitoring-http-errors", "short": short, "exhaustion": exh}, a


def main(files):
    self_check()
    out_dir = os.path.join(HERE, "_gen")
    os.makedirs(out_dir, exist_ok=True)
    for rel in files:
        with open(os.path.join(HERE, rel)) as f:
            docs = [d for d in yaml.safe_load_all(f) if d]
        groups = [burnrates(d) for d in docs]
        target = os.path.join(out_dir, rel.replace("/", "__"))
        with open(target, "w") as f:
            f.write("# Pyrra's burn-rate rules for ../" + rel + ", transcribed from\n"
                    "# slo/rules.go (Burnrates) by transcribe-rules.py; see ../README.md.\n")
            yaml.safe_dump({"groups": groups}, f, sort_keys=False, width=1000)
        print("wrote", os.path.relpath(target, HERE))


if __name__ == "__main__":
    main(sys.argv[1:])
