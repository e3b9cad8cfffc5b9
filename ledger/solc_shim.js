#!/usr/bin/env node
// A solc command-line stand-in over solc-js, for py-solc-x.
// The solc-js CLI prints a ">>>" banner before its JSON, which py-solc-x cannot parse,
// so this shim answers only the two calls py-solc-x makes: --version and --standard-json.
// Imports ("@openzeppelin/...", "contracts/...") resolve against node_modules and the
// project root; nothing is ever downloaded.
"use strict";
const fs = require("fs");
const path = require("path");

const projectRoot = process.env.QKDIOV_ROOT || path.resolve(__dirname, "..");
const searchRoots = [projectRoot, path.join(projectRoot, "node_modules")];
const solc = require(require.resolve("solc", { paths: [projectRoot, __dirname] }));

function findImports(importPath) {
  for (const root of searchRoots) {
    const candidate = path.resolve(root, importPath);
    if (candidate.startsWith(root) && fs.existsSync(candidate)) {
      return { contents: fs.readFileSync(candidate, "utf8") };
    }
  }
  return { error: `File not found: ${importPath}` };
}

const args = process.argv.slice(2);
if (args.includes("--version")) {
  process.stdout.write(`solc, the solidity compiler commandline interface\nVersion: ${solc.version()}\n`);
} else if (args.includes("--standard-json")) {
  const input = fs.readFileSync(0, "utf8");
  process.stdout.write(solc.compile(input, { import: findImports }));
} else {
  process.stderr.write("solc_shim.js supports only --version and --standard-json\n");
  process.exit(2);
}
