#!/usr/bin/env python3
"""Test vectors for the long connection's frame format (pbbp2.Frame).

Encoded with the official Python SDK's own generated protobuf module
(`lark_oapi.ws.pb.pbbp2_pb2`), not with the Rust code under test.
`pbbp2_gen.py --check` regenerates and compares with the committed file,
which src/longconn/frame.rs's unit tests read.
"""
import json
import os
import sys

from lark_oapi.ws.pb.pbbp2_pb2 import Frame

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "pbbp2.json")


def frame(name, seq, log, service, method, headers, payload=None):
    f = Frame()
    f.SeqID, f.LogID, f.service, f.method = seq, log, service, method
    for k, v in headers:
        h = f.headers.add()
        h.key, h.value = k, v
    if payload is not None:
        f.payload = payload
    return {"name": name, "SeqID": seq, "LogID": log, "service": service, "method": method,
            "headers": [list(h) for h in headers],
            "payload_hex": payload.hex() if payload is not None else None,
            "hex": f.SerializeToString().hex()}


def vectors():
    event = json.dumps({"schema": "2.0", "header": {"event_id": "e1", "event_type": "im.chat.member.user.withdrawn_v1"},
                        "event": {"chat_id": "oc_1"}}, separators=(",", ":")).encode()
    return {"generator": "lark_oapi.ws.pb.pbbp2_pb2 (lark-oapi 1.7.5)", "frames": [
        # What the SDK's NewPingFrame sends.
        frame("ping", 0, 0, 33554678, 0, [("type", "ping")]),
        frame("pong with config", 0, 0, 33554678, 0, [("type", "pong")],
              b'{"PingInterval":90,"ReconnectCount":-1,"ReconnectInterval":60,"ReconnectNonce":10}'),
        frame("event", 123456789012, 987654321098, 33554678, 1,
              [("type", "event"), ("message_id", "msg_1"), ("sum", "1"), ("seq", "0"), ("trace_id", "trace-1"),
               ("timestamp", "1700000000000")], event),
        frame("fragment 2 of 3", 5, 6, 7, 1,
              [("type", "event"), ("message_id", "msg_2"), ("sum", "3"), ("seq", "1"), ("trace_id", "t")], event[10:20]),
        frame("ack", 123456789012, 987654321098, 33554678, 1,
              [("type", "event"), ("message_id", "msg_1"), ("sum", "1"), ("seq", "0"), ("trace_id", "trace-1"),
               ("timestamp", "1700000000000"), ("biz_rt", "12")], b'{"code":200}'),
        frame("card", 1, 2, 3, 1, [("type", "card"), ("message_id", "c1"), ("sum", "1"), ("seq", "0")], b"{}"),
    ]}


def main():
    text = json.dumps(vectors(), indent=1, ensure_ascii=False) + "\n"
    if "--check" in sys.argv:
        with open(OUT) as f:
            if f.read() != text:
                sys.exit("tests/vectors/pbbp2.json differs from what pbbp2_gen.py produces")
        print("pbbp2 frame vectors: up to date")
        return
    with open(OUT, "w") as f:
        f.write(text)


if __name__ == "__main__":
    main()
