// The approvers' review page: plain JavaScript over the registry's REST API.
// Every value from the API is inserted as text, never as HTML.
(function () {
  "use strict";

  var API = "/api/v1";
  var TOKEN_KEY = "registry-service.token";
  var state = { tab: "mine", selected: null, principal: null };

  function $(id) { return document.getElementById(id); }

  function el(tag, attrs) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (key) {
      if (key === "text") node.textContent = attrs[key];
      else if (key === "className") node.className = attrs[key];
      else if (key.slice(0, 2) === "on") node.addEventListener(key.slice(2), attrs[key]);
      else node.setAttribute(key, attrs[key]);
    });
    for (var i = 2; i < arguments.length; i++) {
      var child = arguments[i];
      if (child === null || child === undefined) continue;
      node.appendChild(typeof child === "string" ? document.createTextNode(child) : child);
    }
    return node;
  }

  function table(headers, rows) {
    return el("table", {},
      el("thead", {}, el.apply(null, ["tr", {}].concat(headers.map(function (h) {
        return el("th", { text: h });
      })))),
      el.apply(null, ["tbody", {}].concat(rows)));
  }

  function row(cells, className) {
    return el.apply(null, ["tr", className ? { className: className } : {}].concat(cells.map(function (c) {
      return c instanceof Node ? c : el("td", { text: c === null || c === undefined ? "–" : String(c) });
    })));
  }

  function num(value, digits) {
    if (value === null || value === undefined) return "–";
    var d = digits === undefined ? 4 : digits;
    return Number(value).toLocaleString(undefined, { maximumFractionDigits: d });
  }

  function signed(value) {
    if (value === null || value === undefined) return "–";
    return (value > 0 ? "+" : "") + num(value);
  }

  function percent(value) {
    if (value === null || value === undefined) return "–";
    return (value > 0 ? "+" : "") + num(value * 100, 2) + "%";
  }

  function when(iso) { return iso ? new Date(iso).toLocaleString() : "–"; }

  function target(p) {
    if (p.kind === "deployment") return "traffic";
    return p.target_stage ? p.target_stage : "@" + p.target_alias;
  }

  // "#12 churn v3 → Production", or "#13 churn traffic (revision 2)" for a traffic change.
  function title(p) {
    if (p.kind === "deployment") return "#" + p.id + " " + p.model_name + " traffic (revision " + p.version + ")";
    return "#" + p.id + " " + p.model_name + " v" + p.version + " → " + target(p);
  }

  function token() { return sessionStorage.getItem(TOKEN_KEY); }

  function call(method, path, body) {
    var init = { method: method, headers: { Authorization: "Bearer " + token() } };
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    return fetch(API + path, init).then(function (response) {
      return response.json().catch(function () { return {}; }).then(function (data) {
        if (!response.ok) {
          var error = new Error(data.detail || data.title || response.statusText);
          error.status = response.status;
          error.problem = data;
          throw error;
        }
        return data;
      });
    });
  }

  // -- signing in
  function showSignin(message) {
    $("workspace").hidden = true;
    $("signin").hidden = false;
    $("identity").textContent = "";
    $("signin-error").textContent = message || "";
  }

  function signIn(secret) {
    sessionStorage.setItem(TOKEN_KEY, secret);
    return call("GET", "/auth/whoami").then(function (who) {
      state.principal = who;
      $("signin").hidden = true;
      $("workspace").hidden = false;
      var identity = $("identity");
      identity.textContent = "";
      identity.appendChild(el("span", { text: who.name + " (" + who.roles.join(", ") + ")" }));
      identity.appendChild(el("button", { text: "Sign out", onclick: signOut }));
      return loadList();
    }).catch(function (error) {
      sessionStorage.removeItem(TOKEN_KEY);
      showSignin(error.status === 401 ? "That token is not valid: " + error.message : error.message);
    });
  }

  function signOut() {
    sessionStorage.removeItem(TOKEN_KEY);
    state.principal = null;
    showSignin("");
  }

  // -- the list
  function selectTab(tab) {
    state.tab = tab;
    $("tab-mine").setAttribute("aria-selected", String(tab === "mine"));
    $("tab-open").setAttribute("aria-selected", String(tab === "open"));
    loadList();
  }

  function loadList() {
    var query = state.tab === "mine" ? "?actionable=true" : "?status=pending";
    return call("GET", "/promotions" + query + "&max_results=100").then(function (page) {
      var list = $("requests");
      list.textContent = "";
      page.promotions.forEach(function (p) {
        var item = el("li", { "data-request-id": String(p.id), onclick: function () { openRequest(p.id); } },
          el("div", { className: "title", text: title(p) }),
          el("div", { className: "muted", text: p.kind + " by " + p.requester + " · " +
            p.received_approvals + "/" + p.required_approvals + " approvals · " + when(p.created_at) }));
        if (state.selected === p.id) item.classList.add("selected");
        list.appendChild(item);
      });
      var empty = $("requests-empty");
      empty.hidden = page.promotions.length > 0;
      empty.textContent = state.tab === "mine" ? "Nothing is waiting for your approval." : "No open requests.";
    }).catch(handleError);
  }

  // -- one request
  // Metrics are those recorded at registration; a run changed since is shown with both.
  function changesOf(side) {
    var found = {};
    ((side && side.changed_since_registration) || []).forEach(function (m) { found[m.key] = m; });
    return found;
  }

  function changeText(label, change) {
    return label + ": " + num(change.registered) + " registered, " + num(change.current) + " now";
  }

  function evidenceWarnings(c) {
    var items = [];
    [["candidate", c.candidate], ["champion", c.champion]].forEach(function (pair) {
      var side = pair[1];
      if (!side) return;
      var label = pair[0] + " v" + side.version;
      if (side.metrics_state === "unfrozen") {
        items.push(el("li", { className: "unfrozen", text: label +
          " was registered outside the registry: its run's metrics as they are now (unfrozen)." }));
      } else if (side.changed_since_registration === null) {
        items.push(el("li", { text: label + "'s run could not be read: the metrics recorded at registration, unchecked." }));
      }
      (side.changed_since_registration || []).forEach(function (m) {
        items.push(el("li", { className: "changed", text: label + "'s run changed since registration: " +
          changeText(m.key, m) + " (the registered value is compared)." }));
      });
    });
    if (!items.length) return null;
    return el.apply(null, ["ul", { id: "evidence-warnings", className: "plain warnings" }].concat(items));
  }

  function comparisonSection(p) {
    var c = p.comparison;
    if (!c) return null;
    var champion = c.champion;
    var changed = { candidate: changesOf(c.candidate), champion: changesOf(champion) };
    var heading = champion
      ? "Candidate v" + c.candidate.version + " against champion v" + champion.version
      : "Candidate v" + c.candidate.version + " (nothing holds " + target(p) + " yet)";
    var metricRows = c.metrics.map(function (m) {
      var verdict = m.better === "candidate" ? "candidate better"
        : m.better === "champion" ? "champion better"
        : m.better === "equal" ? "equal" : "–";
      var direction = m.higher_is_better === true ? "↑" : m.higher_is_better === false ? "↓" : "";
      var since = ["champion", "candidate"].filter(function (side) { return changed[side][m.key]; })
        .map(function (side) { return changeText(side, changed[side][m.key]); });
      var classes = (m.better ? "better-" + m.better : "") + (m.key === c.primary_metric ? " primary" : "") +
        (since.length ? " changed" : "");
      return row([
        el("td", { text: m.key + (direction ? " " + direction : "") }),
        el("td", { className: "num", text: num(m.champion) }),
        el("td", { className: "num", text: num(m.candidate) }),
        el("td", { className: "num", text: signed(m.delta) }),
        el("td", { className: "num", text: percent(m.relative_delta) }),
        el("td", { className: "verdict", text: verdict }),
        el("td", { className: "since", text: since.length ? since.join("; ") : "" }),
      ], classes.trim());
    });
    var paramRows = c.params_differing.map(function (d) {
      return row([d.key, d.champion, d.candidate]);
    });
    var lineageKeys = ["run_id", "experiment_name", "git_commit", "data_version", "source_name", "registered_by"];
    var lineageRows = lineageKeys.map(function (key) {
      return row([key, champion ? champion.lineage[key] : null, c.candidate.lineage[key]]);
    });
    return el("section", { id: "comparison" },
      el("h3", { text: heading }),
      el("p", { className: "muted", text: "Metrics as recorded when each version was registered." }),
      evidenceWarnings(c),
      c.metrics.length ? table(["metric", "champion", "candidate", "delta", "relative", "verdict",
        "changed since registration"], metricRows)
        : el("p", { className: "muted", text: "No metrics recorded on either run." }),
      champion ? el("h3", { text: "Params that differ (" + c.params_same + " equal)" }) : null,
      champion ? (paramRows.length ? table(["param", "champion", "candidate"], paramRows)
        : el("p", { className: "muted", text: "Same params." })) : null,
      el("h3", { text: "Lineage" }),
      table(["", champion ? "champion v" + champion.version : "champion", "candidate v" + c.candidate.version], lineageRows));
  }

  // What the approvers approve: the digest of the version's files and the pickle scan.
  function artifactsSection(p) {
    var a = (p.evidence || {}).artifacts;
    if (!a) return null;
    if (a.status !== "sealed") {
      return el("section", { id: "artifacts" },
        el("h3", { text: "Artifacts" }),
        el("p", { className: "muted", text: "No manifest was recorded for this version (registered before " +
          "manifests were kept): its files are served unverified." }));
    }
    var verdict = a.scan_verdict || "–";
    var findings = Object.keys(a.findings || {}).sort().map(function (path) {
      var f = a.findings[path];
      return row([
        el("td", {}, el("code", { text: path })),
        el("td", { className: f.dangerous.length ? "error" : "", text: f.dangerous.join(", ") || "–" }),
        el("td", { text: f.suspicious.join(", ") || "–" }),
        el("td", { text: f.parse_error ? "yes" : "no" }),
      ]);
    });
    return el("section", { id: "artifacts" },
      el("h3", { text: "Artifacts" }),
      el("p", {}, "Manifest digest ", el("code", { id: "manifest-digest", text: a.manifest_digest }),
        " (SHA-256 over every file's SHA-256), signed by key ", el("code", { text: (a.signing_key_id || "").slice(0, 16) }),
        ". Serving loads these bytes only."),
      el("p", {}, "Pickle scan (" + (a.scanner || "–") + "): ",
        el("strong", { id: "scan-verdict", className: verdict === "dangerous" ? "error" : verdict === "clean" ? "ok" : "",
          text: verdict })),
      findings.length ? table(["file", "dangerous globals", "suspicious globals", "parse error"], findings)
        : el("p", { className: "muted", text: "No pickle imports anything beyond the safe lists." }));
  }

  // A traffic change: each variant's share before and after, and the A/B test it starts.
  function deploymentSection(p) {
    var change = p.kind === "deployment" ? (p.evidence || {}).deployment : null;
    if (!change) return null;
    function where(v) { return v.target_stage ? v.target_stage : "@" + v.target_alias; }
    function split(spec) {
      if (!spec) return el("p", { className: "muted", text: "No deployment of its own: all traffic to Production." });
      return el("div", {},
        table(["variant", "target", "weight"], spec.variants.map(function (v) {
          return row([v.name, where(v), v.weight + "%"]);
        })),
        el("p", { className: "muted", text: "sticky by " + (spec.sticky_by || "nothing (random)") +
          " · fallback " + (spec.fallback ? "on" : "off") + " · preload " + (spec.preload ? "on" : "off") }));
    }
    var test = (p.evidence || {}).abtest;
    return el("section", { id: "deployment" },
      el("h3", { text: "Traffic change (" + change.routing_change + ") against revision " + change.base_revision }),
      change.changed_targets && change.changed_targets.length
        ? el("p", { text: "Share changes for: " + change.changed_targets.join(", ") }) : null,
      el("div", { className: "grid2" },
        el("div", { id: "deployment-before" }, el("h3", { text: "Before" }), split(change.before)),
        el("div", { id: "deployment-after" }, el("h3", { text: "After" }), split(change.after))),
      test ? el("p", { text: "Starts an A/B test on " + test.metric + ": " + test.challenger.target + " v" +
        test.challenger.version + " against " + test.champion.target + " v" + test.champion.version +
        ", at least " + test.min_samples + " samples per side." }) : null);
  }

  function policySection(p) {
    var rule = p.policy;
    var who = [rule.approver_role + " role"];
    if (rule.approvers && rule.approvers.length) who.push("named: " + rule.approvers.join(", "));
    if (rule.approver_group) who.push("group: " + rule.approver_group);
    var approvals = p.approvals.map(function (a) {
      return el("li", { text: a.approver + " at " + when(a.created_at) + (a.comment ? ": " + a.comment : "") });
    });
    return el("section", {},
      el("h3", { text: "Policy and approvals" }),
      el("p", { text: p.received_approvals + " of " + p.required_approvals + " approvals from " + who.join("; ") +
        (rule.allow_self_approval ? "; the requester may approve" : "; never the requester") +
        ". Expires " + when(p.expires_at) + "." }),
      approvals.length ? el.apply(null, ["ul", { className: "plain" }].concat(approvals))
        : el("p", { className: "muted", text: "No approvals yet." }));
  }

  function commentsSection(p) {
    if (!p.comments.length) return null;
    return el("section", {},
      el("h3", { text: "Comments" }),
      el.apply(null, ["ul", { className: "plain" }].concat(p.comments.map(function (c) {
        return el("li", { text: c.author + " (" + c.kind + ", " + when(c.created_at) + "): " + c.body });
      }))));
  }

  function auditSection(p) {
    return el("details", {},
      el("summary", { text: "Audit trail (" + p.audit_trail.length +
        (p.audit_trail.length === 1 ? " event)" : " events)") }),
      table(["seq", "when", "actor", "action"], p.audit_trail.map(function (e) {
        return row([e.seq, when(e.occurred_at), e.actor, e.action]);
      })));
  }

  function decisionSection(p, canApprove) {
    if (p.status !== "pending") return null;
    var comment = el("textarea", { id: "decision-comment", placeholder: "Comment (required to reject)" });
    var message = el("p", { id: "decision-message", role: "status" });
    function decide(verb) {
      var text = comment.value.trim();
      if (verb === "reject" && !text) {
        message.className = "error";
        message.textContent = "Say why you reject it.";
        return;
      }
      buttons.forEach(function (b) { b.disabled = true; });
      call("POST", "/promotions/" + p.id + "/" + verb, text ? { comment: text } : {}).then(function (done) {
        // Shown again as GET answers it, with the comparison the POST leaves out.
        return Promise.all([openRequest(p.id), loadList()]).then(function () {
          var status = $("decision-result");
          status.className = done.status === "executed" || done.status === "pending" ? "ok" : "error";
          status.textContent = (verb === "approve" ? "Approved" : "Rejected") + ": the request is now " +
            done.status + (done.last_error ? " (" + done.last_error + ")" : "") + ".";
        });
      }).catch(function (error) {
        buttons.forEach(function (b) { b.disabled = false; });
        message.className = "error";
        message.textContent = error.message;
      });
    }
    var buttons = [
      el("button", { id: "approve", text: "Approve", onclick: function () { decide("approve"); } }),
      el("button", { id: "reject", className: "danger", text: "Reject", onclick: function () { decide("reject"); } }),
    ];
    if (!canApprove) buttons[0].disabled = true;
    return el("section", { className: "decision" },
      el("h3", { text: "Your decision" }),
      canApprove ? null : el("p", { className: "muted", text: "You cannot approve this request (your own, already approved by you, or the policy names other approvers)." }),
      comment,
      el.apply(null, ["div", { className: "actions" }].concat(buttons)),
      message);
  }

  function renderDetail(p, canApprove) {
    state.selected = p.id;
    var detail = $("detail");
    detail.textContent = "";
    detail.setAttribute("data-request-id", String(p.id));
    detail.appendChild(el("h2", {},
      title(p) + " ",
      el("span", { id: "status", className: "badge " + p.status, text: p.status })));
    detail.appendChild(el("p", { className: "muted", text: p.kind + " requested by " + p.requester + " on " +
      when(p.created_at) + (p.replaces_version ? "; replaces v" + p.replaces_version : "") }));
    detail.appendChild(el("p", {}, el("strong", { text: "Reason: " }), p.reason));
    detail.appendChild(el("p", { id: "decision-result", role: "status" }));
    if (p.last_error) detail.appendChild(el("p", { className: "error", text: p.last_error }));
    [comparisonSection(p), deploymentSection(p), artifactsSection(p), decisionSection(p, canApprove), policySection(p), commentsSection(p), auditSection(p)]
      .forEach(function (section) { if (section) detail.appendChild(section); });
    Array.prototype.forEach.call(document.querySelectorAll("#requests li"), function (li) {
      li.classList.toggle("selected", li.getAttribute("data-request-id") === String(p.id));
    });
  }

  function openRequest(id) {
    return Promise.all([
      call("GET", "/promotions/" + id),
      call("GET", "/promotions?actionable=true&max_results=500"),
    ]).then(function (results) {
      var actionable = results[1].promotions.some(function (p) { return p.id === id; });
      renderDetail(results[0], actionable);
    }).catch(handleError);
  }

  function handleError(error) {
    if (error.status === 401) {
      signOut();
      showSignin("Your token stopped working: " + error.message);
      return;
    }
    var detail = $("detail");
    detail.textContent = "";
    detail.appendChild(el("p", { className: "error", text: error.message }));
  }

  $("signin-form").addEventListener("submit", function (event) {
    event.preventDefault();
    signIn($("token").value.trim());
    $("token").value = "";
  });
  $("tab-mine").addEventListener("click", function () { selectTab("mine"); });
  $("tab-open").addEventListener("click", function () { selectTab("open"); });

  if (token()) signIn(token()); else showSignin("");
})();
