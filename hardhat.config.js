// Offline Hardhat 2 configuration: compiles with solc-js from node_modules (no compiler
// download) and serves the local `hardhat` / `localhost` networks. Settings match
// ledger/compiler.py so both toolchains build the same bytecode.
const path = require("path");
const { subtask } = require("hardhat/config");
const { TASK_COMPILE_SOLIDITY_GET_SOLC_BUILD } = require("hardhat/builtin-tasks/task-names");

const SOLC_VERSION = require("solc/package.json").version;

subtask(TASK_COMPILE_SOLIDITY_GET_SOLC_BUILD, async (args, hre, runSuper) => {
  if (args.solcVersion === SOLC_VERSION) {
    const solc = require("solc");
    return {
      compilerPath: require.resolve("solc/soljson.js"),
      isSolcJs: true,
      version: SOLC_VERSION,
      longVersion: solc.version(),
    };
  }
  return runSuper();
});

/** @type import('hardhat/config').HardhatUserConfig */
module.exports = {
  solidity: {
    version: SOLC_VERSION,
    settings: {
      optimizer: { enabled: true, runs: 200 },
      evmVersion: "cancun",
    },
  },
  paths: {
    sources: path.join(__dirname, "contracts"),
    tests: path.join(__dirname, "tests", "hardhat"),
    cache: path.join(__dirname, "build", "hardhat-cache"),
    artifacts: path.join(__dirname, "build", "hardhat-artifacts"),
  },
  networks: {
    hardhat: {
      chainId: 31337,
      accounts: { mnemonic: "test test test test test test test test test test test junk", count: 10 },
      blockGasLimit: 60000000,
    },
    localhost: { url: "http://127.0.0.1:8545", chainId: 31337 },
  },
};
