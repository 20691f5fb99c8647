#!/usr/bin/env node
'use strict';
// Compares the emitted schema with the client contract. Fails on any breaking change that is not
// excused by contract-pending.txt, and on any pending entry that is no longer missing (the list only shrinks).
const { readFileSync, existsSync } = require('node:fs');
const { join, resolve } = require('node:path');
const { buildSchema, findBreakingChanges, findDangerousChanges } = require('graphql');

const root = join(__dirname, '..');
const contractPath = resolve(process.env.CONTRACT_SCHEMA || join(root, '..', 'shared', 'contract', 'schema.graphql'));
const emittedPath = join(root, 'src', 'schema', 'schema.graphql');
const pendingPath = join(root, 'contract-pending.txt');

if (!existsSync(contractPath)) {
  console.error(`contract: no contract at ${contractPath} (set CONTRACT_SCHEMA)`);
  process.exit(1);
}
const contract = buildSchema(readFileSync(contractPath, 'utf8'));
const emitted = buildSchema(readFileSync(emittedPath, 'utf8'));
const pending = existsSync(pendingPath)
  ? readFileSync(pendingPath, 'utf8').split('\n').map((l) => l.replace(/#.*/, '').trim()).filter(Boolean)
  : [];

/** The schema element a change description is about, e.g. "Query.verifyKey" or "VerifyResult". */
function subjects(description) {
  const head = description.split(' ')[0].replace(/\.$/, '');
  const enumValue = /^(\S+) was removed from enum type (\S+?)\.?$/.exec(description);
  const out = [head];
  if (enumValue) out.push(`${enumValue[2]}.${enumValue[1]}`, enumValue[2]);
  const parts = head.split('.');
  if (parts.length > 1) out.push(parts[0]);
  return out;
}

const excusedBy = new Set();
const breaking = findBreakingChanges(contract, emitted).filter((change) => {
  const match = subjects(change.description).find((s) => pending.includes(s));
  if (match) excusedBy.add(match);
  return !match;
});

function present(element) {
  const [typeName, fieldName] = element.split('.');
  const type = emitted.getType(typeName);
  if (!type) return false;
  if (!fieldName) return true;
  if ('getFields' in type) return fieldName in type.getFields();
  if ('getValues' in type) return type.getValues().some((v) => v.name === fieldName);
  return false;
}
const stale = pending.filter((element) => present(element) && !excusedBy.has(element));

for (const change of findDangerousChanges(contract, emitted)) console.warn(`contract: warning: ${change.description}`);
for (const change of breaking) console.error(`contract: BREAKING ${change.type}: ${change.description}`);
for (const element of stale) console.error(`contract: ${element} is implemented now; remove it from contract-pending.txt`);
const ok = breaking.length === 0 && stale.length === 0;
console.log(`contract: ${ok ? 'ok' : 'FAILED'} (${pending.length} pending, ${breaking.length} breaking, ${stale.length} stale)`);
process.exit(ok ? 0 : 1);
