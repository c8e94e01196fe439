// Fills in the self-check form in a real browser and checks the answer;
// then checks again as the same anonymous browser (its contributor token
// sent back) and signed in through the development identity provider.
// Then the attacks on sign-in: a valid ID token in a link, and another
// person's authorization code in a link, each leave the page signed out.
// Usage: node selfcheck.mjs <ingest base URL> <screenshot path> <a valid ID token>
// Chromium: $HUSHMAP_CHROMIUM or /usr/bin/chromium (Debian's package).
import { launchChromium } from "./chromium.mjs";
import assert from "node:assert/strict";

const [base, screenshot, validIdToken] = process.argv.slice(2);
const browser = await launchChromium();
try {
  const page = await browser.newPage();
  // The page works under its own CSP: nothing is refused on the way.
  const refused = [];
  page.on("console", (m) => { if (/Content Security Policy|Refused to/.test(m.text())) refused.push(m.text()); });
  const posted = [];
  const sentHeaders = [];
  page.on("request", (r) => {
    if (r.url().endsWith("/v1/submissions")) { posted.push(r.postData()); sentHeaders.push(r.headers()); }
  });
  const first = await page.goto(base + "/");
  const headers = first.headers();
  const csp = headers["content-security-policy"] || "";
  for (const directive of ["default-src 'none'", "script-src 'self'", "style-src 'self'", "frame-ancestors 'none'", "base-uri 'none'", "object-src 'none'"]) {
    assert.ok(csp.includes(directive), `CSP without ${directive}: ${csp}`);
  }
  assert.ok(!/unsafe-inline|unsafe-eval/.test(csp), csp);
  assert.equal(headers["x-frame-options"], "DENY");
  assert.equal(headers["x-content-type-options"], "nosniff");
  assert.equal(headers["referrer-policy"], "same-origin");
  assert.match(headers["permissions-policy"] || "", /geolocation=\(self\)/);
  assert.match(headers["permissions-policy"] || "", /camera=\(\)/);

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
  const back = new URL(page.url());
  assert.equal(back.search + back.hash, "", "the code and state are taken out of the address bar");
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
  assert.deepEqual(refused, [], "the page's CSP refused something it uses");

  // Attack 1: a link carrying a valid ID token (the implicit flow's
  // fragment). The page takes it out of the address bar and ignores it.
  const victim = await browser.newContext();
  const v = await victim.newPage();
  const victimHeaders = [];
  const tokenCalls = [];
  v.on("request", (r) => {
    if (r.url().endsWith("/v1/submissions")) victimHeaders.push(r.headers());
    if (r.url().endsWith("/token")) tokenCalls.push(r.url());
  });
  await v.goto(`${base}/#id_token=${validIdToken}`);
  await v.getByText("This browser then counts as one person").waitFor();
  assert.equal(await v.evaluate(() => sessionStorage.getItem("hushmap.id_token")), null);
  assert.equal(new URL(v.url()).hash, "");

  // Attack 2: the attacker signs in, stops before redeeming the code, and
  // mails the link the provider sent back. The victim's page did not start
  // that sign-in (no state of its own), so the code is never redeemed.
  const attacker = await browser.newContext();
  const a = await attacker.newPage();
  await a.route("**/token", (route) => route.abort());
  await a.goto(base + "/");
  const landing = a.waitForRequest((r) => r.isNavigationRequest() && r.url().includes("code="));
  await a.getByRole("link", { name: "Sign in to follow your symptoms over time" }).click();
  await a.getByLabel("Your name (any)").fill("mallory");
  await a.getByRole("button", { name: "Sign in" }).click();
  const link = (await landing).url();
  assert.match(link, /[?&]code=[\w-]+.*[?&]?state=/);
  await v.goto(link);
  await v.getByText("This browser then counts as one person").waitFor();
  assert.equal(new URL(v.url()).search, "", "the code is taken out of the address bar");
  // Neither does a victim who had started a sign-in of their own (their
  // state is not the attacker's).
  await v.getByRole("link", { name: "Sign in to follow your symptoms over time" }).click();
  await v.getByLabel("Your name (any)").waitFor();
  await v.goto(link);
  await v.getByText("This browser then counts as one person").waitFor();
  assert.deepEqual(tokenCalls, [], "the page redeemed a code it did not ask for");
  assert.equal(await v.evaluate(() => sessionStorage.getItem("hushmap.id_token")), null);

  // And the victim's check goes in as their own anonymous browser.
  await v.getByLabel("Age in years").fill("35");
  await v.getByLabel("Latitude").fill("19.1");
  await v.getByLabel("Longitude").fill("72.9");
  const theirs = v.waitForResponse((r) => r.url().endsWith("/v1/submissions"));
  await v.getByRole("button", { name: "Check" }).click();
  assert.equal((await theirs).status(), 202);
  assert.equal(victimHeaders.at(-1)["authorization"], undefined, "the victim was signed in as someone else");
  console.log("selfcheck page: ok (headers, sign-in, and both sign-in links ignored)");
} finally {
  await browser.close();
}
