"""What the page says about itself, in plain words: the intro, the "What am I looking at?" panel, the hints under
the controls and the tooltips of the results, plus the page's own CSS and small client-side scripts.

The CSS and the tooltips are installed by one script the page runs when it loads (`ON_LOAD_JS`), so a demo is
complete however it is launched (Gradio 6 takes `css=` only at `launch()`).
"""

from __future__ import annotations

import json

INTRO = """## DAT Explainer: watch a robust classifier change its mind
Pick an example (or upload an image), choose a target class and press **Run**: the image is changed step by step
until the model sees the target. Drag the slider to watch every step."""

HELP = """**The idea.** The model was trained with *Dual Adversarial Training*, which makes it hard to fool: to
make it see another class you have to really paint that class into the image. So the changes it asks for explain
what the class means to it.

- **What the model sees**: your image shrunk to the model's size (32×32 pixels for CIFAR-10 models).
- **PGD step t**: PGD (projected gradient descent) changes the image a little at a time; t counts the changes.
  x₀ is your image, x_t the image after t changes.
- **x_t − x_0**: what changed so far. Grey means unchanged; colours show pixels made brighter or darker.
- **ε (epsilon)**: the largest total change allowed. A bigger ε allows bolder changes; ∞ means no limit.
- **L2 / Linf**: two ways to measure a change. L2 adds it up over all pixels (a few pixels may change a lot);
  Linf is the largest change of any single pixel (everything changes a little).
- **Steps, step size**: how many changes PGD makes, and how big each one is.
- **p(class)**: how sure the model is that the image shows that class (0–100 %).
- **Flips at step**: the first step at which the model's top answer is the target class.
- **Energy E(x)**: how typical the image looks to the model; lower is more like the images it was trained on.
- **E(x, y)**: the same for one class y; lower means the image looks more like class y.
"""

TIPS = {
    "norm": "L2: total change over all pixels. Linf: the largest change of any single pixel.",
    "eps": "How much the image may change in all. Bigger = bolder changes.",
    "steps": "How many small changes PGD makes.",
    "step_size": "How big each change is.",
    "step": "Step 0 is your image; each step changes it a little more toward the target.",
}

# tooltips of the results (elements the hints under controls cannot reach), by CSS selector
TOOLTIPS = {
    "#cf-input": "Your image shrunk to the size the model reads; this is step 0 of every run.",
    "#cf-frame": "The image after t steps of PGD (t is the slider).",
    "#cf-diff": "What changed so far, x_t − x_0: grey = unchanged; colours = pixels made brighter or darker.",
    "#cf-probs": "How sure the model is of each class at step t (the top five, plus start and target).",
    "#cf-energy-plot": "Energy E(x): how typical the image looks to the model (lower = more typical). "
                       "E(x, target): the same for the target class.",
    "#cf-prob-plot": "p(target): how sure the model is that the image shows the target class, step by step.",
    "#cf-distance-plot": "How far the image has moved from your original; the dashed line is the limit ε.",
    "#cf-energy": "Energy E(x): lower means the image looks more like the images the model was trained on.",
    "#cf-examples": "Small CIFAR-10 test images with their true class; click one to use it.",
    "#all-grid": "The final image of the run toward each class, with p(class) and the step it flipped at.",
    "#gen-grid": "Samples the model paints from noise, each labelled with its class and p(class).",
}

CLASS_PICKERS = ("cf-target", "gen-target")
"""The class dropdowns (elem ids): typing in one filters the model's classes."""

NUMBER_PICKERS = ("cf-eps",)
"""Dropdowns of numbers that also take any typed value (elem ids): Enter keeps what was typed."""
NUMBER_TEXT = r"^(?:(?:\d+\.?\d*|\.\d+)(?:e[+-]?\d+)?(?:\s*/\s*(?:\d+\.?\d*|\.\d+))?|inf|infinity|∞)$"
"""A value typed in full (a number, a fraction like 8/255, inf): `dat_core.cli_types.parse_eps` still judges it."""

CHART = "chart"
"""The class of an SVG chart's block: a row of them wraps on a narrow screen instead of shrinking each to ~100 px
(gr.HTML takes no min_width)."""

CSS = """
.chart { min-width: min(240px, 100%) !important; }
.dl-button:disabled, .dl-button[disabled] { opacity: .45; cursor: not-allowed; border-style: dashed !important;
  background: transparent !important; box-shadow: none !important; }
.dl-button:not(:disabled) { background: #fff !important; color: #c2410c !important;
  border: 1px solid #ea580c !important; opacity: 1; font-weight: 600; }
.dl-button:not(:disabled):hover { background: #fff7ed !important; }
#all-table td, #all-table th { word-break: normal !important; overflow-wrap: normal !important; hyphens: none;
  white-space: nowrap; }
#all-grid .caption-label, #all-grid figcaption { white-space: normal !important; overflow: visible !important;
  text-overflow: clip !important; }
#cf-examples .caption-label, #cf-examples figcaption { font-size: 11px; }
#cf-image img { width: 100%; height: 100%; object-fit: contain; image-rendering: pixelated; }
#cf-link textarea { font-family: ui-monospace, monospace; font-size: 12px; }
#model-info td, #model-info th, #model-card td, #model-card th { word-break: normal !important;
  overflow-wrap: break-word !important; }
"""

ON_LOAD_JS = """() => {
  const style = document.createElement('style');
  style.id = 'dat-explainer-css';
  style.textContent = %s;
  document.head.appendChild(style);
  const tips = %s;
  const apply = () => { for (const [sel, tip] of Object.entries(tips)) {
    document.querySelectorAll(sel).forEach(el => { if (el.title !== tip) el.title = tip; }); } };
  apply();
  new MutationObserver(apply).observe(document.body, {childList: true, subtree: true});
  // a class picker selects its text when focused, so typing filters (1000 ImageNet names) instead of appending
  document.addEventListener('focusin', e => { if (e.target.matches && e.target.matches(%s)) e.target.select(); });
  // Enter keeps a value typed in full, where the dropdown took the first suggestion holding the text ("1" ran
  // ε = 1.5, "tiger" ran tiger shark): a number in a number box, a class's whole name in a class picker.
  // Leaving the box is what keeps typed text; a part of a name still completes.
  const typedInFull = new RegExp(%s, 'i');
  const option = (box, text) => [...(document.getElementById(box.getAttribute('aria-controls'))
    ?.querySelectorAll('li[aria-label]') ?? [])].find(li => li.getAttribute('aria-label').toLowerCase()
                                                          === text.toLowerCase());
  document.addEventListener('keydown', e => {
    const box = e.target, text = (box.value || '').trim();
    if (e.key !== 'Enter' || !box.matches) return;
    const named = box.matches(%s) && text ? option(box, text) : undefined;
    if (named === undefined && !(box.matches(%s) && typedInFull.test(text))) return;
    e.preventDefault(); e.stopPropagation();
    if (named) named.dispatchEvent(new MouseEvent('mousedown', {bubbles: true}));   // picked as by a click
    box.blur();
  }, true);
}""" % (json.dumps(CSS), json.dumps(TOOLTIPS), json.dumps(", ".join(f"#{c} input" for c in CLASS_PICKERS)),
       json.dumps(NUMBER_TEXT), json.dumps(", ".join(f"#{c} input" for c in CLASS_PICKERS)),
       json.dumps(", ".join(f"#{c} input" for c in NUMBER_PICKERS)))

# the link box holds "?example=..."; make it the whole address and copy it (where the browser lets us)
COPY_LINK_JS = """(query) => {
  if (!query || !query.startsWith('?')) return;
  const url = window.location.origin + window.location.pathname + query;
  const box = document.querySelector('#cf-link textarea, #cf-link input');
  if (box) { box.value = url; box.dispatchEvent(new Event('input')); }
  if (navigator.clipboard && window.isSecureContext) navigator.clipboard.writeText(url).catch(() => {});
}"""
