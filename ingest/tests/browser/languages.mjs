// The self-check page in each language it speaks, in a real browser:
// chosen by the browser's Accept-Language and by the visible switch, the
// whole form filled in and sent with the keyboard alone (focus moving in
// reading order), the answer in the page's language, and an automated
// accessibility check (axe-core, WCAG 2.1 A and AA rules) with no serious
// or critical violation. Screenshots: <dir>/selfcheck-<lang>.png.
//
// Usage: node languages.mjs <ingest base URL> <screenshot dir>
// Chromium: $HUSHMAP_CHROMIUM or /usr/bin/chromium (Debian's package).
import { launchChromium } from "./chromium.mjs";
import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import { createRequire } from "node:module";

const [base, shots] = process.argv.slice(2);
const require = createRequire(import.meta.url);
// axe-core goes in through the devtools protocol (evaluate), which the
// page's CSP (no inline script) does not govern; a script tag would be refused.
const axeSource = await readFile(require.resolve("axe-core/axe.min.js"), "utf8");
const strings = {};
for (const lang of ["en", "hi", "mr"]) {
  strings[lang] = JSON.parse(await readFile(new URL(`../../assets/i18n/${lang}.json`, import.meta.url), "utf8"));
}
const browser = await launchChromium();

// Presses Tab until `done(activeElement)` holds; returns every element
// focused on the way (id or name/value), failing after `limit` presses.
async function tabTo(page, done, limit = 80) {
  const seen = [];
  for (let i = 0; i < limit; i++) {
    await page.keyboard.press("Tab");
    const here = await page.evaluate(() => {
      const e = document.activeElement;
      return { id: e.id, tag: e.tagName, name: e.getAttribute("name"), value: e.getAttribute("value"), text: e.textContent.trim().slice(0, 20) };
    });
    seen.push(here);
    if (done(here)) return seen;
  }
  throw new Error(`focus never reached the target: ${JSON.stringify(seen.slice(-5))}`);
}

const figures = {};
try {
  for (const lang of ["en", "hi", "mr"]) {
    const t = strings[lang];
    // The browser's language chooses the page's.
    const context = await browser.newContext({ locale: { en: "en-GB", hi: "hi-IN", mr: "mr-IN" }[lang], viewport: { width: 900, height: 1100 } });
    const page = await context.newPage();
    const posted = [];
    page.on("request", (r) => { if (r.url().endsWith("/v1/submissions")) posted.push(r.postData()); });
    const resp = await page.goto(base + "/");
    assert.equal(resp.headers()["content-language"], lang);
    assert.match(resp.headers()["vary"] || "", /accept-language/i);
    assert.equal(await page.getAttribute("html", "lang"), lang);
    assert.equal(await page.locator("h1").innerText(), t.h1);
    assert.equal(await page.locator("nav.languages a[aria-current=page]").getAttribute("hreflang"), lang);

    // Accessibility: axe-core's WCAG 2.1 A/AA rules, nothing serious.
    await page.evaluate(axeSource);
    const axe = await page.evaluate(async () => {
      const r = await window.axe.run(document, { runOnly: { type: "tag", values: ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"] } });
      return r.violations.map((v) => ({ id: v.id, impact: v.impact, nodes: v.nodes.length }));
    });
    const serious = axe.filter((v) => v.impact === "serious" || v.impact === "critical");
    assert.deepEqual(serious, [], `${lang}: serious accessibility violations`);

    // The keyboard alone: from the top, Tab to each field in turn.
    await page.locator("body").focus();
    const order = [];
    order.push(...await tabTo(page, (e) => e.id === "age"));
    await page.keyboard.type("71");
    order.push(...await tabTo(page, (e) => e.name === "symptoms" && e.value === "fever"));
    await page.keyboard.press("Space");
    order.push(...await tabTo(page, (e) => e.name === "symptoms" && e.value === "breathlessness"));
    await page.keyboard.press("Space");
    order.push(...await tabTo(page, (e) => e.name === "conditions" && e.value === "heart_disease"));
    await page.keyboard.press("Space");
    order.push(...await tabTo(page, (e) => e.id === "lat"));
    await page.keyboard.type("18.52");
    order.push(...await tabTo(page, (e) => e.id === "lon"));
    await page.keyboard.type("73.86");
    order.push(...await tabTo(page, (e) => e.tag === "BUTTON" && e.text === t.submit));
    // Focus moved in reading order: each stop after the one before.
    const ids = order.map((e) => e.id).filter(Boolean);
    for (const [a, b] of [["age", "lat"], ["lat", "lon"]]) assert.ok(ids.indexOf(a) < ids.indexOf(b), `${lang}: ${a} before ${b}`);
    await page.keyboard.press("Enter");
    const result = page.locator("#result");
    await result.getByRole("heading", { name: t.risk_high }).waitFor();
    assert.equal(await result.locator("p").innerText(), t.advice_high);
    // The answer took focus, so a screen reader reads it next.
    assert.equal(await page.evaluate(() => document.activeElement.id), "result");
    assert.equal(posted.length, 1);
    const sent = JSON.parse(posted[0]);
    assert.deepEqual(sent.location, { lat: 18.5, lon: 73.9 });
    assert.deepEqual(sent.symptoms.sort(), ["breathlessness", "fever"]);
    assert.deepEqual(sent.conditions, ["heart_disease"]);
    await page.screenshot({ path: `${shots}/selfcheck-${lang}.png`, fullPage: true });

    // A message from the page itself, in its language: no location.
    await page.locator("#lat").fill("");
    await page.locator("button[type=submit]").click();
    await page.getByText(t.js_need_location).waitFor();
    figures[lang] = { tab_stops: order.length, axe_violations: axe.length, axe_minor: axe.filter((v) => !serious.includes(v)).map((v) => v.id) };
    await context.close();
  }

  // The visible switch overrides the browser's language, and says which
  // one is on.
  const context = await browser.newContext({ locale: "en-GB" });
  const page = await context.newPage();
  await page.goto(base + "/");
  await page.locator("nav.languages").getByRole("link", { name: "मराठी" }).click();
  await page.waitForURL(/lang=mr/);
  assert.equal(await page.getAttribute("html", "lang"), "mr");
  assert.equal(await page.locator("h1").innerText(), strings.mr.h1);
  await context.close();
  console.log(JSON.stringify(figures));
} finally {
  await browser.close();
}
