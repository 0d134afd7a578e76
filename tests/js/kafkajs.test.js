// kafkajs 2.2.4 against pinion. Run: node --test tests/js/kafkajs.test.js
'use strict';

const test = require('node:test');
const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const { Kafka, logLevel, CompressionTypes } = require('kafkajs');
const { startBroker } = require('./broker');

let broker;
let kafka;

test.before(async () => {
  broker = await startBroker({ name: 'kafkajs' });
  kafka = new Kafka({
    clientId: 'pinion-tests',
    brokers: [broker.bootstrap],
    logLevel: logLevel.NOTHING,
    retry: { retries: 3 },
  });
});

test.after(async () => {
  if (!broker) return;
  const code = await broker.stop();
  assert.equal(code, 0, `broker exit code after SIGTERM; stderr:\n${broker.stderrTail()}`);
  broker.removeData();
});

const uniqueTopic = (prefix) => `${prefix}-${crypto.randomBytes(5).toString('hex')}`;

async function withAdmin(fn) {
  const admin = kafka.admin();
  await admin.connect();
  try { return await fn(admin); } finally { await admin.disconnect(); }
}

async function createTopic(topic, numPartitions) {
  return withAdmin((admin) => admin.createTopics({
    topics: [{ topic, numPartitions, replicationFactor: 1 }],
    waitForLeaders: true,
  }));
}

// Keyed records with headers; message i goes to partition i % partitions.
function makeMessages(n, partitions, tag) {
  return Array.from({ length: n }, (_, i) => ({
    key: `key-${i}`,
    value: `${tag}-value-${i}-${'x'.repeat(i % 40)}`,
    partition: i % partitions,
    headers: { seq: String(i), tag, bin: Buffer.from([i % 256, 0, 255]) },
  }));
}

test('admin createTopics and metadata', async () => {
  const topic = uniqueTopic('js-admin');
  assert.equal(await createTopic(topic, 4), true);
  await withAdmin(async (admin) => {
    assert.ok((await admin.listTopics()).includes(topic));
    const md = await admin.fetchTopicMetadata({ topics: [topic] });
    const parts = md.topics[0].partitions.map((p) => p.partitionId).sort();
    assert.deepEqual(parts, [0, 1, 2, 3]);
    // A second create of the same topic is refused (createTopics resolves false).
    assert.equal(await admin.createTopics({ topics: [{ topic, numPartitions: 4 }] }), false);
  });
});

test('producer sends keyed records with headers; offsets add up', async () => {
  const topic = uniqueTopic('js-produce');
  const P = 4;
  await createTopic(topic, P);
  const producer = kafka.producer();
  await producer.connect();
  const perPartition = new Array(P).fill(0);
  try {
    for (const [round, compression] of [[0, CompressionTypes.None], [1, CompressionTypes.GZIP],
      [2, CompressionTypes.None]]) {
      const messages = makeMessages(200, P, `r${round}`);
      const results = await producer.send({ topic, acks: -1, compression, messages });
      // One result per partition; each batch starts where the previous one ended.
      assert.equal(results.length, P);
      for (const r of results) {
        assert.equal(r.topicName, topic);
        assert.equal(r.errorCode, 0);
        assert.equal(Number(r.baseOffset), perPartition[r.partition], `partition ${r.partition}`);
      }
      messages.forEach((m) => { perPartition[m.partition] += 1; });
    }
    // Keyed records left to kafkajs's default (murmur2) partitioner.
    const keyed = Array.from({ length: 100 }, (_, i) => ({ key: `k${i}`, value: `v${i}` }));
    await producer.send({ topic, messages: keyed });
  } finally {
    await producer.disconnect();
  }

  await withAdmin(async (admin) => {
    const offsets = await admin.fetchTopicOffsets(topic);
    assert.equal(offsets.length, P);
    let total = 0;
    for (const o of offsets) {
      assert.equal(o.low, '0');
      assert.ok(Number(o.high) >= perPartition[o.partition], `partition ${o.partition}`);
      total += Number(o.high);
    }
    assert.equal(total, 600 + 100);
  });
});

test('admin offset lookup by timestamp', async () => {
  const topic = uniqueTopic('js-time');
  await createTopic(topic, 2);
  const base = Date.now() - 60000;
  const producer = kafka.producer();
  await producer.connect();
  try {
    for (let i = 0; i < 10; i += 1) {
      await producer.send({
        topic,
        messages: [{ partition: i % 2, value: `t${i}`, timestamp: String(base + 1000 * i) }],
      });
    }
  } finally {
    await producer.disconnect();
  }
  await withAdmin(async (admin) => {
    // Partition 0 holds i = 0,2,4,..; partition 1 holds i = 1,3,5,.. (one record per offset).
    const at = async (ts) => Object.fromEntries(
      (await admin.fetchTopicOffsetsByTimestamp(topic, ts)).map((o) => [o.partition, o.offset]),
    );
    assert.deepEqual(await at(base - 1), { 0: '0', 1: '0' });
    assert.deepEqual(await at(base + 3500), { 0: '2', 1: '2' }); // i=4 and i=5
    // Past the newest record Kafka answers -1, which kafkajs turns into the end offset.
    assert.deepEqual(await at(base + 60000), { 0: '5', 1: '5' });
  });
});

// ---------------------------------------------------------------- groups

test('group consumer reads keyed records with headers', { timeout: 90000 }, async () => {
  const groupId = uniqueTopic('js-group');
  const topic = uniqueTopic('js-consume');
  const P = 3;
  await createTopic(topic, P);
  const messages = makeMessages(300, P, 'c');
  const producer = kafka.producer();
  await producer.connect();
  await producer.send({ topic, messages });
  await producer.disconnect();

  const consumer = kafka.consumer({ groupId, maxWaitTimeInMs: 500 });
  await consumer.connect();
  const got = new Map();
  const lastOffset = new Array(P).fill(-1);
  const orderErrors = [];
  try {
    await consumer.subscribe({ topics: [topic], fromBeginning: true });
    await new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`only ${got.size} of 300 records in 60 s`)), 60000);
      consumer.run({
        eachMessage: async ({ partition, message }) => {
          // Recorded, not thrown: kafkajs would swallow the error and redeliver.
          if (Number(message.offset) !== lastOffset[partition] + 1) {
            orderErrors.push(`p${partition}: ${message.offset} after ${lastOffset[partition]}`);
          }
          lastOffset[partition] = Number(message.offset);
          got.set(message.key.toString(), { partition, message });
          if (got.size === messages.length) { clearTimeout(timer); resolve(); }
        },
      }).catch(reject);
    });
  } finally {
    await consumer.disconnect();
  }
  assert.deepEqual(orderErrors, []);
  for (const m of messages) {
    const r = got.get(m.key);
    assert.ok(r, `missing ${m.key}`);
    assert.equal(r.partition, m.partition);
    assert.equal(r.message.value.toString(), m.value);
    assert.equal(r.message.headers.seq.toString(), m.headers.seq);
    assert.equal(r.message.headers.tag.toString(), m.headers.tag);
    assert.deepEqual(r.message.headers.bin, m.headers.bin);
  }
});
