// Provisional numbers in a real browser. Mode "open": the page follows the
// latest window, which is still open, so it shows the provisional map:
// marked by a banner and dashed cell edges, the slider on its last step,
// age band and level fixed, no alerts; a screenshot is kept. Mode "final":
// the same window once its final release is out, opened by its start:
// no banner, no dashed edges, every control back. Prints one JSON line.
//
// Usage: node tests/provisional.mjs <base URL> open <screenshot>
//        node tests/provisional.mjs <base URL> final <window start ms>
// Chromium: $HUSHMAP_CHROMIUM or /usr/bin/chromium. The dashboard is open
// (loopback, no tokens).
import { launchChromium } from "./chromium.mjs";
import assert from "node:assert/strict";

const [base, mode, arg] = process.argv.slice(2);
const browser = await launchChromium();
try {
  const page = await (await browser.newContext({ viewport: { width: 1400, height: 900 } })).newPage();
  if (mode === "open") {
    await page.goto(base + "/");
    await page.waitForSelector("body.provisional[data-state=ready]", { timeout: 30000 });
    const note = page.locator("#provisional-note");
    assert.ok(await note.isVisible(), "the banner says the numbers are provisional");
    const text = await note.innerText();
    assert.match(text, /Provisional/);
    assert.match(text, /first answer/);
    assert.match(await page.locator("#window-label").innerText(), /provisional/);
    const slider = page.locator("#window");
    assert.equal(await slider.inputValue(), await slider.getAttribute("max"), "the open window is the last step");
    assert.ok(await page.locator("#band").isDisabled(), "all ages only");
    assert.ok(await page.locator("#level").isDisabled(), "one level only");
    const cells = await page.locator("path.cell").count();
    assert.ok(cells > 0, "cells drawn");
    const dashed = await page.locator("path.cell").first().evaluate((el) => getComputedStyle(el).strokeDasharray);
    assert.notEqual(dashed, "none", "provisional cells have dashed edges");
    assert.match(await page.locator("#alerts").innerText(), /final releases/);
    await page.screenshot({ path: arg });
    console.log(JSON.stringify({ mode, cells, dashed, note: text }));
  } else {
    await page.goto(`${base}/?window=${arg}`);
    await page.waitForSelector("body[data-state=ready]", { timeout: 30000 });
    await page.waitForFunction(() => !document.body.classList.contains("provisional"), null, { timeout: 15000 });
    assert.ok(await page.locator("#provisional-note").isHidden(), "no banner on a final release");
    assert.ok(!(await page.locator("#band").isDisabled()), "age bands back");
    assert.doesNotMatch(await page.locator("#window-label").innerText(), /provisional/);
    const cells = await page.locator("path.cell").count();
    assert.ok(cells > 0, "the final release's cells drawn");
    const dashed = await page.locator("path.cell").first().evaluate((el) => getComputedStyle(el).strokeDasharray);
    assert.equal(dashed, "none", "final cells have solid edges");
    console.log(JSON.stringify({ mode, cells }));
  }
} finally {
  await browser.close();
}
