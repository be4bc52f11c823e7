// Small DOM builders the boards share (a module, not a tab: its name starts with "_").

/** A table cell showing `text`, its column named in `data-col` for styles and tests. */
export function cell(text, col) {
  const td = document.createElement("td");
  td.dataset.col = col;
  td.textContent = text;
  return td;
}

/** A status badge; `tone` (ok, warn, bad, muted, …) picks its colour in the page's CSS. */
export function badge(text, tone) {
  const span = document.createElement("span");
  span.className = "badge";
  span.dataset.tone = tone;
  span.textContent = text;
  return span;
}

/** The one row of an empty table: `text` across its `cols` columns. */
export function emptyRow(text, cols) {
  const tr = document.createElement("tr");
  tr.className = "empty";
  const td = cell(text, "empty");
  td.colSpan = cols;
  tr.append(td);
  return tr;
}
