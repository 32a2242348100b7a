// A real cross-encoder for the rerank try-out, built the way the Rust and Python tests build
// theirs (xi_testkit::build_cross_encoder, tests/compat/conftest.py): all-MiniLM-L6-v2's BERT
// body plus the seeded classifier head of the engine's rerank fixture, whose PyTorch scores the
// test compares against. No cross-encoder ships in a package registry.

import { copyFileSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

/** Rewrites a safetensors file: every tensor renamed by `rename`, `extra` F32 tensors appended. */
function rewriteSafetensors(source, target, rename, extra) {
  const bytes = readFileSync(source);
  const headerLength = Number(bytes.readBigUInt64LE(0));
  const header = JSON.parse(bytes.subarray(8, 8 + headerLength).toString('utf8'));
  const data = bytes.subarray(8 + headerLength);
  const out = {};
  for (const [name, info] of Object.entries(header)) {
    out[name === '__metadata__' ? name : rename(name)] = info;
  }
  const chunks = [data];
  let offset = data.length;
  for (const [name, { shape, values }] of Object.entries(extra)) {
    const buffer = Buffer.from(new Float32Array(values).buffer);
    out[name] = { dtype: 'F32', shape, data_offsets: [offset, offset + buffer.length] };
    chunks.push(buffer);
    offset += buffer.length;
  }
  let json = JSON.stringify(out);
  json += ' '.repeat((8 - (json.length % 8)) % 8); // the format pads headers to 8 bytes
  const length = Buffer.alloc(8);
  length.writeBigUInt64LE(BigInt(Buffer.byteLength(json)));
  writeFileSync(target, Buffer.concat([length, Buffer.from(json, 'utf8'), ...chunks]));
}

/** Builds the model folder in `dir`; returns the fixture (pairs and their reference scores). */
export function buildCrossEncoder(minilm, fixturePath, dir) {
  const fixture = JSON.parse(readFileSync(fixturePath, 'utf8'));
  mkdirSync(dir, { recursive: true });
  for (const name of ['tokenizer.json', 'tokenizer_config.json', 'vocab.txt', 'special_tokens_map.json']) {
    copyFileSync(join(minilm, name), join(dir, name));
  }
  const config = JSON.parse(readFileSync(join(minilm, 'config.json'), 'utf8'));
  config.architectures = ['BertForSequenceClassification'];
  config.num_labels = 1;
  writeFileSync(join(dir, 'config.json'), JSON.stringify(config, null, 2));
  rewriteSafetensors(join(minilm, 'model.safetensors'), join(dir, 'model.safetensors'), (n) => `bert.${n}`, {
    'classifier.weight': { shape: [1, fixture.classifier_weight.length], values: fixture.classifier_weight },
    'classifier.bias': { shape: [1], values: [fixture.classifier_bias] },
  });
  return fixture;
}
