// Fills in the self-check form in a real browser and checks the answer.
// Usage: node selfcheck.mjs <ingest base URL> <screenshot path>
// Chromium: $HUSHMAP_CHROMIUM or /usr/bin/chromium (Debian's package).
import { chromium } from "playwright-core";
import assert from "node:assert/strict";

const [base, screenshot] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: process.env.HUSHMAP_CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"],
});
try {
  const page = await browser.newPage();
  const posted = [];
  page.on("request", (r) => { if (r.url().endsWith("/v1/submissions")) posted.push(r.postData()); });
  await page.goto(base + "/");

  // Missing location: the page explains before sending anything.
  await page.getByLabel("Age in years").fill("67");
  await page.getByRole("button", { name: "Check" }).click();
  await page.getByText("Please share or type an approximate location.").waitFor();
  assert.equal(posted.length, 0);

  // A complete answer, with a precise location typed in.
  await page.getByLabel("Fever").check();
  await page.getByLabel("Dry cough").check();
  await page.getByLabel("Diabetes").check();
  await page.getByLabel("Latitude").fill("19.07612");
  await page.getByLabel("Longitude").fill("72.87765");
  await page.getByRole("button", { name: "Check" }).click();
  const result = page.locator("#result");
  await result.getByRole("heading", { name: "High risk" }).waitFor();
  assert.match(await result.innerText(), /doctor/);

  // What left the browser: coarsened to one decimal, nothing else added.
  assert.equal(posted.length, 1);
  const sent = JSON.parse(posted[0]);
  assert.deepEqual(sent.location, { lat: 19.1, lon: 72.9 });
  assert.equal(sent.age, 67);
  assert.deepEqual(sent.symptoms, ["fever", "dry_cough"]);
  assert.ok(!("profile" in sent));

  // Server-side errors are shown: an impossible age.
  await page.getByLabel("Age in years").fill("130");
  await page.getByRole("button", { name: "Check" }).click();
  await page.getByText("age must be an integer from 0 to 120").waitFor();

  if (screenshot) await page.screenshot({ path: screenshot, fullPage: true });
  console.log("selfcheck page: ok");
} finally {
  await browser.close();
}
