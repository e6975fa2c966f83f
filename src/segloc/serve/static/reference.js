// Renders the OpenAPI document of the server as a plain list of routes: works offline.
function el(tag, text, cls) {
  const node = document.createElement(tag);
  if (text !== undefined) node.textContent = text;
  if (cls) node.className = cls;
  return node;
}

function schemaName(schema) {
  if (!schema) return "";
  if (schema.$ref) return schema.$ref.split("/").pop();
  if (schema.format === "binary") return "raw bytes";
  return schema.type || "";
}

async function main() {
  const doc = await (await fetch("/openapi.json")).json();
  document.getElementById("intro").textContent = doc.info.description || "";
  const byTag = new Map();
  for (const [path, ops] of Object.entries(doc.paths)) {
    for (const [verb, op] of Object.entries(ops)) {
      const tag = (op.tags || ["other"])[0];
      if (!byTag.has(tag)) byTag.set(tag, []);
      byTag.get(tag).push({ path, verb, op });
    }
  }
  const root = document.getElementById("routes");
  for (const [tag, routes] of byTag) {
    root.append(el("h2", tag));
    for (const { path, verb, op } of routes) {
      const box = el("div", undefined, "route");
      const head = el("div");
      head.append(el("span", verb.toUpperCase(), "verb"), el("code", path), el("span", ` — ${op.summary || ""}`));
      box.append(head);
      if (op.description) box.append(el("div", op.description, "muted"));
      const params = (op.parameters || []).map((p) => `${p.name} (${p.in}${p.required ? ", required" : ""})`);
      if (params.length) box.append(el("div", `parameters: ${params.join(", ")}`, "muted"));
      const body = op.requestBody && op.requestBody.content;
      if (body) {
        const [type, media] = Object.entries(body)[0];
        let text = `body: ${type} ${schemaName(media.schema)}`;
        const ref = media.schema && media.schema.$ref && doc.components.schemas[schemaName(media.schema)];
        if (ref && ref.properties) {
          text += ` { ${Object.entries(ref.properties).map(([k, v]) => `${k}${v.description ? `: ${v.description}` : ""}`).join("; ")} }`;
        }
        box.append(el("div", text, "muted"));
      }
      root.append(box);
    }
  }
}

main();
