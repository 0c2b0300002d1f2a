"""The preview page at ``/``: choose or drop images, see each one's top classes with bars.

One self-contained HTML document (inline CSS and JavaScript, no external assets), in the spirit
of Teachable Machine's and Gradio's preview panels. It talks to the same API as any client.
"""
from __future__ import annotations

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>graft serve</title>
<style>
 body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;background:#f6f7f9;color:#1d2330}
 header{background:#1d2330;color:#fff;padding:14px 24px}
 header h1{font-size:19px;margin:0;display:inline} header span{opacity:.7;margin-left:12px}
 main{max-width:980px;margin:0 auto;padding:20px 24px}
 .panel{background:#fff;border:1px solid #dde1e7;border-radius:8px;padding:16px;margin-bottom:16px}
 #drop{border:2px dashed #9aa5b5;border-radius:8px;padding:28px;text-align:center;color:#4a5568;cursor:pointer}
 #drop.over{background:#eef4ff;border-color:#3b6fd8}
 select,button{font:inherit;padding:4px 8px}
 .classes{color:#4a5568;font-size:13px;margin-top:8px}
 .card{display:flex;gap:16px;align-items:flex-start}
 .card img{width:140px;height:140px;object-fit:cover;border-radius:6px;background:#eee}
 .rows{flex:1}
 .name{font-weight:600;margin-bottom:6px;word-break:break-all}
 .row{display:flex;align-items:center;gap:8px;margin:3px 0}
 .row .label{width:160px;overflow:hidden;text-overflow:ellipsis;white-space:nowrap}
 .bar{flex:1;background:#edf0f4;border-radius:4px;height:16px;overflow:hidden}
 .bar div{height:100%;background:#3b6fd8}
 .row.best .bar div{background:#1f9d55}
 .pct{width:60px;text-align:right;font-variant-numeric:tabular-nums}
 .warn{color:#b7791f;font-weight:600;margin-top:6px}
 .error{color:#c53030;font-weight:600}
 .task{font-size:13px;color:#4a5568;margin-top:6px}
</style></head>
<body>
<header><h1>graft serve</h1><span>preview</span></header>
<main>
 <div class="panel">
  <label>Model <select id="model"></select></label>
  <label style="margin-left:16px">Top <select id="topk"><option>3</option><option selected>5</option>
   <option>10</option></select></label>
  <div class="classes" id="classes"></div>
 </div>
 <div class="panel" id="drop">Drop images here, or <u>choose files</u>
  <input id="files" type="file" accept="image/*" multiple hidden></div>
 <div id="results"></div>
</main>
<script>
const $ = (id) => document.getElementById(id);
let models = [];
function text(tag, cls, value) { const e = document.createElement(tag); if (cls) e.className = cls;
  if (value !== undefined) e.textContent = value; return e; }
async function loadModels() {
  const answer = await fetch('/v1/models'); models = await answer.json();
  for (const m of models) { const o = text('option', '', m.name); o.value = m.name; $('model').appendChild(o); }
  showClasses();
}
function showClasses() {
  const m = models.find((x) => x.name === $('model').value);
  $('classes').textContent = m ? m.classes.length + ' classes: ' + m.classes.join(', ')
    + '  (version ' + m.version + ')' : '';
}
function bars(parent, top) {
  for (const [i, t] of top.entries()) {
    const row = text('div', i === 0 ? 'row best' : 'row'); row.appendChild(text('span', 'label top-class', t.class));
    const bar = text('div', 'bar'); const fill = text('div'); fill.style.width = (100 * t.probability).toFixed(1) + '%';
    bar.appendChild(fill); row.appendChild(bar);
    row.appendChild(text('span', 'pct', (100 * t.probability).toFixed(1) + '%')); parent.appendChild(row);
  }
}
async function predictOne(file) {
  const card = text('div', 'panel card'); const img = document.createElement('img');
  img.src = URL.createObjectURL(file); img.alt = file.name; card.appendChild(img);
  const rows = text('div', 'rows'); rows.appendChild(text('div', 'name', file.name)); card.appendChild(rows);
  $('results').prepend(card);
  const form = new FormData(); form.append('file', file);
  const url = '/v1/models/' + encodeURIComponent($('model').value) + '/predict?top_k=' + $('topk').value;
  try {
    const answer = await fetch(url, {method: 'POST', body: form}); const data = await answer.json();
    if (!answer.ok) { rows.appendChild(text('div', 'error', data.error || answer.statusText)); return; }
    const p = data.predictions[0];
    if (p.top) bars(rows, p.top);
    else for (const [task, top] of Object.entries(p.tasks)) {
      rows.appendChild(text('div', 'task', task)); bars(rows, top);
    }
    if (p.unfamiliar) rows.appendChild(text('div', 'warn',
      'Unfamiliar: unlike the training images (novelty ' + p.novelty.toFixed(1) + ')'));
    card.classList.add('done');
  } catch (err) { rows.appendChild(text('div', 'error', String(err))); }
}
function predictAll(files) { for (const f of files) predictOne(f); }
$('drop').addEventListener('click', () => $('files').click());
$('files').addEventListener('change', (e) => predictAll(e.target.files));
$('model').addEventListener('change', showClasses);
for (const kind of ['dragenter', 'dragover']) $('drop').addEventListener(kind, (e) => {
  e.preventDefault(); $('drop').classList.add('over'); });
for (const kind of ['dragleave', 'drop']) $('drop').addEventListener(kind, (e) => {
  e.preventDefault(); $('drop').classList.remove('over'); });
$('drop').addEventListener('drop', (e) => predictAll(e.dataTransfer.files));
loadModels();
</script>
</body></html>
"""


def preview_page() -> str:
    """The page's HTML (a string; no files are read)."""
    return _PAGE
