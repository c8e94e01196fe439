// Page load of the analyst page against a running dashboard, in Debian's
// chromium: time from navigation to the map drawn (body[data-state=ready]),
// and to a cell's panel (age bands + its whole time series) after a click.
// Usage: node bench/load.mjs <base URL> <token> <runs>; prints JSON lines.
import { launchChromium } from "../tests/chromium.mjs";

const [base, token, runs = "5"] = process.argv.slice(2);
const browser = await launchChromium();
try {
  for (let i = 0; i < Number(runs); i++) {
    // A fresh context each run: nothing cached.
    const context = await browser.newContext({ viewport: { width: 1400, height: 900 } });
    const page = await context.newPage();
    await page.goto(base + "/login");
    await page.getByLabel("Access token").fill(token);
    await page.getByRole("button", { name: "Log in" }).click();
    await page.waitForURL(base + "/");
    await context.clearCookies().catch(() => {});
    await page.goto(base + "/login");
    await page.getByLabel("Access token").fill(token);
    const t0 = Date.now();
    await page.getByRole("button", { name: "Log in" }).click();
    await page.waitForSelector("body[data-state=ready]", { timeout: 60000 });
    const ready = Date.now() - t0;
    const cells = await page.locator("path.cell").count();
    const t1 = Date.now();
    await page.locator("path.cell").first().dispatchEvent("click");
    await page.locator("#details table").waitFor();
    const panel = Date.now() - t1;
    console.log(JSON.stringify({ run: i + 1, ready_ms: ready, cells, cell_panel_ms: panel }));
    await context.close();
  }
} finally {
  await browser.close();
}
