"""Reads Kafka records in CloudEvents binary content mode with the official
Python SDK (cloudevents.core.bindings.kafka), independently of the bridge.

stdin: one JSON object per line, {"key": str|null, "headers": {name: str},
"value": str}. stdout: one JSON object per line with the event's attributes
(time as RFC 3339) and its data, or {"error": "..."} when the SDK refuses it.
"""
import json
import sys

from cloudevents.core.bindings.kafka import KafkaMessage, from_binary
from cloudevents.core.formats.json import JSONFormat

for line in sys.stdin:
    raw = json.loads(line)
    message = KafkaMessage(
        headers={k: v.encode() for k, v in raw["headers"].items()},
        key=None if raw["key"] is None else raw["key"].encode(),
        value=raw["value"].encode(),
    )
    try:
        event = from_binary(message, JSONFormat())
    except Exception as e:  # the test prints what the SDK objected to
        print(json.dumps({"error": f"{type(e).__name__}: {e}"}), flush=True)
        continue
    attributes = {
        k: (v.isoformat() if hasattr(v, "isoformat") else v)
        for k, v in event.get_attributes().items()
    }
    print(json.dumps({"attributes": attributes, "data": event.get_data()}), flush=True)
