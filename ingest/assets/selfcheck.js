"use strict";
const $ = (id) => document.getElementById(id);
// What the script says, in the page's language (rendered by the server).
const T = JSON.parse($("strings").textContent);
// Identity: an ID token from the sign-in (this tab only), or this
// browser's contributor token from its first answer (kept for good).
const ID_TOKEN = "hushmap.id_token";
const CONTRIBUTOR = "hushmap.contributor_token";

// Anonymous checks carry a solved proof-of-work challenge: a fraction of a
// second of this device's time, in a worker so the page stays responsive.
async function proofOfWork() {
  const resp = await fetch("/v1/challenge", {cache: "no-store"});
  const {challenge, difficulty} = await resp.json();
  if (!difficulty) return null;
  const counter = await new Promise((resolve, reject) => {
    const worker = new Worker("/pow-worker.js");
    worker.onmessage = (e) => { worker.terminate(); resolve(e.data.counter); };
    worker.onerror = (e) => { worker.terminate(); reject(e); };
    worker.postMessage({challenge, difficulty});
  });
  return `${challenge}.${counter}`;
}
// Sign-in: OpenID Connect's authorization code flow with PKCE (RFC 7636),
// state and nonce. The page keeps an ID token only from an exchange this
// tab started: a token or a code in a link is ignored, so a mass-mailed
// link cannot sign its readers in as the link's author (RFC 9700 §2.1).
const meta = (name) => document.querySelector(`meta[name=${name}]`).content;
const SIGN_IN = {
  authorize: meta("hushmap-authorization-endpoint"),
  token: meta("hushmap-token-endpoint"),
  client: meta("hushmap-client-id"),
};
const PENDING = "hushmap.sign_in_pending";
// The registered redirect URI: this page without its query.
const redirectUri = () => location.origin + location.pathname;
const base64url = (bytes) => btoa(String.fromCharCode(...bytes)).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
const randomValue = () => base64url(crypto.getRandomValues(new Uint8Array(32)));

async function startSignIn(event) {
  event.preventDefault();
  if (!window.crypto?.subtle) { show("error", `<p>${escapeHtml(T.js_sign_in_failed)}</p>`); return; }
  const pending = {state: randomValue(), nonce: randomValue(), verifier: randomValue(), at: Date.now(), lang: document.documentElement.lang};
  const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(pending.verifier));
  sessionStorage.setItem(PENDING, JSON.stringify(pending));
  const url = new URL(SIGN_IN.authorize);
  for (const [k, v] of Object.entries({
    response_type: "code", client_id: SIGN_IN.client, redirect_uri: redirectUri(), scope: "openid",
    state: pending.state, nonce: pending.nonce,
    code_challenge: base64url(new Uint8Array(digest)), code_challenge_method: "S256",
  })) url.searchParams.set(k, v);
  location.assign(url.href);
}

// The claims of a JWT, unverified: the page checks only that the token is
// the answer to its own request (the nonce); ingest verifies the signature.
function claimsOf(jwt) {
  const part = (jwt.split(".")[1] || "").replace(/-/g, "+").replace(/_/g, "/");
  const bytes = Uint8Array.from(atob(part), (c) => c.charCodeAt(0));
  return JSON.parse(new TextDecoder().decode(bytes));
}

// Back from the identity provider with ?code=&state= (or ?error=).
async function finishSignIn() {
  const params = new URLSearchParams(location.search);
  // Whatever the address bar carried, it leaves it now: nothing of a
  // sign-in stays in history, bookmarks or a shared link.
  const carried = params.has("code") || params.has("state") || params.has("error");
  if (/(^|[#&])(id_token|access_token|code)=/.test(location.hash) || carried) {
    const keep = params.get("lang") ? `?lang=${encodeURIComponent(params.get("lang"))}` : "";
    history.replaceState(null, "", location.pathname + keep);
  }
  if (!carried) return;
  const pending = JSON.parse(sessionStorage.getItem(PENDING) || "null");
  sessionStorage.removeItem(PENDING);
  // Only the answer to the sign-in this tab started, within 10 minutes.
  if (!pending || params.get("state") !== pending.state || !params.get("code") || Date.now() - pending.at > 600000) return;
  try {
    const resp = await fetch(SIGN_IN.token, {
      method: "POST",
      body: new URLSearchParams({
        grant_type: "authorization_code", code: params.get("code"), redirect_uri: redirectUri(),
        client_id: SIGN_IN.client, code_verifier: pending.verifier,
      }),
    });
    const answer = await resp.json();
    if (!resp.ok || typeof answer.id_token !== "string") throw new Error("token endpoint");
    const claims = claimsOf(answer.id_token);
    const audiences = Array.isArray(claims.aud) ? claims.aud : [claims.aud];
    if (claims.nonce !== pending.nonce || !audiences.includes(SIGN_IN.client)) throw new Error("not our token");
    sessionStorage.setItem(ID_TOKEN, answer.id_token);
  } catch (err) {
    show("error", `<p>${escapeHtml(T.js_sign_in_failed)}</p>`);
  }
}

function showIdentity() {
  const signedIn = sessionStorage.getItem(ID_TOKEN) !== null;
  const offered = Boolean(SIGN_IN.authorize && SIGN_IN.token && SIGN_IN.client);
  $("signed-in").hidden = !signedIn;
  $("signed-out").hidden = signedIn;
  $("sign-in-offer").hidden = signedIn || !offered;
}
$("sign-in").addEventListener("click", startSignIn);
$("sign-out").addEventListener("click", () => { sessionStorage.removeItem(ID_TOKEN); showIdentity(); });
showIdentity();
// One decimal degree is ~11 km: coarse before it leaves the device.
const coarse = (x) => Math.round(x * 10) / 10;

$("locate").addEventListener("click", () => {
  if (!navigator.geolocation) { $("located").textContent = T.js_no_geolocation; return; }
  $("located").textContent = T.js_asking;
  navigator.geolocation.getCurrentPosition(
    (pos) => {
      $("lat").value = coarse(pos.coords.latitude);
      $("lon").value = coarse(pos.coords.longitude);
      $("located").textContent = T.js_located;
    },
    () => { $("located").textContent = T.js_not_shared; },
    {enableHighAccuracy: false, maximumAge: 600000, timeout: 10000});
});

function show(kind, html) {
  const r = $("result");
  r.className = kind;
  r.innerHTML = html;
  r.focus();
}

const escapeHtml = (s) => String(s).replace(/[&<>"']/g, (c) => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"}[c]));

$("form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const f = e.target;
  const checked = (name) => Array.from(f.querySelectorAll(`input[name=${name}]:checked`)).map((i) => i.value);
  const body = {
    for: f.querySelector("input[name=for]:checked").value,
    age: Number.parseInt($("age").value, 10),
    gender: $("gender").value,
    symptoms: checked("symptoms"),
    conditions: checked("conditions"),
    travelled_internationally_14d: $("travel").checked,
    contact_with_confirmed_case: $("contact").checked,
  };
  if (Number.isNaN(body.age)) { show("error", escapeHtml(T.js_need_age)); $("age").focus(); return; }
  if ($("lat").value === "" || $("lon").value === "") {
    show("error", escapeHtml(T.js_need_location)); $("lat").focus(); return;
  }
  body.location = {lat: coarse(Number($("lat").value)), lon: coarse(Number($("lon").value))};
  const send = async () => {
    const headers = {"Content-Type": "application/json"};
    const idToken = sessionStorage.getItem(ID_TOKEN);
    const contributor = localStorage.getItem(CONTRIBUTOR);
    if (idToken !== null) headers["Authorization"] = `Bearer ${idToken}`;
    else {
      if (contributor !== null) headers["Hushmap-Contributor"] = contributor;
      const proof = await proofOfWork();
      if (proof !== null) headers["Hushmap-Proof"] = proof;
    }
    return fetch("/v1/submissions", {method: "POST", headers, body: JSON.stringify(body)});
  };
  try {
    let resp = await send();
    let data = await resp.json();
    if (resp.status === 401 && /contributor_token$/.test(data.code || "")) {
      // This browser's token is too old or not recognised (the service's
      // keys changed): start over as a new anonymous contributor.
      localStorage.removeItem(CONTRIBUTOR);
      resp = await send();
      data = await resp.json();
    }
    if (resp.status === 401 && /id_token$/.test(data.code || "")) {
      sessionStorage.removeItem(ID_TOKEN);
      showIdentity();
      show("error", `<p>${escapeHtml(T.js_sign_in_expired)}</p>`);
      return;
    }
    if (resp.status === 202) {
      if (data.contributor_token && sessionStorage.getItem(ID_TOKEN) === null) {
        localStorage.setItem(CONTRIBUTOR, data.contributor_token);
      }
      // The label and advice in the page's language, for the level the
      // service decided (its own advice field is English).
      show(data.risk, `<h2>${escapeHtml(T["risk_" + data.risk])}</h2><p>${escapeHtml(T["advice_" + data.risk])}</p>`);
    } else {
      const retry = resp.headers.get("Retry-After");
      const busy = resp.status === 429 || resp.status === 503;
      // The service's own detail is English: shown as it is on the English
      // page, in plain words of the page's language on the others.
      const english = document.documentElement.lang === "en";
      const what = busy ? T.js_busy : english ? (data.detail || data.title) : T.js_rejected;
      const when = retry ? ` (${T.js_try_again_in.replace("{s}", retry)})` : "";
      show("error", `<p>${escapeHtml(what + when)}</p>`);
      const field = (data.field || "").split(/[.\[]/)[0];
      const target = {age: "age", location: "lat", symptoms: "symptoms", conditions: "conditions"}[field];
      if (target) $(target).focus?.();
    }
  } catch (err) {
    show("error", `<p>${escapeHtml(T.js_unreachable)}</p>`);
  }
});

// After everything above is defined: a sign-in coming back.
finishSignIn().then(showIdentity);
