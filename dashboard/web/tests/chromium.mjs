// Debian's chromium, headless, as every browser test here starts it:
// $HUSHMAP_CHROMIUM or /usr/bin/chromium, with the flags that keep it from
// reaching out to the network this machine does not have (each of its
// start-up connections would be refused, many at a time).
import { chromium } from "playwright-core";

export function launchChromium() {
  return chromium.launch({
    executablePath: process.env.HUSHMAP_CHROMIUM || "/usr/bin/chromium",
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
           "--disable-component-update", "--disable-sync"],
  });
}
