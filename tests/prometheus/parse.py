"""Parses Prometheus text exposition (stdin) with the official `prometheus_client` parser and
prints its families as JSON: [{"name", "type", "samples": [{"name", "labels", "value"}]}].
Used by tests/api/metrics.rs; a parse error exits non-zero with the parser's message."""

import json
import sys

from prometheus_client.parser import text_string_to_metric_families

families = []
for family in text_string_to_metric_families(sys.stdin.read()):
    families.append(
        {
            "name": family.name,
            "type": family.type,
            "samples": [{"name": s.name, "labels": dict(s.labels), "value": s.value} for s in family.samples],
        }
    )
print(json.dumps(families))
