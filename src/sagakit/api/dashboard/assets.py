"""The dashboard's stylesheet and script, inlined in each page under a per-page CSP nonce.

No build step and nothing fetched from elsewhere: the pages work offline, on a phone, and
(the auto-refresh aside) without JavaScript.
"""

from __future__ import annotations

from typing import Final

STYLE: Final = """
*,*::before,*::after{box-sizing:border-box}
:root{--fg:#1f2328;--muted:#59636e;--line:#d1d9e0;--soft:#f6f8fa;--accent:#0969da;
--ok:#1a7f37;--ok-bg:#dafbe1;--warn:#9a6700;--warn-bg:#fff8c5;--bad:#cf222e;--bad-bg:#ffebe9;
--run:#0969da;--run-bg:#ddf4ff;--off:#59636e;--off-bg:#eff2f5;
font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",sans-serif;
color:var(--fg)}
body{margin:0;background:#fff}
a{color:var(--accent);text-decoration:none}a:hover{text-decoration:underline}
header.bar{background:#24292f}
header.bar .wrap{display:flex;align-items:center;gap:1rem;max-width:74rem;margin:0 auto;
padding:.55rem 1.25rem}
header.bar .brand{color:#fff;font-weight:700;letter-spacing:.01em}
header.bar nav{margin-left:auto;display:flex;align-items:center;gap:.75rem}
header.bar nav a{color:#d1d9e0}
header.bar button{background:transparent;border:1px solid #57606a;color:#fff;padding:.25rem .7rem}
main{max-width:74rem;margin:0 auto;padding:1rem 1.25rem 3rem}
h1{font-size:1.4rem;margin:.6rem 0 .8rem;overflow-wrap:anywhere}
h1 .id{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:1.1rem;
font-weight:600}
h2{font-size:1.05rem;margin:1.8rem 0 .6rem}
code,.mono{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:.85em}
.muted{color:var(--muted)}
.status{display:inline-block;padding:.05rem .55rem;border-radius:1rem;font-size:.8rem;
font-weight:600;white-space:nowrap;background:var(--off-bg);color:var(--off)}
.completed,.succeeded{background:var(--ok-bg);color:var(--ok)}
.compensated{background:var(--warn-bg);color:var(--warn)}
.resolved,.resolved-by-hand{background:var(--warn-bg);color:var(--warn)}
.failed,.error,.gave-up,.stuck{background:var(--bad-bg);color:var(--bad)}
.running,.compensating,.pending-cancel{background:var(--run-bg);color:var(--run)}
nav.counts{display:flex;flex-wrap:wrap;gap:.4rem;margin:.25rem 0 1rem}
nav.counts a{display:inline-flex;gap:.4rem;align-items:center;padding:.25rem .7rem;
border:1px solid var(--line);border-radius:2rem;color:var(--fg);background:#fff}
nav.counts a b{font-variant-numeric:tabular-nums}
nav.counts a.on{border-color:var(--accent);box-shadow:inset 0 0 0 1px var(--accent)}
nav.counts a.alert{border-color:var(--bad);color:var(--bad)}
details.filters{margin-bottom:1rem;background:var(--soft);border:1px solid var(--line);
border-radius:.5rem}
details.filters summary{padding:.5rem .75rem;font-weight:600}
details.filters form{display:flex;flex-wrap:wrap;gap:.5rem .75rem;align-items:flex-end;
padding:0 .75rem .75rem}
details.filters label{display:flex;flex-direction:column;font-size:.8rem;color:var(--muted);
gap:.15rem}
details.filters input{width:11rem}
.buttons{display:flex;gap:.5rem}
input{font:inherit;padding:.4rem .5rem;border:1px solid var(--line);border-radius:.4rem;
max-width:100%;background:#fff}
button,.button{font:inherit;padding:.42rem .9rem;border-radius:.4rem;border:1px solid #1f883d;
background:#1f883d;color:#fff;cursor:pointer;font-weight:600}
.button.secondary,button.secondary{background:#fff;color:var(--fg);border-color:var(--line)}
button.danger{background:#fff;color:var(--bad);border-color:var(--bad)}
table{border-collapse:collapse;width:100%}
th{text-align:left;font-size:.75rem;text-transform:uppercase;letter-spacing:.04em;
color:var(--muted);font-weight:600;padding:.45rem .6rem;border-bottom:1px solid var(--line)}
td{padding:.55rem .6rem;border-bottom:1px solid #eaeef2;vertical-align:top;
overflow-wrap:break-word}
td code{word-break:break-all}
tbody tr:hover{background:#f6f8fa}
td.num{font-variant-numeric:tabular-nums;white-space:nowrap}
td .err,.detail.bad{color:var(--bad)}
.empty{padding:2rem;text-align:center;color:var(--muted);border:1px dashed var(--line);
border-radius:.5rem}
.pager{margin-top:1rem}
.summary{display:flex;flex-wrap:wrap;gap:.35rem .9rem;align-items:center;color:var(--muted)}
.summary b{color:var(--fg);font-weight:600}
.callout{margin:1rem 0;padding:.7rem .9rem;border-left:4px solid var(--bad);
background:var(--bad-bg);border-radius:.3rem;overflow-wrap:anywhere}
.callout.compensated{border-color:var(--warn);background:var(--warn-bg)}
.callout.stuck{border-color:var(--bad);background:var(--bad-bg)}
.callout.info{border-color:var(--run);background:var(--run-bg)}
.actions{display:flex;flex-wrap:wrap;gap:.75rem;align-items:flex-end;margin:1rem 0;
padding:.75rem;border:1px solid var(--line);border-radius:.5rem;background:var(--soft)}
.actions form{display:flex;flex-wrap:wrap;gap:.5rem;align-items:flex-end;margin:0}
.actions form.resolve{flex:1 1 22rem}
.actions label{display:flex;flex-direction:column;font-size:.8rem;color:var(--muted);gap:.15rem;
flex:1 1 14rem}
ol.timeline{list-style:none;margin:0;padding:0;border:1px solid var(--line);border-radius:.5rem}
ol.timeline li{display:grid;grid-template-columns:7.2rem minmax(0,1fr) 5.5rem 7.5rem;
gap:.1rem .75rem;padding:.5rem .75rem;border-bottom:1px solid #eaeef2;align-items:baseline}
ol.timeline li:last-child{border-bottom:0}
ol.timeline time{font-variant-numeric:tabular-nums;color:var(--muted);font-size:.85rem}
ol.timeline .what small{color:var(--muted);margin-left:.15rem}
ol.timeline .took{font-variant-numeric:tabular-nums;color:var(--muted);text-align:right;
font-size:.85rem}
ol.timeline .detail{grid-column:2/-1;font-size:.85rem;overflow-wrap:anywhere}
ol.timeline li.note{background:var(--soft)}
ol.timeline li.note .what{color:var(--muted);font-style:italic}
ol.timeline li.compensation .what{padding-left:1rem}
ol.timeline li.compensation .what::before{content:"↩ ";color:var(--warn)}
details{margin-top:1rem}summary{cursor:pointer;color:var(--muted)}
pre{background:var(--soft);padding:.75rem;border-radius:.4rem;overflow:auto;font-size:.85rem}
.card{max-width:24rem;margin:12vh auto 0;padding:1.5rem;border:1px solid var(--line);
border-radius:.75rem}
.card h1{margin-top:0}.card label{display:flex;flex-direction:column;gap:.3rem;margin:.75rem 0}
.card input{width:100%}.card button{width:100%;margin-top:.5rem}
.notice{color:var(--bad);font-weight:600}
@media (max-width:44rem){
main{padding:.75rem .8rem 2rem}
button,.button,input{min-height:2.6rem}
header.bar button{min-height:2rem}
details.filters input{width:100%}details.filters label{flex:1 1 9rem}
.buttons{flex:1 1 100%}.buttons>*{flex:1 1 0;text-align:center}
table.sagas thead,table.steps thead{display:none}
table.sagas tr,table.steps tr{display:grid;grid-template-columns:minmax(0,1fr) auto;
gap:.15rem .5rem;padding:.6rem .1rem;border-bottom:1px solid #eaeef2}
table.sagas td,table.steps td{padding:0;border:0}
table.sagas td:nth-child(1){grid-area:1/1}table.sagas td:nth-child(4){grid-area:1/2}
table.sagas td:nth-child(3){grid-area:2/1}table.sagas td:nth-child(6){grid-area:2/2}
table.sagas td:nth-child(5){grid-column:1/-1}
table.sagas td:nth-child(4),table.sagas td:nth-child(6){text-align:right}
table.sagas td:nth-child(2),table.sagas td:nth-child(7){display:none}
table.sagas td:nth-child(3)::before{content:"order ";color:var(--muted)}
table.steps td:nth-child(1){grid-area:1/1;font-weight:600}table.steps td:nth-child(2){grid-area:1/2}
table.steps td:nth-child(3){grid-area:2/1}table.steps td:nth-child(4){grid-area:2/2}
table.steps td:nth-child(3)::before{content:"attempts ";color:var(--muted)}
table.steps td:nth-child(4)::before{content:"undo ";color:var(--muted)}
table.steps td:nth-child(5),table.steps td:nth-child(6){grid-column:1/-1}
table.steps td:empty{display:none}
ol.timeline li{grid-template-columns:minmax(0,1fr) auto;padding:.55rem .6rem}
ol.timeline time{grid-area:2/1}ol.timeline .what{grid-area:1/1}
ol.timeline .result{grid-area:1/2;text-align:right}ol.timeline .took{grid-area:2/2}
ol.timeline .detail{grid-column:1/-1}
.actions form,.actions form.resolve{flex:1 1 100%}.actions button{flex:1 1 auto}
}
"""

#: Auto-refresh: every ``data-refresh`` seconds, swap ``#live`` for the server's fresh copy
#: (paused while the tab is hidden or something in it has focus); confirm ``data-confirm``;
#: open the filters where there is room for them.
SCRIPT: Final = """
(function () {
  "use strict";
  function schedule() {
    var live = document.getElementById("live");
    var every = live ? Number(live.getAttribute("data-refresh") || 0) : 0;
    if (every > 0) { setTimeout(refresh, every * 1000); }
  }
  function refresh() {
    var live = document.getElementById("live");
    if (!live) { return; }
    if (document.hidden || live.contains(document.activeElement)) { schedule(); return; }
    fetch(location.href, {headers: {"X-Dashboard-Fragment": "live"}, cache: "no-store",
                          credentials: "same-origin"})
      .then(function (response) {
        if (response.status === 401) { location.reload(); return null; }
        return response.ok ? response.text() : null;
      })
      .then(function (html) { if (html) { live.outerHTML = html; } })
      .catch(function () { /* offline for a moment: the next round tries again */ })
      .then(schedule);
  }
  var filters = document.querySelector("details.filters");
  if (filters && window.matchMedia("(min-width: 44rem)").matches) { filters.open = true; }
  document.addEventListener("submit", function (event) {
    var message = event.target.getAttribute("data-confirm");
    if (message && !window.confirm(message)) { event.preventDefault(); }
  });
  schedule();
})();
"""
