/**
 * The dashboard's one stylesheet and one script, served by the handler itself from these strings
 * (no build step, no CDN, works offline). Pages link them instead of inlining, so the
 * Content-Security-Policy can forbid every inline script and style: an escaping bug elsewhere
 * would still not run a payload's script.
 */
export const DASHBOARD_CSS = `
:root { font: 14px/1.45 system-ui, sans-serif; color: #1d1d1f; }
body { margin: 0; }
header { background: #1f2937; color: #fff; padding: 8px 16px; display: flex; gap: 18px; align-items: center; flex-wrap: wrap; }
header a { color: #fff; text-decoration: none; }
header a[aria-current="page"] { text-decoration: underline; }
header .who { margin-left: auto; opacity: .8; font-size: 12px; }
header form { display: inline; }
main { padding: 12px 16px 40px; max-width: 1200px; }
h1 { font-size: 20px; margin: 8px 0 12px; }
h2 { font-size: 16px; margin: 20px 0 8px; }
table { border-collapse: collapse; width: 100%; margin: 6px 0; }
th, td { text-align: left; padding: 4px 8px; border-bottom: 1px solid #e5e7eb; vertical-align: top; }
td.n, th.n { text-align: right; font-variant-numeric: tabular-nums; }
.cards { display: grid; grid-template-columns: repeat(auto-fill, minmax(170px, 1fr)); gap: 10px; }
.card { border: 1px solid #e5e7eb; border-radius: 6px; padding: 8px 12px; }
.card b { display: block; font-size: 22px; }
.card.warn b { color: #b45309; }
pre { background: #f3f4f6; padding: 8px; overflow: auto; max-height: 420px; white-space: pre-wrap; word-break: break-all; }
.error { color: #991b1b; }
.notice { background: #ecfdf5; border: 1px solid #a7f3d0; padding: 6px 10px; }
.danger { background: #fef2f2; border: 1px solid #fecaca; padding: 6px 10px; }
form.filters { display: flex; gap: 8px; flex-wrap: wrap; align-items: end; }
label { display: inline-flex; flex-direction: column; font-size: 12px; gap: 2px; }
label.inline { flex-direction: row; align-items: center; }
button { cursor: pointer; }
.chart svg { width: 100%; max-width: 760px; height: auto; }
.chart figcaption { font-size: 12px; }
.key { margin-right: 10px; }
.swatch { display: inline-block; width: 10px; height: 10px; margin-right: 4px; }
.swatch[data-colour="0"] { background: #0072b2; } .swatch[data-colour="1"] { background: #e69f00; }
.swatch[data-colour="2"] { background: #009e73; } .swatch[data-colour="3"] { background: #cc79a7; }
.swatch[data-colour="4"] { background: #d55e00; } .swatch[data-colour="5"] { background: #56b4e9; }
.empty { color: #6b7280; }
nav.pages { margin: 8px 0; }
`;

/**
 * "Select all" on the dead-events list, and an opt-in auto-refresh of the overview (kept in
 * localStorage). Everything works without it.
 */
export const DASHBOARD_JS = `
document.addEventListener('change', (event) => {
  const box = event.target;
  if (box instanceof HTMLInputElement && box.dataset.selectAll !== undefined) {
    for (const other of document.querySelectorAll('input[name="id"]')) other.checked = box.checked;
  }
  if (box instanceof HTMLInputElement && box.id === 'auto-refresh') {
    localStorage.setItem('pg-once-refresh', box.checked ? '1' : '');
    if (box.checked) setTimeout(() => location.reload(), 10000);
  }
});
const refresh = document.getElementById('auto-refresh');
if (refresh instanceof HTMLInputElement && localStorage.getItem('pg-once-refresh') === '1') {
  refresh.checked = true;
  setTimeout(() => location.reload(), 10000);
}
`;
