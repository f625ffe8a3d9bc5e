// Drives Debian's Chromium (headless) through the dashboard. Started by the
// end-to-end test tests/e2e/browser.rs, which sets up a cluster state and
// passes what the pages must show in the environment.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync } from "node:fs";
import { chromium } from "playwright-core";

const env = (name) => {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set: run this through tests/e2e/browser.rs`);
  return v;
};
const BASE = env("DASHBOARD_URL");
const SLO = env("SLO_KEY"); // namespace/name
const RUN = env("RUN_PATH"); // /runs/<ns>/<name>
const RUN_NAME = env("RUN_NAME");
const VERDICT = env("RUN_VERDICT");
const RUNBOOK = env("RUNBOOK_URL");
const SHOTS = env("SCREENSHOT_DIR");
const CHROMIUM = process.env.CHROMIUM_PATH || "/usr/bin/chromium";

let browser;
let page;
before(async () => {
  mkdirSync(SHOTS, { recursive: true });
  browser = await chromium.launch({ executablePath: CHROMIUM, args: ["--no-sandbox"] });
  page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
});
after(async () => {
  await browser?.close();
});

const budgetText = (r) => (r === undefined || r === null ? "unknown" : `${(r * 100).toFixed(1)}%`);

test("the overview shows the SLO with the budget figure of its status", async () => {
  // The page and the API read the same status; retry if an evaluation lands
  // between the two reads.
  let shown;
  let expected;
  for (let attempt = 0; attempt < 5; attempt++) {
    const res = await page.goto(`${BASE}/`);
    assert.equal(res.status(), 200);
    shown = (await page.locator(`tr[data-slo="${SLO}"] .budget`).textContent())?.trim();
    const slos = await (await fetch(`${BASE}/api/slos`)).json();
    const slo = slos.find((s) => `${s.metadata.namespace}/${s.metadata.name}` === SLO);
    assert.ok(slo, `${SLO} missing from /api/slos`);
    expected = budgetText(slo.status?.budgetRemaining);
    if (shown === expected) break;
    await new Promise((r) => setTimeout(r, 500));
  }
  assert.equal(shown, expected);
  assert.notEqual(shown, "unknown");
  await page.screenshot({ path: `${SHOTS}/overview.png`, fullPage: true });
});

test("a completed run's page shows its timeline, evidence and chart", async () => {
  const res = await page.goto(`${BASE}${RUN}`);
  assert.equal(res.status(), 200);
  assert.equal((await page.locator("#verdict").textContent()).trim(), VERDICT);
  const steps = await page.locator("#timeline tr td:nth-child(2)").allTextContents();
  for (const step of ["RestorePlanSaved", "PodKilled", "RestoreStarted", "Restored", "Verdict"]) {
    assert.ok(steps.includes(step), `timeline lacks ${step}: ${steps.join(", ")}`);
  }
  assert.ok(steps.indexOf("RestorePlanSaved") < steps.indexOf("PodKilled"), "restore plan saved before the kill");
  assert.equal(await page.locator("#killed tr").count(), 2, "one killed pod row under the header");
  assert.ok(await page.locator("#chart svg polyline").count() >= 1, "burn-rate chart drawn");
  assert.match(await page.locator("#chart svg").innerHTML(), /inject/);
  await page.screenshot({ path: `${SHOTS}/run.png`, fullPage: true });
});

test("the runbook page linked from the alert shows the latest finding", async () => {
  const res = await page.goto(RUNBOOK);
  assert.equal(res.status(), 200);
  const link = page.locator(`#runs a`, { hasText: RUN_NAME });
  assert.equal(await link.count(), 1, `runbook lists ${RUN_NAME}`);
  const row = page.locator("#runs tr", { hasText: RUN_NAME });
  assert.match(await row.textContent(), new RegExp(VERDICT));
  await page.screenshot({ path: `${SHOTS}/runbook.png`, fullPage: true });
});

test("the SLO page, linked from the overview, charts budget and burn rates with the run marked", async () => {
  await page.goto(`${BASE}/`);
  const link = page.locator(`tr[data-slo="${SLO}"] a.slo`);
  assert.equal(await link.getAttribute("href"), `/slos/${SLO}`);
  await link.click();
  await page.waitForURL(`${BASE}/slos/${SLO}`);
  assert.ok(await page.locator("#budget-chart svg polyline").count() >= 1, "budget chart over the window drawn");
  // The run ended a minute or two ago: an hour's span holds it whatever the
  // SLO's window (2m in these tests).
  const res = await page.goto(`${BASE}/slos/${SLO}?range=1h`);
  assert.equal(res.status(), 200);
  for (const id of ["#budget-chart", "#burn-chart"]) {
    assert.ok(await page.locator(`${id} svg polyline`).count() >= 1, `${id} drawn`);
    assert.equal(await page.locator(`${id} svg a[href="${RUN}"]`).count(), 1, `${id} marks ${RUN}`);
  }
  await page.screenshot({ path: `${SHOTS}/slo.png`, fullPage: true });
  // The marker's label leads to the run's page.
  await page.locator(`#burn-chart svg a[href="${RUN}"] text`).click();
  await page.waitForURL(`${BASE}${RUN}`);
  assert.equal((await page.locator("#verdict").textContent()).trim(), VERDICT);
});
