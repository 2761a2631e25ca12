// Satu Pintu operations dashboard: polls /ops/api every 2 s and updates the page in place.
// Plain JavaScript, no build step; text goes in through textContent only.
(function () {
  "use strict";
  var POLL_MS = 2000;

  function getJSON(url) {
    return fetch(url, { credentials: "same-origin", headers: { "Accept": "application/json" } })
      .then(function (r) {
        if (r.status === 401) { window.location = "/ops/login?next=" + encodeURIComponent(location.pathname); }
        if (!r.ok) { throw new Error(url + ": " + r.status); }
        return r.json();
      });
  }

  function el(tag, attrs, text) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) { node.setAttribute(k, attrs[k]); });
    if (text !== undefined && text !== null) { node.textContent = String(text); }
    return node;
  }

  function chip(status, label, title) {
    var span = el("span", { "class": "chip s-" + (status || "none") }, label === undefined ? status : label);
    if (title) { span.title = title; }
    return span;
  }

  function lookup(obj, path) {
    return path.split(".").reduce(function (o, k) { return o === null || o === undefined ? o : o[k]; }, obj);
  }

  function every(fn) { fn(); return setInterval(fn, POLL_MS); }

  // --- times: the hall's time zone, to the second, UTC on hover (as the server renders them)
  var ZONE = document.body.getAttribute("data-timezone") || "UTC";
  var LOCAL = new Intl.DateTimeFormat("sv-SE", { timeZone: ZONE, year: "numeric", month: "2-digit", day: "2-digit",
    hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false });
  var UTC = new Intl.DateTimeFormat("sv-SE", { timeZone: "UTC", year: "numeric", month: "2-digit", day: "2-digit",
    hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false });

  function timeEl(iso) {
    if (!iso) { return document.createTextNode("–"); }
    var at = new Date(iso);
    return el("time", { "datetime": iso, "title": UTC.format(at) + " UTC" }, LOCAL.format(at));
  }

  function clock(iso) { return iso ? LOCAL.format(new Date(iso)).slice(11) : "–"; }

  function post(url, body) {
    return fetch(url, { method: "POST", credentials: "same-origin", body: body === undefined ? undefined : JSON.stringify(body),
      headers: { "Accept": "application/json", "Content-Type": "application/json" } })
      .then(function (r) { return r.json().then(function (doc) { return { ok: r.ok, doc: doc }; }); });
  }

  // --- overview: counters and recent applications -------------------------------------
  function appRow(a) {
    var tr = el("tr", { "data-id": a.id, "data-status": a.status });
    var link = el("a", { "href": "/ops/applications/" + encodeURIComponent(a.id), "class": "mono" }, a.id);
    var td = el("td"); td.appendChild(link); tr.appendChild(td);
    tr.appendChild(el("td", {}, a.service));
    tr.appendChild(el("td", {}, a.reference || "–"));
    td = el("td"); td.appendChild(chip(a.status)); tr.appendChild(td);
    td = el("td"); var chips = el("span", { "class": "chips" });
    a.steps.forEach(function (s) {
      if (s.retry) {
        chips.appendChild(chip("retrying", s.step, s.step + " (" + s.agency + "): retrying, next attempt at " +
          clock(s.retry.next_attempt_at) + " (" + s.retry.reason + ")"));
      } else {
        chips.appendChild(chip(s.status, s.step, s.step + " (" + s.agency + "): " + s.status));
      }
    });
    td.appendChild(chips); tr.appendChild(td);
    td = el("td", { "class": "mono" }); td.appendChild(timeEl(a.created_at)); tr.appendChild(td);
    return tr;
  }

  function overview() {
    every(function () {
      getJSON("/ops/api/overview").then(function (data) {
        document.querySelectorAll("[data-counter]").forEach(function (node) {
          var value = lookup(data, node.getAttribute("data-counter"));
          var bool = node.getAttribute("data-bool");
          if (bool) { value = value ? bool.split("|")[0] : bool.split("|")[1]; }
          node.textContent = value === null || value === undefined ? "–" : String(value);
        });
        var at = document.getElementById("updated-at"); if (at) { at.replaceChildren(timeEl(data.at)); }
      }).catch(function () {});
      var recent = document.querySelector("#recent tbody");
      if (recent) {
        getJSON("/ops/api/applications?limit=15").then(function (data) {
          recent.replaceChildren.apply(recent, data.items.map(appRow));
        }).catch(function () {});
      }
    });
  }

  // --- agencies: numbers in place -----------------------------------------------------
  function formatted(value, format) {
    if (value === null || value === undefined) { return "–"; }
    if (format === "percent") { return (value * 100).toFixed(1) + " %"; }
    if (format === "ms") { return value < 10000 ? Math.round(value) + " ms" : (value / 1000).toFixed(1) + " s"; }
    return String(value);
  }

  function agencies() {
    every(function () {
      getJSON("/ops/api/agencies").then(function (data) {
        data.items.forEach(function (a) {
          var row = document.querySelector('tr[data-agency="' + CSS.escape(a.id) + '"]');
          if (!row) { return; }
          row.querySelectorAll("[data-field]").forEach(function (cell) {
            cell.textContent = formatted(a[cell.getAttribute("data-field")], cell.getAttribute("data-format"));
            var level = cell.getAttribute("data-level-field");
            if (level) { cell.className = cell.getAttribute("data-level-class") + a[level]; }
          });
        });
      }).catch(function () {});
    });
  }

  // --- dead letters: live list and one-click replay -----------------------------------
  function deadRow(d) {
    var tr = el("tr", { "data-id": d.id });
    tr.appendChild(el("td", {}, d.id));
    var when = el("td", { "class": "mono" }); when.appendChild(timeEl(d.created_at)); tr.appendChild(when);
    tr.appendChild(el("td", {}, d.agency));
    tr.appendChild(el("td", {}, d.step || "–"));
    var td = el("td");
    td.appendChild(el("a", { "class": "mono", "href": "/ops/applications/" + encodeURIComponent(d.application_id) }, d.application_id));
    tr.appendChild(td);
    tr.appendChild(el("td", {}, d.attempts));
    tr.appendChild(el("td", { "class": "reason" }, d.what_happened));
    td = el("td"); td.appendChild(el("button", { "type": "button", "class": "replay", "data-replay": d.id }, "Replay"));
    tr.appendChild(td);
    return tr;
  }

  function deadLetters() {
    var body = document.querySelector("#dead-letters tbody");
    every(function () {
      getJSON("/ops/api/dead-letters" + filterQuery()).then(function (data) {
        if (!data.items.length) {
          var tr = el("tr", { "class": "empty" }); tr.appendChild(el("td", { "colspan": "8" }, "No open dead letters."));
          body.replaceChildren(tr);
        } else {
          body.replaceChildren.apply(body, data.items.map(deadRow));
        }
      }).catch(function () {});
    });
  }

  function filterQuery() {
    var form = document.getElementById("bulk-replay");
    var query = new URLSearchParams();
    ["agency", "reason"].forEach(function (k) { if (form && form.dataset[k]) { query.set(k, form.dataset[k]); } });
    var text = query.toString();
    return text ? "?" + text : "";
  }

  // --- bulk replay: a dry run with counts, then the replay at a rate, each message's result
  function bulkReplay(form) {
    var plan = null;
    var status = document.getElementById("replay-status");
    var section = document.getElementById("bulk-plan");
    var confirm = document.getElementById("bulk-confirm");
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      post("/ops/api/dead-letters/replay", { agency: form.dataset.agency || null, reason: form.dataset.reason || null,
        dry_run: true }).then(function (res) {
        if (!res.ok) { status.textContent = "Dry run failed: " + (res.doc.detail || "error"); return; }
        plan = res.doc;
        document.getElementById("bulk-summary").textContent = "Dry run: " + plan.would_replay +
          " dead letter(s) would be replayed at " + form.elements.rate.value + " per second.";
        var list = document.getElementById("bulk-by-agency");
        list.replaceChildren.apply(list, Object.keys(plan.by_agency).sort().map(function (agency) {
          return el("li", { "data-agency": agency }, agency + ": " + plan.by_agency[agency]);
        }));
        confirm.textContent = "Replay " + plan.would_replay + " now";
        confirm.disabled = plan.would_replay === 0;
        section.hidden = false;
      });
    });
    confirm.addEventListener("click", function () {
      if (!plan || !form.reportValidity()) { return; }
      confirm.disabled = true;
      status.textContent = "Replaying " + plan.ids.length + " dead letter(s), then checking each one went through…";
      post("/ops/api/dead-letters/replay", { ids: plan.ids, dry_run: false, why: form.elements.why.value,
        rate: parseFloat(form.elements.rate.value) }).then(function (res) {
        if (!res.ok) { status.textContent = "Replay failed: " + (res.doc.detail || "error"); confirm.disabled = false; return; }
        var counts = res.doc.counts;
        status.textContent = "Bulk replay by " + res.doc.by + ": " + Object.keys(counts).sort().map(function (k) {
          return counts[k] + " " + k; }).join(", ") + ".";
        var table = document.getElementById("bulk-results");
        var body = table.querySelector("tbody");
        body.replaceChildren.apply(body, res.doc.results.map(function (r) {
          var tr = el("tr", { "data-id": r.id, "data-result": r.result });
          tr.appendChild(el("td", {}, r.id));
          tr.appendChild(el("td", {}, r.agency));
          var td = el("td");
          td.appendChild(el("a", { "class": "mono", "href": "/ops/applications/" + encodeURIComponent(r.application_id) }, r.application_id));
          tr.appendChild(td);
          tr.appendChild(el("td", { "class": "result" }, r.result));
          tr.appendChild(el("td", {}, r.status || ""));
          tr.appendChild(el("td", {}, r.detail || ""));
          return tr;
        }));
        res.doc.results.forEach(function (r) {  // replayed: no longer open
          var row = document.querySelector('#dead-letters tr[data-id="' + r.id + '"]'); if (row) { row.remove(); }
        });
        table.hidden = false;
        section.hidden = true;
        plan = null;
      });
    });
  }

  function replay(button) {
    var id = button.getAttribute("data-replay");
    var status = document.getElementById("replay-status");
    button.disabled = true;
    fetch("/ops/api/dead-letters/" + encodeURIComponent(id) + "/replay", {
      method: "POST", credentials: "same-origin", headers: { "Accept": "application/json" }
    }).then(function (r) {
      return r.json().then(function (doc) { return { ok: r.ok, doc: doc }; });
    }).then(function (res) {
      if (status) { status.textContent = res.ok ? "Dead letter " + id + " replayed." : "Replay of " + id + " failed: " + (res.doc.detail || "error"); }
      if (res.ok) { var row = button.closest("tr"); if (row) { row.remove(); } } else { button.disabled = false; }
    }).catch(function (err) {
      if (status) { status.textContent = "Replay of " + id + " failed: " + err; }
      button.disabled = false;
    });
  }

  // --- application: reload when anything moved -----------------------------------------
  function application(id, state) {
    every(function () {
      getJSON("/ops/api/applications/" + encodeURIComponent(id)).then(function (doc) {
        var now = doc.status + "|" + doc.requests.map(function (r) { return r.status + ","; }).join("");
        if (now !== state) { window.location.reload(); }
      }).catch(function () {});
    });
  }

  document.addEventListener("click", function (event) {
    var button = event.target.closest && event.target.closest("button[data-replay]");
    if (button) { event.preventDefault(); replay(button); }
  });

  document.addEventListener("DOMContentLoaded", function () {
    var page = document.body.getAttribute("data-page");
    if (page === "overview") { overview(); agencies(); }
    else if (page === "agencies") { agencies(); }
    else if (page === "dead-letters") { deadLetters(); bulkReplay(document.getElementById("bulk-replay")); }
    var app = document.body.getAttribute("data-app");
    if (app) { application(app, document.body.getAttribute("data-app-state")); }
  });
})();
