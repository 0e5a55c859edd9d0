// The coordinator's dashboard in headless Chromium after one real round:
// a coordinator (metrics and dashboard on 127.0.0.1, API keys on) and three
// nodes on the tiny preset run one secure round; the page refuses a wrong
// key, signs in with the right one, and shows the completed round in its
// table and its charts. Saves ARTIFACTS/dashboard.png.
//
// Environment: FEDGE_BIN (the fedge binary), CHROMIUM (the chromium binary),
// ARTIFACTS (a folder for screenshots). Run by scripts/test-browser.sh with
// playwright-core installed; exits 0 on pass, 1 with a message on failure.
import { chromium } from "playwright-core";
import { spawn, execFileSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";

const fedge = process.env.FEDGE_BIN;
const browserPath = process.env.CHROMIUM;
const artifacts = process.env.ARTIFACTS || path.join(os.tmpdir(), "fedge-browser-artifacts");
for (const [name, value] of [["FEDGE_BIN", fedge], ["CHROMIUM", browserPath]]) {
  if (!value || !fs.existsSync(value)) {
    console.error(`dashboard.test: set ${name} to an existing file (got '${value ?? ""}')`);
    process.exit(1);
  }
}
fs.mkdirSync(artifacts, { recursive: true });

const work = fs.mkdtempSync(path.join(os.tmpdir(), "fedge-dashboard-"));
const children = [];
const apiKey = "d4c3b2a1f0e9d8c7b6a5f4e3d2c1b0a9f8e7d6c5b4a3f2e1d0c9b8a7f6e5d4c3";
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function run(args) {
  execFileSync(fedge, args, { cwd: work, stdio: ["ignore", "ignore", "inherit"] });
}

function start(name, args) {
  const log = fs.openSync(path.join(work, name + ".log"), "a");
  const child = spawn(fedge, ["--threads", "1", ...args], { cwd: work, stdio: ["ignore", log, log] });
  children.push(child);
  return child;
}

async function until(what, condition, ms) {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (await condition()) return;
    await sleep(100);
  }
  throw new Error(`timed out after ${ms / 1000} s waiting for ${what}`);
}

function writeConfigs() {
  fs.mkdirSync(path.join(work, "keys"));
  run(["keygen", "--out", "keys/coordinator"]);
  const allowed = [];
  for (const n of [1, 2, 3]) {
    run(["keygen", "--out", `keys/node${n}`]);
    allowed.push(fs.readFileSync(path.join(work, `keys/node${n}.pub`), "utf8").split("\n").find((l) => l && !l.startsWith("#")));
  }
  fs.writeFileSync(path.join(work, "keys/allowed.txt"), allowed.join("\n") + "\n");
  fs.writeFileSync(path.join(work, "keys/api_keys.txt"), `${apiKey} browser-test\n`, { mode: 0o600 });
  run(["data", "synth", "--sites", "3", "--days", "12", "--public-records", "10", "--out", "data"]);
  fs.writeFileSync(path.join(work, "coordinator.toml"), `[coordinator]
bind = "tcp://127.0.0.1:0"
key = "keys/coordinator.key"
allow_list = "keys/allowed.txt"
state_dir = "coordinator"
initial_adapter = "initial_adapter"
endpoint_file = "endpoint.txt"
finish_linger_ms = 60000
[adapter]
model = "tiny"
rank = 4
alpha = 8
[federation]
rounds = 1
min_nodes = 3
heartbeat_interval_ms = 200
liveness_timeout_ms = 4000
[federation.train]
local_steps = 5
learning_rate = 0.01
batch_size = 2
[federation.secagg]
expected_dropout = 0.001
failure_probability = 0.01
[http]
listen = "127.0.0.1:0"
api_keys = "keys/api_keys.txt"
url_file = "http_url.txt"
`);
}

function writeNode(n, endpoint) {
  const site = `site_${String(n - 1).padStart(2, "0")}`;
  fs.writeFileSync(path.join(work, `node${n}.toml`), `[node]
id = ${n}
name = "site-${n}"
key = "keys/node${n}.key"
state_dir = "node${n}"
evaluate_global = true
exit_after_versions = 1
[coordinator]
endpoint = "${endpoint}"
public_key = "keys/coordinator.pub"
[model]
path = "tiny"
threads = 1
[data]
train = "data/${site}/train.jsonl"
eval = "data/${site}/eval.jsonl"
seq_len = 96
[train]
lora_alpha = 8
`);
}

async function main() {
  writeConfigs();
  start("coordinator", ["coordinator", "--config", "coordinator.toml"]);
  const urlFile = path.join(work, "http_url.txt");
  await until("the coordinator's HTTP listener", () => fs.existsSync(urlFile), 60000);
  const url = fs.readFileSync(urlFile, "utf8").trim();

  const browser = await chromium.launch({ executablePath: browserPath, headless: true, args: ["--no-sandbox"] });
  try {
    const page = await browser.newPage({ viewport: { width: 1280, height: 1000 } });
    const errors = [];
    page.on("pageerror", (e) => errors.push(String(e)));
    // Anything the page asks from elsewhere (a CDN) would fail offline.
    page.on("request", (r) => {
      if (!r.url().startsWith(url)) errors.push("request outside the coordinator: " + r.url());
    });
    await page.goto(url + "/");
    await page.waitForSelector("#login:not([hidden])", { timeout: 15000 });

    await page.fill("#key", "not-the-key-0000000000000000000000000000");
    await page.click("#login button[type=submit]");
    await page.waitForFunction(() => document.getElementById("login-error").textContent.includes("not accepted"),
                               null, { timeout: 15000 });

    await page.fill("#key", apiKey);
    await page.click("#login button[type=submit]");
    await page.waitForSelector("#app:not([hidden])", { timeout: 15000 });
    if (await page.evaluate(() => sessionStorage.getItem("fedge_coordinator_api_key")) !== apiKey)
      throw new Error("the key is not kept in sessionStorage");

    // The nodes start only now that the page is signed in: a round on the
    // tiny preset takes a second or two, and the page must be watching
    // before the federation finishes (the coordinator lingers 60 s after it,
    // so the page's 3 s poll sees the last state; the test stops it sooner).
    const endpoint = fs.readFileSync(path.join(work, "endpoint.txt"), "utf8").trim();
    for (const n of [1, 2, 3]) {
      writeNode(n, endpoint);
      start(`node${n}`, ["node", "--config", `node${n}.toml`]);
    }

    // The round, once it completed: its row, its points on both charts.
    await page.waitForSelector('#rounds tr[data-round="1"][data-state="completed"]', { timeout: 240000 });
    await page.waitForSelector('#quality-chart circle.point[data-round="1"]', { timeout: 15000 });
    await page.waitForSelector('#epsilon-chart circle.point[data-round="1"]', { timeout: 15000 });
    const row = await page.textContent('#rounds tr[data-round="1"]');
    const nodes = await page.$$eval("#nodes tr", (rows) => rows.length);
    const version = await page.textContent("#f-version");
    await page.screenshot({ path: path.join(artifacts, "dashboard.png"), fullPage: true });
    if (!row.includes("completed")) throw new Error("round 1's row does not say completed: " + row);
    if (nodes !== 3) throw new Error(`the nodes table lists ${nodes} nodes, expected 3`);
    if (version.trim() !== "v1") throw new Error("the global version shows " + version + ", expected v1");
    if (errors.length) throw new Error("page errors: " + errors.join("; "));
    console.log(`dashboard.test: passed (round 1 completed: ${row.replace(/\s+/g, " ").trim()}); ` +
                `screenshot ${path.join(artifacts, "dashboard.png")}`);
  } finally {
    await browser.close();
  }
}

function logs() {
  for (const name of ["coordinator", "node1", "node2", "node3"]) {
    const file = path.join(work, name + ".log");
    if (!fs.existsSync(file)) continue;
    const lines = fs.readFileSync(file, "utf8").trimEnd().split("\n");
    console.error(`---- ${name}.log (last 20 lines)\n` + lines.slice(-20).join("\n"));
  }
}

let code = 0;
try {
  await main();
} catch (e) {
  console.error("dashboard.test: FAILED: " + (e && e.message ? e.message : e));
  logs();
  console.error("dashboard.test: the work folder is kept: " + work);
  code = 1;
} finally {
  for (const child of children) if (child.exitCode === null) child.kill("SIGTERM");
}
if (code === 0) fs.rmSync(work, { recursive: true, force: true });
process.exit(code);
