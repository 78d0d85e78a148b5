// The Node peer: what a user writes with the official SDK
// (@larksuiteoapi/node-sdk) and kafkajs. The SDK decrypts and verifies
// (encrypt key and token set); the handler answers after the send resolves
// (acks: -1). No deduplication: the SDK has none.
//
// Idempotence is off: kafkajs 2.2.4 sends InitProducerId v1, which tansu
// 0.6.0 answers with UNKNOWN_SERVER_ERROR, so an idempotent kafkajs producer
// cannot start against the benchmark's broker. That makes this peer's
// producer do less work than the bridge's (no producer id, no sequence
// numbers); set NODE_IDEMPOTENT=1 against a broker that supports it
// (tests/bench/run.sh does on Apache Kafka).
//
// Against the SASL_SSL cluster (run.sh --kafka cluster) it connects as the
// bridge's user: KAFKA_SASL_MECHANISM, KAFKA_SASL_USERNAME,
// KAFKA_SASL_PASSWORD and KAFKA_SSL_CA (the CA's PEM file).
const fs = require('fs');
const http = require('http');
const lark = require('@larksuiteoapi/node-sdk');
const { Kafka, logLevel } = require('kafkajs');

const topic = process.env.KAFKA_TOPIC;
const security = process.env.KAFKA_SASL_USERNAME ? {
  ssl: { ca: [fs.readFileSync(process.env.KAFKA_SSL_CA, 'utf8')] },
  sasl: {
    mechanism: process.env.KAFKA_SASL_MECHANISM.toLowerCase(),
    username: process.env.KAFKA_SASL_USERNAME,
    password: process.env.KAFKA_SASL_PASSWORD,
  },
} : {};
const kafka = new Kafka({ clientId: 'node-peer', brokers: process.env.KAFKA_BROKERS.split(','), logLevel: logLevel.ERROR, ...security });
const idempotent = process.env.NODE_IDEMPOTENT === '1';
const producer = kafka.producer(idempotent ? { idempotent: true, maxInFlightRequests: 1 } : {});

const dispatcher = new lark.EventDispatcher({
  encryptKey: process.env.FEISHU_ENCRYPT_KEY,
  verificationToken: process.env.FEISHU_VERIFICATION_TOKEN,
  loggerLevel: lark.LoggerLevel.error,
}).register({
  'im.chat.member.user.withdrawn_v1': async (data) => {
    await producer.send({ topic, acks: -1, messages: [{ key: data.chat_id, value: JSON.stringify(data) }] });
    return 'success';
  },
});

(async () => {
  await producer.connect();
  http.createServer(lark.adaptDefault('/webhook/event', dispatcher, { autoChallenge: true }))
    .listen(Number(process.env.PORT), '127.0.0.1');
})();
