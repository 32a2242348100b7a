"use strict";
(function () {
  const el = (tag, attrs, ...children) => {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
    for (const c of children) node.append(c);
    return node;
  };
  let spec = null;
  // A schema with its $refs resolved (each name once per branch, so cycles stop).
  const resolve = (schema, seen, depth) => {
    if (schema === null || typeof schema !== "object" || depth > 12) return schema;
    if (Array.isArray(schema)) return schema.map((s) => resolve(s, seen, depth + 1));
    if (typeof schema.$ref === "string") {
      const name = schema.$ref.split("/").pop();
      if (seen.includes(name)) return { $ref: name };
      const target = ((spec.components || {}).schemas || {})[name];
      return target ? resolve(target, seen.concat([name]), depth + 1) : schema;
    }
    const out = {};
    for (const [k, v] of Object.entries(schema)) out[k] = resolve(v, seen, depth + 1);
    return out;
  };
  const schemaBlock = (content) => {
    const box = el("div");
    for (const [type, media] of Object.entries(content || {})) {
      box.append(el("div", {}, type));
      if (media.schema) box.append(el("pre", {}, JSON.stringify(resolve(media.schema, [], 0), null, 2)));
    }
    return box;
  };
  const operationView = (path, method, op) => {
    const perm = op["x-permission"];
    const head = el("summary", {},
      el("span", { class: "method " + method }, method.toUpperCase()),
      el("span", { class: "path" }, path),
      el("span", {}, op.summary || ""),
      el("span", { class: "perm" }, perm ? "needs " + perm : "public"));
    const body = el("div", { class: "body" });
    if (op.description) body.append(el("p", {}, op.description));
    if (op.parameters && op.parameters.length) {
      const rows = op.parameters.map((p) => el("tr", {},
        el("td", {}, el("code", {}, p.name)), el("td", {}, p.in),
        el("td", {}, p.required ? "required" : ""), el("td", {}, p.description || "")));
      body.append(el("h3", {}, "Parameters"), el("table", {}, ...rows));
    }
    if (op.requestBody) body.append(el("h3", {}, "Request body"), schemaBlock(op.requestBody.content));
    body.append(el("h3", {}, "Responses"));
    for (const [status, r] of Object.entries(op.responses || {})) {
      body.append(el("div", {}, el("strong", {}, status + " "), r.description || ""));
      if (r.content) body.append(schemaBlock(r.content));
    }
    const item = el("details", {}, head, body);
    item.dataset.search = [path, method, op.summary || "", (op.tags || []).join(" ")].join(" ").toLowerCase();
    return item;
  };
  const render = () => {
    document.getElementById("title").textContent = spec.info.title + " " + spec.info.version;
    document.getElementById("desc").textContent = spec.info.description || "";
    const byTag = new Map((spec.tags || []).map((t) => [t.name, []]));
    for (const [path, item] of Object.entries(spec.paths)) {
      for (const method of ["get", "post", "put", "delete"]) {
        const op = item[method];
        if (!op) continue;
        const tag = (op.tags || ["other"])[0];
        if (!byTag.has(tag)) byTag.set(tag, []);
        byTag.get(tag).push(operationView(path, method, op));
      }
    }
    const ops = document.getElementById("ops");
    ops.textContent = "";
    const descriptions = new Map((spec.tags || []).map((t) => [t.name, t.description || ""]));
    for (const [tag, views] of byTag) {
      if (!views.length) continue;
      const section = el("section", {}, el("h2", {}, tag), el("p", { class: "tagdesc" }, descriptions.get(tag) || ""), ...views);
      ops.append(section);
    }
  };
  document.getElementById("filter").addEventListener("input", (e) => {
    const q = e.target.value.trim().toLowerCase();
    for (const section of document.querySelectorAll("section")) {
      let shown = 0;
      for (const d of section.querySelectorAll("details")) {
        const match = !q || d.dataset.search.includes(q);
        d.hidden = !match;
        if (match) shown += 1;
      }
      section.hidden = shown === 0;
    }
  });
  fetch("openapi.json", { credentials: "same-origin" })
    .then((r) => (r.ok ? r.json() : Promise.reject(new Error("HTTP " + r.status))))
    .then((doc) => { spec = doc; render(); })
    .catch((e) => {
      const ops = document.getElementById("ops");
      ops.textContent = "Cannot load openapi.json: " + e.message;
      ops.className = "error";
    });
})();
