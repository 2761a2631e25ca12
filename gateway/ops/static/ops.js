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

  // --- overview: counters and recent applications -------------------------------------
  function appRow(a) {
    var tr = el("tr", { "data-id": a.id, "data-status": a.status });
    var link = el("a", { "href": "/ops/applications/" + encodeURIComponent(a.id), "class": "mono" }, a.id);
    var td = el("td"); td.appendChild(link); tr.appendChild(td);
    tr.appendChild(el("td", {}, a.service));
    tr.appendChild(el("td", {}, a.reference || "–"));
    td = el("td"); td.appendChild(chip(a.status)); tr.appendChild(td);
    td = el("td"); var chips = el("span", { "class": "chips" });
    a.steps.forEach(function (s) { chips.appendChild(chip(s.status, s.step, s.step + " (" + s.agency + "): " + s.status)); });
    td.appendChild(chips); tr.appendChild(td);
    tr.appendChild(el("td", { "class": "mono" }, a.created_at));
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
        var at = document.getElementById("updated-at"); if (at) { at.textContent = data.at; }
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
          });
        });
      }).catch(function () {});
    });
  }

  // --- dead letters: live list and one-click replay -----------------------------------
  function deadRow(d) {
    var tr = el("tr", { "data-id": d.id });
    tr.appendChild(el("td", {}, d.id));
    tr.appendChild(el("td", { "class": "mono" }, d.created_at));
    tr.appendChild(el("td", {}, d.agency));
    tr.appendChild(el("td", {}, d.step || "–"));
    var td = el("td");
    td.appendChild(el("a", { "class": "mono", "href": "/ops/applications/" + encodeURIComponent(d.application_id) }, d.application_id));
    tr.appendChild(td);
    tr.appendChild(el("td", {}, d.attempts));
    tr.appendChild(el("td", { "class": "reason" }, d.reason));
    td = el("td"); td.appendChild(el("button", { "type": "button", "class": "replay", "data-replay": d.id }, "Replay"));
    tr.appendChild(td);
    return tr;
  }

  function deadLetters() {
    var body = document.querySelector("#dead-letters tbody");
    every(function () {
      getJSON("/ops/api/dead-letters").then(function (data) {
        if (!data.items.length) {
          var tr = el("tr", { "class": "empty" }); tr.appendChild(el("td", { "colspan": "8" }, "No open dead letters."));
          body.replaceChildren(tr);
        } else {
          body.replaceChildren.apply(body, data.items.map(deadRow));
        }
      }).catch(function () {});
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
    if (page === "overview") { overview(); }
    else if (page === "agencies") { agencies(); }
    else if (page === "dead-letters") { deadLetters(); }
    var app = document.body.getAttribute("data-app");
    if (app) { application(app, document.body.getAttribute("data-app-state")); }
  });
})();
