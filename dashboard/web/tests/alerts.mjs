// The map with alerts in a real browser: open the page on a window where
// risk rose in a few cells, check that each alert is outlined on the map
// and listed beside it with its evidence, and keep a screenshot. Prints one
// JSON line of figures.
//
// Usage: node tests/alerts.mjs <base URL> <page path+query> <expected alerts> <screenshot>
// Chromium: $HUSHMAP_CHROMIUM or /usr/bin/chromium (Debian's package). The
// dashboard is open (loopback, no tokens).
import { launchChromium } from "./chromium.mjs";
import assert from "node:assert/strict";

const [base, path, expectedText, screenshot] = process.argv.slice(2);
const expected = Number(expectedText);
const browser = await launchChromium();
try {
  const page = await (await browser.newContext({ viewport: { width: 1400, height: 900 } })).newPage();
  await page.goto(base + path);
  await page.waitForSelector("body[data-state=ready]", { timeout: 30000 });
  // The alerts arrive after the map: wait for the list.
  await page.waitForFunction((n) => document.querySelectorAll("#alerts li").length === n, expected, { timeout: 15000 });
  const outlined = await page.locator("path.alert-outline").count();
  const listed = await page.locator("#alerts li").count();
  assert.equal(outlined, expected, "each alert outlined on the map");
  assert.equal(listed, expected, "each alert listed");
  const text = await page.locator("#alerts").innerText();
  // The evidence: both estimates with their intervals, and the p-value.
  assert.match(text, /p\s*[=<]/, "p-values listed");
  assert.match(text, /%/, "shares listed");
  await page.locator("path.alert-outline").first().scrollIntoViewIfNeeded();
  await page.screenshot({ path: screenshot });
  console.log(JSON.stringify({ outlined, listed }));
} finally {
  await browser.close();
}
