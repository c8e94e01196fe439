// Fills in the self-check form in a real browser and checks the answer;
// then checks again as the same anonymous browser (its contributor token
// sent back) and signed in through the development identity provider.
// Usage: node selfcheck.mjs <ingest base URL> <screenshot path>
// Chromium: $HUSHMAP_CHROMIUM or /usr/bin/chromium (Debian's package).
import { launchChromium } from "./chromium.mjs";
import assert from "node:assert/strict";

const [base, screenshot] = process.argv.slice(2);
const browser = await launchChromium();
try {
  const page = await browser.newPage();
  const posted = [];
  const sentHeaders = [];
  page.on("request", (r) => {
    if (r.url().endsWith("/v1/submissions")) { posted.push(r.postData()); sentHeaders.push(r.headers()); }
  });
  await page.goto(base + "/");

  // Missing location: the page explains before sending anything.
  await page.getByLabel("Age in years").fill("67");
  await page.getByRole("button", { name: "Check" }).click();
  await page.getByText("Please share or type a rough location.").waitFor();
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
  // Anonymous checks carry a solved proof of work (the test's ingest asks
  // for the default difficulty), found by the page's worker.
  assert.match(sentHeaders[0]["hushmap-proof"] || "", /^[\w-]+\.\d+$/);
  // The first check: no identity sent; the answer's contributor token is
  // kept in this browser, and the page says the browser counts as one.
  assert.equal(sentHeaders[0]["hushmap-contributor"], undefined);
  assert.equal(sentHeaders[0]["authorization"], undefined);
  const token = await page.evaluate(() => localStorage.getItem("hushmap.contributor_token"));
  assert.match(token, /^c1\./);
  await page.getByText("This browser then counts as one person").waitFor();

  // Checking again from the same browser sends the token back.
  await page.getByLabel("Age in years").fill("68");
  const again = page.waitForResponse((r) => r.url().endsWith("/v1/submissions"));
  await page.getByRole("button", { name: "Check" }).click();
  assert.equal((await again).status(), 202);
  assert.equal(posted.length, 2);
  assert.equal(sentHeaders[1]["hushmap-contributor"], token);
  assert.equal(sentHeaders[1]["authorization"], undefined);
  assert.notEqual(sentHeaders[1]["hushmap-proof"], sentHeaders[0]["hushmap-proof"], "a fresh challenge each time");

  // Server-side errors are shown: an impossible age.
  await page.getByLabel("Age in years").fill("130");
  await page.getByRole("button", { name: "Check" }).click();
  await page.getByText("age must be an integer from 0 to 120").waitFor();

  if (screenshot) await page.screenshot({ path: screenshot, fullPage: true });

  // Signing in, through the (development) identity provider and back.
  await page.getByRole("link", { name: "Sign in to follow your symptoms over time" }).click();
  await page.getByLabel("Your name (any)").fill("asha");
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.getByText("You are signed in").waitFor();
  assert.equal(new URL(page.url()).hash, "", "the ID token is taken out of the address bar");
  await page.getByLabel("Age in years").fill("44");
  await page.getByLabel("Latitude").fill("19.07612");
  await page.getByLabel("Longitude").fill("72.87765");
  const answer = page.waitForResponse((r) => r.url().endsWith("/v1/submissions"));
  await page.getByRole("button", { name: "Check" }).click();
  const signedIn = await answer;
  assert.equal(signedIn.status(), 202);
  assert.equal((await signedIn.json()).contributor_token, undefined);
  const last = sentHeaders[sentHeaders.length - 1];
  assert.match(last["authorization"], /^Bearer [\w-]+\.[\w-]+\.[\w-]+$/);
  assert.equal(last["hushmap-contributor"], undefined);
  assert.equal(last["hushmap-proof"], undefined, "signed in: no proof of work");

  // Signing out: anonymous again, with the same browser token.
  await page.getByRole("button", { name: "Sign out" }).click();
  await page.getByText("This browser then counts as one person").waitFor();
  console.log("selfcheck page: ok");
} finally {
  await browser.close();
}
