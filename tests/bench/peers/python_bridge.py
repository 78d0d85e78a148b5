"""The Python peer: what a user writes with the official SDK (lark-oapi) and
confluent-kafka. The SDK decrypts and verifies (encrypt key and token set);
the handler answers only after Kafka's delivery report (acks=all,
idempotent), so the guarantees match the bridge's except deduplication,
which the SDK does not offer. Run: gunicorn -w <cores> python_bridge:app"""
import os
import threading

import lark_oapi as lark
from confluent_kafka import Producer
from flask import Flask
from lark_oapi.adapter.flask import parse_req, parse_resp

TOPIC = os.environ["KAFKA_TOPIC"]
_producer = None
_lock = threading.Lock()


def producer():
    # One producer per gunicorn worker, created after the fork.
    global _producer
    with _lock:
        if _producer is None:
            settings = {
                "bootstrap.servers": os.environ["KAFKA_BROKERS"],
                "enable.idempotence": True,
                "acks": "all",
                "linger.ms": 5,
                "compression.type": "lz4",
            }
            # The SASL_SSL cluster (run.sh --kafka cluster): the bridge's user.
            if os.environ.get("KAFKA_SASL_USERNAME"):
                settings.update({
                    "security.protocol": "SASL_SSL",
                    "sasl.mechanism": os.environ["KAFKA_SASL_MECHANISM"],
                    "sasl.username": os.environ["KAFKA_SASL_USERNAME"],
                    "sasl.password": os.environ["KAFKA_SASL_PASSWORD"],
                    "ssl.ca.location": os.environ["KAFKA_SSL_CA"],
                })
            _producer = Producer(settings)
        return _producer


def on_withdrawn(data: lark.im.v1.P2ImChatMemberUserWithdrawnV1) -> None:
    p = producer()
    done = threading.Event()
    errors = []

    def delivered(err, _msg):
        if err is not None:
            errors.append(err)
        done.set()

    p.produce(TOPIC, key=data.event.chat_id, value=lark.JSON.marshal(data), on_delivery=delivered)
    while not done.is_set():
        p.poll(0.01)
    if errors:
        raise RuntimeError(str(errors[0]))


handler = (
    lark.EventDispatcherHandler.builder(os.environ["FEISHU_ENCRYPT_KEY"], os.environ["FEISHU_VERIFICATION_TOKEN"], lark.LogLevel.ERROR)
    .register_p2_im_chat_member_user_withdrawn_v1(on_withdrawn)
    .build()
)

app = Flask(__name__)


@app.route("/webhook/event", methods=["POST"])
def event():
    return parse_resp(handler.do(parse_req()))
