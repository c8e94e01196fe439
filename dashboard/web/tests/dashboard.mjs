// The analyst page in a real browser: log in with a token, wait for the
// map, check that cells are drawn over the country outlines, that hovering
// shows the numbers with their 95% interval, that suppressed cells are
// marked, that a click opens the age bands and history, and that the table
// view sorts and exports CSV. Prints one JSON line of figures.
//
// Usage: node tests/dashboard.mjs <base URL> <token> <page path+query> <screenshot>
// Chromium: $HUSHMAP_CHROMIUM or /usr/bin/chromium (Debian's package).
import { launchChromium } from "./chromium.mjs";
import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import { createRequire } from "node:module";

// axe-core's WCAG 2.1 A/AA rules, run inside the page (evaluated, so the
// page's content security policy stays as it is); the violations found.
const axeSource = await readFile(createRequire(import.meta.url).resolve("axe-core/axe.min.js"), "utf8");
async function axeViolations(page) {
  await page.evaluate(axeSource);
  return page.evaluate(async () => {
    const r = await window.axe.run(document, { runOnly: { type: "tag", values: ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"] } });
    return r.violations.map((v) => ({ id: v.id, impact: v.impact, nodes: v.nodes.length, first: v.nodes[0]?.target?.join(" ") }));
  });
}
const serious = (vs) => vs.filter((v) => v.impact === "serious" || v.impact === "critical");

const [base, token, path, screenshot] = process.argv.slice(2);
const browser = await launchChromium();
try {
  const context = await browser.newContext({ viewport: { width: 1400, height: 900 }, acceptDownloads: true });
  const page = await context.newPage();
  const offsite = [];
  const cspViolations = [];
  page.on("console", (m) => { if (/Content Security Policy/i.test(m.text())) cspViolations.push(m.text()); });
  page.on("request", (r) => { if (!r.url().startsWith(base) && !r.url().startsWith("data:") && !r.url().startsWith("blob:")) offsite.push(r.url()); });

  // Not logged in: the page sends the browser to the login form.
  await page.goto(base + path);
  assert.match(page.url(), /\/login$/);
  const loginAxe = await axeViolations(page);
  assert.deepEqual(serious(loginAxe), [], "serious accessibility violations on the login page");
  await page.getByLabel("Access token").fill("not-a-token");
  await page.getByRole("button", { name: "Log in" }).click();
  await page.getByText("Unknown token.").waitFor();
  await page.getByLabel("Access token").fill(token);
  await page.getByRole("button", { name: "Log in" }).click();
  await page.waitForURL(base + "/");

  // The cookie is HttpOnly: scripts cannot read it.
  assert.equal(await page.evaluate(() => document.cookie), "");

  const started = Date.now();
  await page.goto(base + path);
  await page.waitForSelector("body[data-state=ready]", { timeout: 30000 });
  const loadMs = Date.now() - started;

  const countries = await page.locator("path.country").count();
  const cells = await page.locator("path.cell").count();
  const suppressed = await page.locator("path.cell.suppressed").count();
  assert.ok(countries > 100, `country outlines drawn: ${countries}`);
  assert.ok(cells > 0, "no cells drawn");
  assert.ok(suppressed > 0, "no suppressed cell marked");
  assert.ok(cells > suppressed, "no cell with a value");
  const hatch = await page.locator("path.cell.suppressed").first().evaluate((e) => getComputedStyle(e).fill);
  assert.match(hatch, /hushmap-hatch/, "suppressed cells are hatched");
  assert.match(await page.locator("#status").innerText(), /suppressed\./);

  // A cell of each kind drawn large enough to point at in the current view.
  const visible = async (selector) => {
    const all = page.locator(selector);
    const i = await all.evaluateAll((els) => els.findIndex((e) => {
      const b = e.getBoundingClientRect(), map = document.getElementById("map").getBoundingClientRect();
      return b.width > 8 && b.height > 8 && b.left > map.left && b.right < map.right && b.top > map.top && b.bottom < map.bottom;
    }));
    assert.ok(i >= 0, `no ${selector} visible in the initial view`);
    return all.nth(i);
  };

  // Hover a published cell: its share with the 95% interval.
  const published = await visible("path.cell:not(.suppressed)");
  await published.hover();
  const tip = page.locator(".cell-tooltip");
  await tip.waitFor();
  const tipText = await tip.innerText();
  assert.match(tipText, /High-risk share \d+\.\d%/);
  assert.match(tipText, /95% CI \d+\.\d% – \d+\.\d%/);
  // Cells are named by their nearest large place (GeoNames), and so are
  // the areas to zoom to.
  assert.match(tipText.split("\n")[0], /^(\d+ km from )?[^,]+, [A-Z]{2}$/, "tooltip names the nearest place");
  const areaNames = await page.locator("#area option").allInnerTexts();
  assert.ok(areaNames.some((t) => /^[^°]+, [A-Z]{2} \(\d+ cells\)$/.test(t)), `zoom-to entries named: ${areaNames}`);

  // Hover a suppressed one: the reason.
  await page.mouse.move(0, 0);
  await (await visible("path.cell.suppressed")).hover();
  await page.locator(".cell-tooltip", { hasText: "Suppressed" }).waitFor();

  // Click: age bands and the history of the cell.
  await published.click({ force: true });
  await page.locator("#details table").waitFor();
  assert.match(await page.locator("#details").innerText(), /Age band/);
  assert.match(await page.locator("#details").innerText(), /by window/);

  // The privacy panel: this window and the horizons, from the ledger's composition.
  const privacy = await page.locator("#privacy").innerText();
  assert.match(privacy, /This window\s+ε/);
  assert.match(privacy, /Last 30 days\s+ε/);

  // The alerts panel says what was compared, and each listed alert is
  // outlined on the map.
  const alertsText = await page.locator("#alerts").innerText();
  assert.match(alertsText, /cells tested against|No earlier window/);
  assert.equal(await page.locator("path.alert-outline").count(), await page.locator("#alerts li").count());

  // The colour scale reads without colour: its lightness falls step by
  // step (kept under any colour-vision deficiency, which changes hue, not
  // lightness), from end to end by at least 3:1.
  const luminance = await page.locator("#legend span").evaluateAll((spans) => spans.map((s) => {
    const [r, g, b] = getComputedStyle(s).backgroundColor.match(/\d+/g).slice(0, 3).map((v) => {
      const c = Number(v) / 255;
      return c <= 0.03928 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4;
    });
    return 0.2126 * r + 0.7152 * g + 0.0722 * b;
  }));
  assert.ok(luminance.length >= 5, "legend steps");
  for (let i = 1; i < luminance.length; i++) assert.ok(luminance[i] < luminance[i - 1], `legend step ${i} not darker`);
  const endToEnd = (luminance[0] + 0.05) / (luminance[luminance.length - 1] + 0.05);
  assert.ok(endToEnd >= 3, `legend contrast end to end ${endToEnd.toFixed(2)}`);

  // Accessibility of the map view.
  const mapAxe = await axeViolations(page);
  assert.deepEqual(serious(mapAxe), [], "serious accessibility violations on the map view");

  await page.screenshot({ path: screenshot, fullPage: false });

  // Find a place by name: the map moves there and labels it.
  await page.getByLabel("Find a place").fill("Kolkata, IN");
  await page.getByLabel("Find a place").press("Enter");
  await page.locator(".place-label", { hasText: /^Kolkata$/ }).waitFor();
  await page.screenshot({ path: screenshot.replace(/\.png$/, "-place.png"), fullPage: false });
  await page.getByLabel("Find a place").fill("Nowhere-on-earth");
  await page.getByLabel("Find a place").press("Enter");
  await page.locator("#status", { hasText: "No place of 100,000+ people" }).waitFor();
  await page.locator("#area").selectOption({ index: 0 });

  // Another metric recolours the same cells and relabels the legend.
  const fills = () => page.locator("path.cell:not(.suppressed)").evaluateAll((els) => els.map((e) => e.getAttribute("fill")).join());
  const byShare = await fills();
  await page.locator("#metric").selectOption("n_total");
  await page.locator("#legend-title", { hasText: "Submissions" }).waitFor();
  assert.notEqual(await fills(), byShare, "metric change did not recolour the cells");
  assert.equal(await page.locator("path.cell").count(), cells);

  // Table view: sorted by a click, exported as CSV.
  await page.getByRole("button", { name: "Table" }).click();
  const rows = await page.locator("#cells-table tbody tr").count();
  assert.ok(rows > 0, "table is empty");
  await page.locator("#cells-table th", { hasText: "Submissions" }).click();
  await page.locator("#cells-table th", { hasText: "Submissions ▲" }).waitFor();
  const firstTwo = await page.locator("#cells-table tbody tr td:nth-child(3)").evaluateAll((tds) => tds.slice(0, 2).map((t) => Number(t.textContent)));
  assert.ok(firstTwo.length < 2 || firstTwo[0] <= firstTwo[1], `sorted ascending: ${firstTwo}`);
  const [download] = await Promise.all([page.waitForEvent("download"), page.getByRole("button", { name: "Download CSV" }).click()]);
  const csv = (await readFile(await download.path(), "utf8")).trim().split("\n");
  assert.match(csv[0], /^window_start,window_end,level,region,age_band,n_total/);
  assert.equal(csv.length - 1, rows);
  const tableAxe = await axeViolations(page);
  assert.deepEqual(serious(tableAxe), [], "serious accessibility violations on the table view");

  assert.deepEqual(offsite, [], "the page fetched from outside the dashboard");

  // The page ran under its content security policy without a violation,
  // and logging out ends the session: the page sends the browser back to
  // the form.
  assert.deepEqual(cspViolations, [], "content security policy violations");
  await page.getByRole("button", { name: "Log out" }).click();
  await page.waitForURL(base + "/login");
  await page.goto(base + path);
  assert.match(page.url(), /\/login$/);
  console.log(JSON.stringify({ load_ms: loadMs, countries, cells, suppressed, table_rows: rows, tooltip: tipText.replace(/\s+/g, " "),
    axe_minor: [...loginAxe, ...mapAxe, ...tableAxe].map((v) => v.id) }));
} finally {
  await browser.close();
}
