// The status page's script (agent/static/status.html), served as /status.js: a file of its
// own so the page's Content-Security-Policy needs no 'unsafe-inline'. It builds the DOM with
// createElement/textContent only, and styles it with classes and element.style properties
// (CSSOM, which style-src 'self' allows), never with markup or style attributes.
"use strict";
(() => {
  const params = new URLSearchParams(location.search);
  const REFRESH_SECONDS = Math.min(300, Math.max(1, Number(params.get("refresh")) || 5));
  const FETCH_TIMEOUT_MS = Math.max(1000, REFRESH_SECONDS * 800);
  const VERDICTS = ["healthy", "degraded", "failover_recommended", "failed_over", "failover_unsafe",
    "held", "unknown"];
  const STATES = ["up", "degraded", "down", "recovering", "stale", "impaired"];
  const ACTION_KINDS = ["latch", "failback", "hold", "lift"];
  // Verdicts that mean "traffic must be (or stay) away from this site": the outage banner.
  const OUTAGE = ["failover_recommended", "failed_over"];
  // Titles of the dependency groups the agent lists (each kind names its own group); a group
  // this page does not know yet is shown under its key.
  const DEPENDENCY_TITLES = { idps: "Identity providers", dns: "DNS", tls: "TLS", tcp: "TCP" };
  // The latest answer of each endpoint, kept when a later fetch fails (shown as stale).
  const data = { verdict: null, results: null, timeline: null };
  // Agent clock minus browser clock, so "N s ago" is right even when the two disagree.
  let skew = 0;
  let lastSuccess = 0;
  let refreshes = 0;

  const $ = (id) => document.getElementById(id);

  // The only way this page creates DOM: text always goes through text nodes, never markup.
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "class") node.className = value;
      else if (key === "ts") node.dataset.ts = String(value);
      else node.setAttribute(key, String(value));
    }
    for (const child of children.flat(Infinity)) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  // Class names are built from known words only: an unexpected value gets the neutral style.
  const oneOf = (known, value, prefix) => (known.includes(value) ? prefix + value : "other");
  const verdictBadge = (v) =>
    el("span", { class: "badge verdict " + oneOf(VERDICTS, v, "v-") }, v || "unknown");
  const stateBadge = (s) =>
    el("span", { class: "badge state " + oneOf(STATES, s, "s-") }, s || "—");
  const flagBadge = (flag, text) => el("span", { class: "badge flag f-" + flag, "data-flag": flag }, text);
  // What the evidence says now, when the latch or a hold makes the verdict say otherwise.
  const currentNote = (site) =>
    site.current && site.current !== site.verdict
      ? el("span", { class: "current muted" }, " evidence now: ",
        el("span", { class: "badge " + oneOf(VERDICTS, site.current, "v-") }, site.current))
      : null;
  function siteFlags(site) {
    const states = Object.values((site.quorum && site.quorum.vantages) || {});
    return [
      site.total_outage ? flagBadge("total_outage", "total outage") : null,
      site.flapping ? flagBadge("flapping", "flapping") : null,
      states.includes("recovering") ? flagBadge("recovering", "recovering") : null,
    ];
  }
  const okBadge = (ok, reason) =>
    el("span", { class: "badge ok-" + (ok ? "true" : "false") },
      ok ? "ok" : "failed" + (reason ? " [" + reason + "]" : ""));

  const agentNow = () => Date.now() / 1000 + skew;
  const isTime = (ts) => typeof ts === "number" && isFinite(ts) && ts > 0;
  function duration(seconds) {
    const s = Math.max(0, Math.round(seconds));
    if (s < 120) return s + "s";
    const and = (n, unit) => (n ? " " + n + unit : "");
    if (s < 3600) return Math.floor(s / 60) + "m" + and(s % 60, "s");
    if (s < 172800) return Math.floor(s / 3600) + "h" + and(Math.floor((s % 3600) / 60), "m");
    return Math.floor(s / 86400) + "d";
  }
  // Live relative times, redrawn every second by tick(): "3m 2s ago", "in 1h 59m", "3m 2s".
  function relText(ts, mode) {
    if (!isTime(ts)) return mode === "ago" ? "never" : "?";
    if (mode === "in") return "in " + duration(ts - agentNow());
    if (mode === "for") return duration(agentNow() - ts);
    return duration(agentNow() - ts) + " ago";
  }
  const ageText = (ts) => relText(ts, "ago");
  const rel = (ts, mode) => el("span", { class: "rel", ts: ts, "data-rel": mode }, relText(ts, mode));
  const ago = (ts) => rel(ts, "ago");
  // Wall-clock times in UTC: the agents of one deployment sit in different time zones.
  function clock(ts) {
    if (!isTime(ts)) return "?";
    const iso = new Date(ts * 1000).toISOString();
    const today = new Date(agentNow() * 1000).toISOString().slice(0, 10);
    return iso.slice(0, 10) === today
      ? iso.slice(11, 19) + " UTC"
      : iso.slice(0, 10) + " " + iso.slice(11, 16) + " UTC";
  }
  const code = (text) => el("code", {}, text);
  function seconds(value) {
    if (typeof value !== "number" || !isFinite(value)) return "—";
    if (value < 1) return Number((value * 1000).toFixed(value < 0.01 ? 1 : 0)) + " ms";
    return Number(value.toFixed(value < 10 ? 2 : 1)) + " s";
  }
  const table = (head, rows) =>
    el("div", { class: "scroll" },
      el("table", {},
        el("thead", {}, el("tr", {}, head.map((h) => el("th", { scope: "col" }, h)))),
        el("tbody", {}, rows)));
  function facts(object) {
    if (!object || typeof object !== "object" || Object.keys(object).length === 0) return null;
    return el("details", {}, el("summary", {}, "facts"),
      el("pre", { class: "facts" }, JSON.stringify(object, null, 1)));
  }
  const empty = (text) => el("p", { class: "empty" }, text);

  // The facts an operator looks for first (where DNS points, when a certificate expires).
  function highlights(f) {
    if (!f || typeof f !== "object") return null;
    const list = (v) => (Array.isArray(v) ? v.map(String).join(", ") : String(v));
    const parts = [];
    if (Array.isArray(f.resolved_sites) && f.resolved_sites.length) {
      parts.push("resolves to " + list(f.resolved_sites));
    }
    if (Array.isArray(f.answers) && f.answers.length) parts.push("answers " + list(f.answers));
    if (typeof f.ttl === "number") parts.push("TTL " + f.ttl + " s");
    if (typeof f.days_left === "number") {
      parts.push("certificate expires in " + Math.floor(f.days_left) + " days" +
        (f.not_after ? " (" + f.not_after + ")" : ""));
    }
    if (Array.isArray(f.warnings) && f.warnings.length) parts.push("warnings: " + list(f.warnings));
    return parts.length ? el("div", { class: "detail" }, parts.join(" · ")) : null;
  }

  function vantagesOf(sites, self) {
    const names = new Set();
    for (const site of Object.values(sites)) {
      for (const v of Object.keys((site.quorum && site.quorum.vantages) || {})) names.add(v);
    }
    const rest = [...names].filter((n) => n !== self).sort();
    return names.has(self) ? [self, ...rest] : rest;
  }

  function renderMatrix(verdict) {
    const sites = verdict.sites || {};
    const vantages = vantagesOf(sites, verdict.vantage);
    const head = el("tr", {}, el("th", { scope: "col" }, "Site"), el("th", { scope: "col" }, "Role"),
      el("th", { scope: "col" }, "Verdict"),
      vantages.map((v) => el("th", { scope: "col", class: "vantage" }, v === verdict.vantage ? v + " (here)" : v)),
      el("th", { scope: "col" }, "Quorum"));
    const rows = Object.entries(sites).map(([name, site]) => {
      const quorum = site.quorum || {};
      const states = quorum.vantages || {};
      return el("tr", { "data-site": name },
        el("th", { scope: "row", class: "site-name" }, name),
        el("td", {}, site.role || ""),
        el("td", {}, verdictBadge(site.verdict), " ", siteFlags(site), currentNote(site)),
        vantages.map((v) => el("td", { "data-vantage": v }, stateBadge(states[v]))),
        el("td", { class: "num" },
          (quorum.down ?? "?") + " down / " + (quorum.fresh ?? "?") + " fresh, " +
          (quorum.required ?? "?") + " needed"));
    });
    $("matrix").replaceChildren(el("thead", {}, head),
      el("tbody", {}, rows.length ? rows : el("tr", {}, el("td", { class: "empty" }, "No sites configured."))));
  }

  // One replica's lag against its RPO, as text and as a bar that turns red past the RPO.
  function replicationLine(label, r) {
    if (!r) return null;
    const lag = r.lag_seconds;
    const rpo = r.rpo_seconds;
    const known = typeof lag === "number" && typeof rpo === "number" && rpo > 0;
    const within = known && lag <= rpo;
    const bar = el("div", { class: "meter" + (within ? "" : " over"), role: "img",
      "aria-label": "lag " + seconds(lag) + " of RPO " + seconds(rpo) });
    bar.append(el("span", {}));
    bar.firstChild.style.width = (known ? Math.min(100, (lag / rpo) * 100) : 100).toFixed(1) + "%";
    const badge = known
      ? el("span", { class: "badge ok-" + within }, within ? "within RPO" : "over RPO")
      : el("span", { class: "badge" }, "lag unknown");
    return el("div", { class: "replication" },
      el("p", {}, label, ": lag ", seconds(lag), " against RPO ", seconds(rpo), " ", badge,
        r.streaming === false ? " · not streaming" : "",
        r.split_brain ? " · SPLIT BRAIN: the replica is writable" : ""),
      bar);
  }

  // A latched failover: where to, since when, and how it ends (the failback policy).
  function latchBlock(name, site) {
    const latch = site.latch;
    if (!latch) return null;
    const failback = site.failback || {};
    let hint;
    if (failback.policy === "auto") {
      const stable = Number(failback.stable_for) || 0;
      const up = isTime(failback.up_since) ? Math.max(0, agentNow() - failback.up_since) : null;
      const bar = el("div", { class: "meter", role: "img", "aria-label": "stable " +
        (up === null ? "not yet" : duration(up)) + " of " + duration(stable) });
      bar.append(el("span", {}));
      bar.firstChild.style.width = (up === null || stable <= 0 ? 0 : Math.min(100, (up / stable) * 100)).toFixed(1) + "%";
      hint = [el("p", { class: "hint", "data-hint": "failback" },
        el("strong", {}, "Failback is automatic"), " once " + name + " has been up in a quorum of views for " +
          duration(stable) + ": ",
        up === null
          ? "it is not up in a quorum of views yet."
          : ["up for ", rel(failback.up_since, "for"), " so far."]), bar];
    } else {
      hint = el("p", { class: "hint", "data-hint": "failback" },
        el("strong", {}, "Failback is manual:"), " when " + name + " is ready, run ",
        code("failsight failback " + name), ".");
    }
    return el("div", { class: "control latch" },
      el("p", { class: "latch-line" }, el("strong", {}, "Failed over to " + (latch.target || "a standby")),
        " at " + clock(latch.at) + " (", ago(latch.at), "), latched by " + (latch.by || "?") +
        ": its health endpoint answers 503 until failback."),
      hint);
  }

  // A hold: who, until when and why, and how it ends.
  function holdBlock(name, site) {
    const hold = site.hold;
    if (!hold) return null;
    const fromConfig = hold.source === "maintenance";
    return el("div", { class: "control held" },
      el("p", { class: "hold-line" }, el("strong", {}, "Held by " + (hold.by || "?")),
        " until " + clock(hold.until) + " (", rel(hold.until, "in"), ")" +
        (hold.reason ? ": " + hold.reason : "") +
        (site.latch ? " (noted: it is already failed over)" : ". It is never failed over while held.")),
      el("p", { class: "hint", "data-hint": "lift" }, fromConfig
        ? ["A maintenance window from the config: it ends by itself; to end it sooner, edit ",
          code("maintenance:"), " in the config."]
        : ["Lift it early with ", code("failsight hold " + name + " --lift"), "."]));
  }

  function renderSites(verdict) {
    const cards = Object.entries(verdict.sites || {}).map(([name, site]) => {
      const view = site.view || {};
      const reasons = site.reasons || [];
      return el("article", { class: "card site", "data-site": name },
        el("div", { class: "card-head" }, el("h3", {}, name),
          el("span", { class: "muted" }, site.role || ""), verdictBadge(site.verdict), siteFlags(site),
          currentNote(site)),
        el("p", { class: "muted" }, "verdict since ", ago(site.since),
          "; seen from here: ", stateBadge(view.state), " since ", ago(view.since)),
        latchBlock(name, site),
        holdBlock(name, site),
        site.failover_target && !site.latch
          ? el("p", {}, "Fail over to ", el("strong", {}, site.failover_target)) : null,
        site.replication
          ? replicationLine("Replication " + (site.replication.cluster || "?") + " to " +
            (site.replication.replica_site || "?"), site.replication)
          : null,
        reasons.length
          ? el("ul", { class: "reasons" }, reasons.map((r) => el("li", {}, r)))
          : el("p", { class: "reasons empty" }, "No reasons to report."));
    });
    $("sites").replaceChildren(...(cards.length ? cards : [empty("No sites configured.")]));
  }

  function stepRow(step, cleanup) {
    const status = step.skipped ? el("span", { class: "badge" }, "skipped") : okBadge(step.ok, step.reason);
    return el("tr", { class: cleanup ? "cleanup" : "step", "data-step": step.name },
      el("td", {}, step.name),
      el("td", {}, status),
      el("td", { class: "num" }, step.status ?? "—"),
      el("td", { class: "num" }, step.skipped ? "—" : seconds(step.duration_seconds),
        step.attempts > 1 ? " (" + step.attempts + " tries)" : ""),
      el("td", {}, step.message || ""));
  }

  function renderResults(results, dependencies) {
    const all = Object.values(results || {});
    const journeys = all.filter((r) => r.kind === "journey");
    const cards = journeys.map((r) =>
      el("article", { class: "card journey", "data-check": r.check },
        el("div", { class: "card-head" }, el("h3", {}, r.target),
          el("span", { class: "muted" }, "at " + (r.site || "?")), okBadge(r.ok, r.reason)),
        el("p", { class: "muted" }, "ran ", ago(r.started_at), ", took ", seconds(r.duration_seconds)),
        r.message ? el("p", {}, r.message) : null,
        table(["Step", "Result", "HTTP", "Time", "Message"],
          [...(r.steps || []).map((s) => stepRow(s, false)),
           ...(r.cleanup || []).map((s) => stepRow(s, true))])));
    $("journeys").replaceChildren(...(cards.length ? cards : [empty("No journey has run yet.")]));

    const replication = all.filter((r) => r.kind === "replication");
    const blocks = replication.map((r) => {
      const f = r.facts || {};
      const replicas = Array.isArray(f.replicas) ? f.replicas : [];
      return el("article", { class: "card" },
        el("div", { class: "card-head" }, el("h3", {}, f.cluster || r.target),
          el("span", { class: "muted" }, "primary " + (f.primary_site || r.site || "?")), okBadge(r.ok, r.reason)),
        el("p", { class: "muted" }, "checked ", ago(r.started_at)),
        r.message ? el("p", {}, r.message) : null,
        replicas.map((rep) => replicationLine(
          "Replica " + (rep.replica || "?") + (rep.site && rep.site !== rep.replica ? " at " + rep.site : ""),
          { lag_seconds: rep.lag_seconds, rpo_seconds: f.rpo_seconds, streaming: rep.streaming,
            split_brain: rep.split_brain })),
        facts(f));
    });
    $("replication").replaceChildren(blocks.length ? el("div", { class: "cards" }, blocks)
      : empty("No replication check configured, or none has run yet."));
    // Whatever is neither a journey, a replication check nor listed as a dependency.
    const listed = new Set(Object.values(dependencies || {}).flat().map((d) => d.check));
    return all.filter((r) => !["journey", "replication"].includes(r.kind) && !listed.has(r.check));
  }

  function renderDependencies(dependencies) {
    const groups = Object.keys(dependencies || {}).map((key) => [key, DEPENDENCY_TITLES[key] || key]);
    const parts = groups.map(([key, title]) => {
      const list = (dependencies && dependencies[key]) || [];
      return el("div", { class: "dependency", "data-kind": key },
        el("h3", {}, title),
        list.length
          ? table(["Check", "Target", "State", "Message", "Checked"], list.map((d) =>
            el("tr", { "data-check": d.check },
              el("td", {}, d.check), el("td", {}, d.target),
              el("td", {}, okBadge(d.ok, d.reason)),
              el("td", {}, d.message || "", highlights(d.facts), facts(d.facts)),
              el("td", { class: "num" }, ago(d.checked_at)))))
          : empty("None configured, or not run yet."));
    });
    $("dependencies").replaceChildren(...parts);
  }

  function renderPeers(verdict, others) {
    const peers = Object.entries(verdict.peers || {});
    const parts = [];
    parts.push(peers.length
      ? table(["Peer", "Last view received", "Error"], peers.map(([name, p]) =>
        el("tr", { "data-peer": name }, el("td", {}, name), el("td", { class: "num" }, ago(p.fetched_at)),
          el("td", {}, p.error ? okBadge(false, null) : "", p.error ? " " + p.error : ""))))
      : empty("No peers configured: this vantage judges alone."));
    if (others.length) {
      parts.push(table(["Check", "Kind", "State", "Message", "Ran"], others.map((r) =>
        el("tr", { "data-check": r.check }, el("td", {}, r.check), el("td", {}, r.kind),
          el("td", {}, okBadge(r.ok, r.reason)), el("td", {}, r.message || "", facts(r.facts)),
          el("td", { class: "num" }, ago(r.started_at))))));
    }
    $("peers").replaceChildren(...parts);
  }

  // The agents of this vantage sharing its checks (agent.group): who answers, who runs what.
  function renderGroup(verdict) {
    const group = verdict.group;
    $("group-section").hidden = !group;
    if (!group) return;
    const members = group.members || [];
    const lead = el("p", {},
      `${group.live_members} of ${members.length} listed member(s) answer; this is ${group.member}. `,
      group.partial ? okBadge(false, null) : okBadge(true, null),
      group.partial ? " partial: a member or a site's evidence is missing" : " complete");
    $("group").replaceChildren(lead, members.length
      ? table(["Member", "State", "Checks", "Sites", "Heard from", "Error"], members.map((m) =>
        el("tr", { "data-member": m.name || m.url || "" },
          el("td", {}, (m.name || "?") + (m.self ? " (this one)" : ""), el("br"), m.url || ""),
          el("td", {}, m.state), el("td", { class: "num" }, m.checks_owned == null ? "" : String(m.checks_owned)),
          el("td", {}, (m.sites || []).join(", ")), el("td", { class: "num" }, ago(m.age_seconds == null ? null : agentNow() - m.age_seconds)),
          el("td", {}, m.error || ""))))
      : empty("No member listed yet."));
  }

  // Sites whose traffic must go (or stay) elsewhere, and a total outage: the red banner.
  function renderOutage(verdict) {
    const sites = Object.entries(verdict.sites || {});
    const lines = [];
    if (sites.length && sites.some(([, s]) => s.total_outage)) {
      lines.push(el("p", { "data-outage": "total" },
        "TOTAL OUTAGE: every site is down from every vantage. There is no healthy standby to fail " +
        "over to: check the shared dependencies (identity provider, DNS) and the cloud providers."));
    }
    for (const [name, s] of sites) {
      if (s.verdict === "failed_over") {
        const latch = s.latch || {};
        lines.push(el("p", { "data-outage": name },
          name + " failed over to " + (latch.target || s.failover_target || "a standby") + " at " +
          clock(latch.at) + " (latched): its health endpoint answers 503 until failback."));
      } else if (s.verdict === "failover_recommended") {
        lines.push(el("p", { "data-outage": name }, name + ": failover to " +
          (s.failover_target || "a standby") + " recommended."));
      }
    }
    // Replaced only when it says something new: screen readers announce every change.
    const banner = $("outage");
    const text = lines.map((p) => p.textContent).join("\n");
    if (text !== banner.dataset.text) {
      banner.dataset.text = text;
      banner.replaceChildren(...lines);
    }
    banner.hidden = lines.length === 0;
  }

  // --- the last hour ------------------------------------------------------------------------

  const TL_VERDICT = "verdict";
  // The page can zoom into the end of the hour the agent keeps (?window=15 for minutes).
  const ZOOMS = [60, 15, 5];
  let zoomMinutes = ZOOMS.includes(Number(params.get("window"))) ? Number(params.get("window")) : 60;
  let timelineDrawn = { signature: null, now: 0 };

  function renderLegend() {
    const key = (word) => el("span", { class: "key" }, el("i", { class: "sw t-" + word }), word);
    const tick = (kind) => el("span", { class: "key" }, el("i", { class: "sw tick-key k-" + kind }), kind);
    $("legend").replaceChildren(
      el("span", {}, el("strong", {}, "verdict:"), " ", VERDICTS.map(key)),
      el("span", {}, el("strong", {}, "vantage:"), " ",
        ["up", "degraded", "down", "recovering", "stale", "impaired"].map(key)),
      el("span", {}, el("strong", {}, "marks:"), " ", ACTION_KINDS.map(tick)),
      el("span", {}, el("i", { class: "sw gap" }), "no data"));
  }

  function renderZoom() {
    $("zoom").replaceChildren(...ZOOMS.map((minutes) => {
      const button = el("button", { type: "button", "aria-pressed": String(minutes === zoomMinutes),
        "data-minutes": minutes }, minutes === 60 ? "1 h" : minutes + " min");
      button.addEventListener("click", () => {
        zoomMinutes = minutes;
        timelineDrawn = { signature: null, now: 0 };
        renderZoom();
        if (data.verdict && data.timeline) maybeRenderTimeline(data.verdict, data.timeline);
      });
      return button;
    }));
  }

  // [{from, to, state}] for one band: each point holds until the next, clipped to the window.
  function segments(points, stateOf, start, end) {
    const out = [];
    points.forEach((p, i) => {
      const from = Math.max(Number(p.at), start);
      const to = Math.min(i + 1 < points.length ? Number(points[i + 1].at) : end, end);
      const state = stateOf(p);
      if (!state || !(to >= from)) return;
      const last = out[out.length - 1];
      if (last && last.state === state && last.to >= from) last.to = to;
      else out.push({ from, to, state });
    });
    return out;
  }

  function band(label, list, axis, known, since, verdictBand) {
    const { start, end, span, pct } = axis;
    const node = el("div", { class: "band" + (verdictBand ? " verdict-band" : ""), role: "img",
      "aria-label": label + ": " + (list.length
        ? list.map((s) => s.state + " from " + clock(s.from)).join(", ") : "no data") });
    // Before the agent's first record (it started within the window): nothing is known.
    const first = isTime(since) ? since : end;
    if (first > start) {
      const gap = el("span", { class: "gap", title: "no data before " + clock(first) +
        " (the agent was not running)" });
      gap.style.left = "0%";
      gap.style.width = pct(first).toFixed(3) + "%";
      node.append(gap);
    }
    for (const s of list) {
      const seg = el("span", {
        class: "seg " + oneOf(known, s.state, "t-") + (s.to - s.from < span / 200 ? " short" : ""),
        "data-state": s.state,
        title: label + ": " + s.state + " from " + clock(s.from) + " to " +
          (s.to >= end ? "now" : clock(s.to)) + " (" + duration(s.to - s.from) + ")",
      });
      seg.style.left = pct(s.from).toFixed(3) + "%";
      seg.style.width = (pct(s.to) - pct(s.from)).toFixed(3) + "%";
      node.append(seg);
    }
    return node;
  }

  function actionText(a) {
    return a.kind + " by " + (a.by || "?") + (a.target ? " to " + a.target : "") +
      (isTime(a.until) ? " until " + clock(a.until) : "") + (a.reason ? ": " + a.reason : "");
  }

  function siteTimeline(name, points, actions, vantages, here, axis) {
    const seen = new Set(vantages);
    for (const p of points) for (const v of Object.keys(p.vantages || {})) seen.add(v);
    const since = points.length ? Number(points[0].at) : null;
    const bands = [[TL_VERDICT, "verdict",
      band("verdict", segments(points, (p) => p.verdict, axis.start, axis.end), axis, VERDICTS, since, true)]];
    for (const v of seen) {
      bands.push([v, v === here ? v + " (here)" : v, band(v,
        segments(points, (p) => (p.vantages || {})[v], axis.start, axis.end), axis, STATES, since, false)]);
    }
    // A mark per action: a dot in its own lane above the bands, a line down through them.
    const ticks = el("div", { class: "tl-ticks" }, actions.filter((a) => a.at >= axis.start).map((a) => {
      const text = clock(a.at) + " " + actionText(a);
      const node = el("span", { class: "tick " + oneOf(ACTION_KINDS, a.kind, "k-"), tabindex: 0,
        "data-kind": a.kind, title: text, "aria-label": text });
      node.style.left = axis.pct(a.at).toFixed(3) + "%";
      return node;
    }));
    // A label every 15, 5 or 1 minutes back from now; every other one hidden on a phone.
    const step = axis.span >= 3600 ? 900 : axis.span >= 900 ? 300 : 60;
    const count = Math.floor(axis.span / step + 1e-9);
    const labels = el("div", { class: "axis" }, Array.from({ length: count + 1 }, (_, i) => {
      const back = (count - i) * step;
      const label = el("span", { class: back % (2 * step) && count > 2 ? "q" : null },
        back === 0 ? "now" : "-" + Number((back / 60).toFixed(1)) + "m");
      label.style.left = (100 - (back / axis.span) * 100).toFixed(3) + "%";
      return label;
    }));
    // Explicit grid cells: the marks lane, a label and a band per row, the marks over every
    // band, the axis.
    const place = (node, column, row) => {
      node.style.gridColumn = column;
      node.style.gridRow = row;
      return node;
    };
    const grid = el("div", { class: "tl-grid" },
      place(el("div", { class: "tl-label" }, actions.length ? "marks" : ""), "1", "1"),
      bands.map(([key, label, node], i) => {
        node.dataset.band = key;
        return [
          place(el("div", { class: "tl-label" + (key === TL_VERDICT ? " verdict-label" : "") }, label),
            "1", String(i + 2)),
          place(node, "2", String(i + 2)),
        ];
      }),
      place(ticks, "2", "1 / span " + (bands.length + 1)),
      place(labels, "2", String(bands.length + 2)));
    const recent = actions.slice().reverse();
    return el("article", { class: "card tl", "data-site": name },
      el("h3", {}, name),
      grid,
      recent.length
        ? el("ul", { class: "tl-actions" }, recent.map((a) =>
          el("li", { "data-kind": a.kind }, clock(a.at) + " ", el("span", { class: "kind" }, a.kind),
            actionText(a).slice(a.kind.length))))
        : el("p", { class: "empty tl-actions" }, "No failover, failback or hold in the last hour."));
  }

  function renderTimeline(verdict, timeline) {
    const end = Number(timeline.now);
    const kept = Number(timeline.window_seconds);
    if (!(end > 0 && kept > 0)) return;
    const span = Math.min(kept, zoomMinutes * 60);
    const start = end - span;
    const axis = { start, end, span, pct: (t) => Math.min(100, Math.max(0, ((t - start) / span) * 100)) };
    const series = timeline.sites || {};
    const names = Object.keys(verdict.sites || {});
    for (const name of Object.keys(series)) if (!names.includes(name)) names.push(name);
    // The list under each timeline keeps the whole hour, whatever the zoom.
    const actions = (Array.isArray(timeline.actions) ? timeline.actions : [])
      .filter((a) => isTime(a.at) && a.at >= end - kept)
      .sort((a, b) => a.at - b.at);
    const vantages = vantagesOf(verdict.sites || {}, verdict.vantage);
    const blocks = names.map((name) => siteTimeline(name,
      Array.isArray(series[name]) ? series[name] : [], actions.filter((a) => a.site === name),
      vantages, verdict.vantage, axis));
    $("timeline").replaceChildren(...(blocks.length ? blocks : [empty("No sites configured.")]));
  }

  // Redrawn when something changed, and as time slides on; not on every refresh, so that a
  // tooltip being read does not vanish every few seconds.
  function maybeRenderTimeline(verdict, timeline) {
    if (!timeline) return;
    const signature = JSON.stringify([Object.keys(verdict.sites || {}), verdict.vantage,
      timeline.sites, timeline.actions, timeline.window_seconds]);
    const span = Math.min(Number(timeline.window_seconds), zoomMinutes * 60);
    const slid = Number(timeline.now) - timelineDrawn.now >= span / 360;
    if (signature === timelineDrawn.signature && !slid) return;
    timelineDrawn = { signature, now: Number(timeline.now) };
    renderTimeline(verdict, timeline);
  }

  function render() {
    const verdict = data.verdict;
    if (!verdict) return;
    $("vantage").replaceChildren("vantage ", el("strong", {}, verdict.vantage || "?"));
    renderOutage(verdict);
    renderMatrix(verdict);
    maybeRenderTimeline(verdict, data.timeline);
    renderSites(verdict);
    const others = data.results ? renderResults(data.results, verdict.dependencies) : [];
    renderDependencies(verdict.dependencies);
    renderPeers(verdict, others);
    renderGroup(verdict);
    const worst = Object.entries(verdict.sites || {})
      .filter(([, s]) => s.verdict !== "healthy")
      .map(([name, s]) => s.verdict + " " + name);
    document.title = (worst.length ? worst.join(", ") : "all healthy") + " · failsight";
  }

  function tick() {
    for (const node of document.querySelectorAll(".rel")) {
      node.textContent = relText(Number(node.dataset.ts), node.dataset.rel);
    }
    const parts = ["verdict generated ", ago(data.verdict ? data.verdict.generated_at : null),
      " · refreshing every " + REFRESH_SECONDS + " s"];
    if (document.body.classList.contains("stale")) {
      parts.push(" · ", el("span", { class: "stale-note" }, "STALE"));
    }
    $("freshness").replaceChildren(...parts);
  }

  async function getJson(path) {
    const response = await fetch(new URL(path, document.baseURI), {
      cache: "no-store",
      headers: { Accept: "application/json" },
      signal: AbortSignal.timeout(FETCH_TIMEOUT_MS),
    });
    if (!response.ok) throw new Error(path + ": HTTP " + response.status);
    return response.json();
  }

  function describe(error, path) {
    const text = error && error.name === "TimeoutError" ? "no answer within " +
      Math.round(FETCH_TIMEOUT_MS / 1000) + " s" : String((error && error.message) || error);
    return text.startsWith(path) ? text : path + ": " + text;
  }

  async function refresh() {
    const sent = Date.now() / 1000;
    const [verdict, results, timeline] = await Promise.allSettled(
      [getJson("v1/verdict"), getJson("v1/results"), getJson("v1/timeline")]);
    const failures = [];
    if (verdict.status === "fulfilled") {
      data.verdict = verdict.value;
      // Halfway through the round trip is the best guess of when the agent stamped it.
      const received = Date.now() / 1000;
      if (typeof data.verdict.generated_at === "number") {
        skew = data.verdict.generated_at - (sent + received) / 2;
      }
    } else {
      failures.push(describe(verdict.reason, "v1/verdict"));
    }
    if (results.status === "fulfilled") data.results = results.value;
    else failures.push(describe(results.reason, "v1/results"));
    if (timeline.status === "fulfilled") data.timeline = timeline.value;
    else failures.push(describe(timeline.reason, "v1/timeline"));

    const banner = $("banner");
    if (failures.length) {
      document.body.classList.add("stale");
      banner.replaceChildren(
        "Cannot reach the failsight API (" + failures.join("; ") + "). ",
        data.verdict
          ? ["Showing the last data received, ", ago(lastSuccess), ", marked stale. "]
          : "No data received yet. ",
        "Retrying every " + REFRESH_SECONDS + " s.");
      banner.hidden = false;
    } else {
      lastSuccess = Date.now() / 1000 + skew;
      document.body.classList.remove("stale");
      banner.hidden = true;
      banner.replaceChildren();
      refreshes += 1;
      document.documentElement.dataset.refreshes = String(refreshes);
    }
    render();
    tick();
  }

  async function loop() {
    try {
      await refresh();
    } catch (error) {
      // A rendering bug must not stop the page from polling: say so and keep going.
      console.error("failsight status page:", error);
    }
    setTimeout(loop, REFRESH_SECONDS * 1000);
  }

  renderLegend();
  renderZoom();
  setInterval(tick, 1000);
  loop();
})();
