#!/usr/bin/env python3
"""Parse Prometheus text exposition format 0.0.4 with python3-prometheus-client's parser.

    metrics_parse.py [FILE]        (stdin without FILE)

Prints one JSON object: {family: {"type": ..., "help": ..., "samples": [[name, labels, value],
...]}}. The parser names a counter family without its `_total` suffix (irsafs_fetches for
irsafs_fetches_total); sample names keep it. Exits 1 with the parser's error on stderr when the
text does not parse. Tests use parse() directly: `from metrics_parse import parse`.
"""
import json
import math
import sys

from prometheus_client.parser import text_string_to_metric_families


def parse(text):
    """The families of `text`, as a dict (raises ValueError when the text does not parse)."""
    families = {}
    for family in text_string_to_metric_families(text):
        if family.name in families:
            raise ValueError(f"family {family.name} appears twice")
        families[family.name] = {
            "type": family.type,
            "help": family.documentation,
            "samples": [[s.name, dict(s.labels), s.value] for s in family.samples],
        }
    return families


def main(argv):
    try:
        if len(argv) > 1:
            with open(argv[1], encoding="utf-8") as f:
                text = f.read()
        else:
            text = sys.stdin.read()
        families = parse(text)
    except (OSError, ValueError, TypeError, IndexError) as e:
        print(f"Cannot parse the metrics: {e}", file=sys.stderr)
        return 1
    # NaN and infinities are not JSON: write them as the exposition format does.
    def value(v):
        return v if math.isfinite(v) else str(v)
    for fam in families.values():
        fam["samples"] = [[n, l, value(v)] for n, l, v in fam["samples"]]
    json.dump(families, sys.stdout, indent=1, sort_keys=True)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
