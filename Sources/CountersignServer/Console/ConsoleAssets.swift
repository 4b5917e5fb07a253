/// The console's one stylesheet and one script, served from `/console/static/` (the Content-Security-Policy allows
/// nothing else: no inline script or style, no other origin).
enum ConsoleAssets {
    static let css = """
        :root { color-scheme: light; --ink: #1b1f24; --muted: #5b6470; --line: #d8dde3; --accent: #0b5cad; --ok: #17703a; --bad: #a3261b; }
        * { box-sizing: border-box; }
        body { margin: 0; font: 16px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: var(--ink); background: #f6f7f9; }
        header { display: flex; flex-wrap: wrap; gap: .5rem 1rem; align-items: center; padding: .6rem 1rem; background: #fff; border-bottom: 1px solid var(--line); }
        header .brand { font-weight: 700; color: var(--ink); text-decoration: none; }
        nav { display: flex; flex-wrap: wrap; gap: .4rem .9rem; align-items: center; }
        nav a { color: var(--accent); text-decoration: none; }
        main { max-width: 70rem; margin: 0 auto; padding: 1rem; }
        h1 { font-size: 1.4rem; margin: .5rem 0 1rem; overflow-wrap: anywhere; }
        h2 { font-size: 1.1rem; margin: 1.5rem 0 .5rem; }
        .card { background: #fff; border: 1px solid var(--line); border-radius: 8px; padding: 1rem; margin-bottom: 1rem; }
        .big { font-size: 1.15rem; font-weight: 600; overflow-wrap: anywhere; }
        .note { color: var(--muted); font-size: .9rem; }
        .scroll { overflow-x: auto; }
        table { border-collapse: collapse; width: 100%; background: #fff; }
        th, td { text-align: left; padding: .45rem .6rem; border-bottom: 1px solid var(--line); vertical-align: top; }
        td.wrap, tr.summary td { overflow-wrap: anywhere; }
        tr.summary td { color: var(--muted); font-size: .9rem; border-bottom-width: 2px; }
        .empty { color: var(--muted); text-align: center; }
        pre { background: #fff; border: 1px solid var(--line); padding: .75rem; overflow-x: auto; white-space: pre-wrap; overflow-wrap: anywhere; font-size: .85rem; }
        button { font: inherit; padding: .5rem .9rem; border-radius: 6px; border: 1px solid var(--line); background: #fff; cursor: pointer; }
        button.approve { background: var(--ok); color: #fff; border-color: var(--ok); }
        button.deny { background: var(--bad); color: #fff; border-color: var(--bad); }
        .actions { display: flex; flex-wrap: wrap; gap: .6rem; margin-top: .8rem; }
        form.card { display: flex; flex-direction: column; gap: .6rem; max-width: 26rem; }
        input { font: inherit; padding: .5rem; border: 1px solid var(--line); border-radius: 6px; }
        .result-escalate, .result-fail, .error { color: var(--bad); font-weight: 600; }
        .result-pass { color: var(--ok); }
        #status:empty { display: none; }
        #status { padding: .5rem .75rem; background: #fff7d6; border: 1px solid #ecd98a; border-radius: 6px; }
        .proof-ok { color: var(--ok); font-weight: 600; }
        .proof-bad { color: var(--bad); font-weight: 600; }
        @media (max-width: 40rem) { main { padding: .6rem; } th, td { padding: .35rem .4rem; font-size: .9rem; } }
        """

    static let javascript = #"""
        "use strict";
        // Countersign approvals console. No framework; every change is a POST with the session's CSRF token.
        (function () {
          const csrf = () => (document.querySelector('meta[name="csrf-token"]') || {}).content || "";
          const say = (text) => { document.getElementById("status").textContent = text; };
          const b64 = {
            toBytes(text) {
              const base = text.replace(/-/g, "+").replace(/_/g, "/") + "===".slice((text.length + 3) % 4);
              return Uint8Array.from(atob(base), (c) => c.charCodeAt(0));
            },
            fromBytes(buffer) {
              let text = "";
              new Uint8Array(buffer).forEach((b) => { text += String.fromCharCode(b); });
              return btoa(text).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
            },
          };
          async function post(url, body) {
            const response = await fetch(url, {
              method: "POST", credentials: "same-origin",
              headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf() },
              body: JSON.stringify(body || {}),
            });
            const answer = await response.json().catch(() => ({}));
            if (!response.ok) { throw new Error((answer.error && answer.error.message) || ("HTTP " + response.status)); }
            return answer;
          }
          function creationOptions(options) {
            const o = options.publicKey;
            o.challenge = b64.toBytes(o.challenge);
            o.user.id = b64.toBytes(o.user.id);
            o.excludeCredentials = (o.excludeCredentials || []).map((c) => ({ type: c.type, id: b64.toBytes(c.id) }));
            return { publicKey: o };
          }
          function requestOptions(options) {
            const o = options.publicKey;
            o.challenge = b64.toBytes(o.challenge);
            o.allowCredentials = (o.allowCredentials || []).map((c) => ({ type: c.type, id: b64.toBytes(c.id) }));
            return { publicKey: o };
          }
          function assertion(ceremony, credential) {
            const r = credential.response;
            return {
              ceremony, id: b64.fromBytes(credential.rawId),
              response: {
                clientDataJSON: b64.fromBytes(r.clientDataJSON), authenticatorData: b64.fromBytes(r.authenticatorData),
                signature: b64.fromBytes(r.signature),
              },
            };
          }
          async function signIn(event) {
            event.preventDefault();
            try {
              const principal = document.getElementById("principal").value.trim();
              const options = await post("/console/api/login/options", { principal });
              const credential = await navigator.credentials.get(requestOptions(options));
              const done = await post("/console/api/login", assertion(options.ceremony, credential));
              location.assign(done.redirect);
            } catch (error) { say("Sign-in failed: " + error.message); }
          }
          async function register() {
            try {
              const token = location.hash.slice(1);
              if (!token) { say("This link has no enrollment token."); return; }
              const options = await post("/console/api/enroll/options", { token });
              const credential = await navigator.credentials.create(creationOptions(options));
              const done = await post("/console/api/enroll", {
                ceremony: options.ceremony, token, id: b64.fromBytes(credential.rawId),
                response: {
                  clientDataJSON: b64.fromBytes(credential.response.clientDataJSON),
                  attestationObject: b64.fromBytes(credential.response.attestationObject),
                },
              });
              history.replaceState(null, "", location.pathname);
              location.assign(done.redirect);
            } catch (error) { say("Registration failed: " + error.message); }
          }
          async function decide(verdict) {
            const box = document.querySelector(".actions");
            const id = box.dataset.id;
            try {
              box.querySelectorAll("button").forEach((b) => { b.disabled = true; });
              say("Confirm with your passkey…");
              const options = await post("/console/api/approvals/" + encodeURIComponent(id) + "/" + verdict + "/options");
              const credential = await navigator.credentials.get(requestOptions(options));
              const done = await post("/console/api/approvals/" + encodeURIComponent(id) + "/" + verdict, assertion(options.ceremony, credential));
              location.assign(done.redirect);
            } catch (error) {
              say((verdict === "approve" ? "Approval" : "Denial") + " not recorded: " + error.message);
              box.querySelectorAll("button").forEach((b) => { b.disabled = false; });
            }
          }
          function countdowns() {
            const now = Date.now() / 1000;
            document.querySelectorAll("time.countdown").forEach((element) => {
              const left = Math.round(Number(element.dataset.deadline) - now);
              element.textContent = left <= 0 ? "expired" : Math.floor(left / 60) + " min " + (left % 60) + " s left";
            });
          }
          function live() {
            const rows = document.getElementById("approval-rows");
            if (!rows || !window.EventSource) { return; }
            const refresh = async () => {
              // A session that ended answers with a redirect to the sign-in page: go there, never put it in the table.
              const response = await fetch("/console/approvals/rows", { credentials: "same-origin", redirect: "manual" });
              if (response.type === "opaqueredirect" || response.status === 401) { location.assign("/console/login"); return; }
              if (response.ok && (response.headers.get("Content-Type") || "").startsWith("text/html")) { rows.innerHTML = await response.text(); countdowns(); }
            };
            new EventSource("/console/events").addEventListener("changed", refresh);
          }
          async function sha256(bytes) { return new Uint8Array(await crypto.subtle.digest("SHA-256", bytes)); }
          function concat(...parts) {
            const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
            let at = 0;
            parts.forEach((p) => { out.set(p, at); at += p.length; });
            return out;
          }
          const std = (text) => Uint8Array.from(atob(text), (c) => c.charCodeAt(0));
          const same = (a, b) => a.length === b.length && a.every((x, i) => x === b[i]);
          // RFC 9162 §2.1.3.2: the root from a leaf hash, its index and the audit path.
          async function rootFromPath(index, size, leaf, path) {
            let fn = index, sn = size - 1, r = leaf;
            for (const p of path) {
              if (sn === 0) { return null; }
              if ((fn & 1) === 1 || fn === sn) {
                r = await sha256(concat(Uint8Array.of(1), p, r));
                if ((fn & 1) === 0) { while ((fn & 1) === 0 && fn !== 0) { fn >>= 1; sn >>= 1; } }
              } else {
                r = await sha256(concat(Uint8Array.of(1), r, p));
              }
              fn >>= 1; sn >>= 1;
            }
            return sn === 0 ? r : null;
          }
          async function checkProof(button) {
            const index = Number(button.dataset.index);
            const out = document.getElementById("proof-" + index);
            try {
              const response = await fetch("/console/api/audit/proof/" + index, { credentials: "same-origin" });
              const proof = await response.json();
              if (!response.ok) { throw new Error((proof.error && proof.error.message) || "HTTP " + response.status); }
              const leaf = await sha256(concat(Uint8Array.of(0), new TextEncoder().encode(proof.entry)));
              const root = await rootFromPath(index, proof.tree_size, leaf, proof.audit_path.map(std));
              const lines = proof.checkpoint.split("\n");
              const signed = std(lines[2]);
              const ok = root !== null && same(leaf, std(proof.leaf_hash)) && same(root, signed) && Number(lines[1]) === proof.tree_size;
              out.textContent = ok ? "✓ in the signed log of " + proof.tree_size : "✗ does not lead to the signed root";
              out.className = ok ? "proof-ok" : "proof-bad";
            } catch (error) { out.textContent = "✗ " + error.message; out.className = "proof-bad"; }
          }
          document.addEventListener("DOMContentLoaded", () => {
            const logout = document.getElementById("logout");
            if (logout) {
              logout.addEventListener("click", async () => {
                try { await post("/console/api/logout"); } catch (error) { /* already signed out */ }
                location.assign("/console/login");
              });
            }
            const form = document.getElementById("login-form");
            if (form) { form.addEventListener("submit", signIn); }
            const enroll = document.getElementById("register");
            if (enroll) { enroll.addEventListener("click", register); }
            const approve = document.getElementById("approve");
            if (approve) { approve.addEventListener("click", () => decide("approve")); }
            const deny = document.getElementById("deny");
            if (deny) { deny.addEventListener("click", () => decide("deny")); }
            document.querySelectorAll("button.check-proof").forEach((b) => b.addEventListener("click", () => checkProof(b)));
            countdowns();
            setInterval(countdowns, 1000);
            live();
          });
        })();
        """#
}
