#!/usr/bin/env python3
"""Parses Prometheus text (exposition format 0.0.4) with the reference parser,
Python's prometheus_client, and checks what it holds.

Usage: check_prometheus.py FILE|- [CHECK...]
  FAMILY:TYPE              a family of that type exists (counter, gauge, histogram)
  SAMPLE{l1=v1,l2=v2}==X   that sample exists with value X (labels optional)
  SAMPLE{...}>=X           ... with a value of at least X
Exit 0: parsed and every check holds; 1: a check failed or the text did not
parse (the parser's message is printed); 77: prometheus_client is missing
(Debian: python3-prometheus-client, installed by scripts/install-deps.sh).
"""
import codecs
import os
import re
import sys

try:
    from prometheus_client.parser import text_string_to_metric_families
except ImportError:
    # A python3 ahead of Debian's on PATH (pyenv, a venv) lacks Debian's
    # packages: try Debian's own interpreter once.
    if not os.environ.get("FEDGE_PROM_REEXEC") and os.path.exists("/usr/bin/python3") \
            and os.path.realpath(sys.executable) != os.path.realpath("/usr/bin/python3"):
        os.environ["FEDGE_PROM_REEXEC"] = "1"
        os.execv("/usr/bin/python3", ["/usr/bin/python3"] + sys.argv)
    print("SKIP: prometheus_client is not installed (apt-get install python3-prometheus-client)")
    sys.exit(77)

CHECK = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?(==|>=)(.+)$")


def main():
    if len(sys.argv) < 2:
        print(__doc__)
        return 2
    text = sys.stdin.read() if sys.argv[1] == "-" else open(sys.argv[1], encoding="utf-8").read()
    try:
        families = list(text_string_to_metric_families(text))
    except Exception as e:  # the parser raises ValueError and friends
        print(f"FAIL: the text does not parse: {type(e).__name__}: {e}")
        return 1
    samples = [s for f in families for s in f.samples]
    types = {f.name: f.type for f in families}
    print(f"parsed {len(families)} families, {len(samples)} samples")
    failed = 0
    for check in sys.argv[2:]:
        m = CHECK.match(check)
        if m is None:
            family, _, kind = check.partition(":")
            # prometheus_client names a counter's family without "_total".
            got = types.get(family, types.get(family.removesuffix("_total")))
            if got != kind:
                print(f"FAIL: family {family} is {got}, expected {kind}")
                failed += 1
            continue
        name, labels, op, want = m.group(1), m.group(2), m.group(3), float(m.group(4))
        wanted_labels = dict(kv.split("=", 1) for kv in labels.split(",")) if labels else {}
        wanted_labels = {k: codecs.decode(v, "unicode_escape") for k, v in wanted_labels.items()}
        found = [s for s in samples if s.name == name and all(s.labels.get(k) == v for k, v in wanted_labels.items())]
        if not found:
            print(f"FAIL: no sample {name}{wanted_labels}")
            failed += 1
        elif not any((s.value == want) if op == "==" else (s.value >= want) for s in found):
            print(f"FAIL: {name}{wanted_labels} is {[s.value for s in found]}, expected {op} {want}")
            failed += 1
    print("ok" if failed == 0 else f"{failed} checks failed")
    return 1 if failed else 0


sys.exit(main())
