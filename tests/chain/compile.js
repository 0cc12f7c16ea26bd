#!/usr/bin/env node
// Compiles checkpoint/contracts/JournalAnchor.sol offline with the solcjs
// pinned in package.json (solc 0.8.24, evmVersion shanghai -- the newest fork
// ganache 7.9.2 runs -- optimizer 200 runs, no metadata hash so the bytes do
// not depend on the source's comments or path).
//
//   node compile.js            write JournalAnchor.bin (creation bytecode),
//                              JournalAnchor.runtime.bin (the code a deployed
//                              contract must hold) and JournalAnchor.abi.json
//                              next to the .sol file
//   node compile.js --out DIR  write them into DIR instead
//   node compile.js --check    recompile and compare with the committed files:
//                              exit 0 same, 1 different, 77 (skip) when solc is
//                              not installed (npm ci not run)
'use strict';
const fs = require('fs');
const path = require('path');

const SOLC_VERSION = '0.8.24';
const contractsDir = path.resolve(__dirname, '../../checkpoint/contracts');
const srcName = 'JournalAnchor.sol';
const name = 'JournalAnchor';

let solc;
try {
  solc = require('solc');
} catch (e) {
  console.error('compile.js: solc is not installed (run: npm ci in tests/chain)');
  process.exit(77);
}
if (!solc.version().startsWith(SOLC_VERSION + '+')) {
  console.error(`compile.js: solc ${solc.version()} is not the pinned ${SOLC_VERSION}`);
  process.exit(1);
}

const args = process.argv.slice(2);
let mode = 'write';
let outDir = contractsDir;
for (let i = 0; i < args.length; i++) {
  if (args[i] === '--check') mode = 'check';
  else if (args[i] === '--out' && i + 1 < args.length) outDir = path.resolve(args[++i]);
  else {
    console.error('usage: node compile.js [--check | --out DIR]');
    process.exit(2);
  }
}

const input = {
  language: 'Solidity',
  sources: { [srcName]: { content: fs.readFileSync(path.join(contractsDir, srcName), 'utf8') } },
  settings: {
    evmVersion: 'shanghai',
    optimizer: { enabled: true, runs: 200 },
    metadata: { bytecodeHash: 'none' },
    outputSelection: { '*': { '*': ['abi', 'evm.bytecode.object', 'evm.deployedBytecode.object'] } },
  },
};
const output = JSON.parse(solc.compile(JSON.stringify(input)));
let failed = false;
for (const e of output.errors || []) {
  console.error(e.formattedMessage || e.message);
  if (e.severity === 'error') failed = true;
}
if (failed) process.exit(1);

const c = output.contracts[srcName][name];
const bin = c.evm.bytecode.object + '\n';
const runtime = c.evm.deployedBytecode.object + '\n';
const abi = JSON.stringify(c.abi, null, 2) + '\n';
const files = [[name + '.bin', bin], [name + '.runtime.bin', runtime], [name + '.abi.json', abi]];

if (mode === 'check') {
  let ok = true;
  for (const [file, want] of files) {
    let have = null;
    try {
      have = fs.readFileSync(path.join(contractsDir, file), 'utf8');
    } catch (e) {
      /* reported as a difference below */
    }
    if (have !== want) {
      console.error(`compile.js: committed ${file} differs from a fresh compile; run node compile.js and commit`);
      ok = false;
    } else {
      console.log(`compile.js: ${file} matches (${file.endsWith('.bin') ? (want.length - 1) / 2 + ' bytes' : 'abi'})`);
    }
  }
  process.exit(ok ? 0 : 1);
}

fs.mkdirSync(outDir, { recursive: true });
for (const [file, text] of files) fs.writeFileSync(path.join(outDir, file), text);
console.log(`compile.js: ${name}.bin ${(bin.length - 1) / 2} bytes (runtime ${c.evm.deployedBytecode.object.length / 2}) -> ${outDir}`);
