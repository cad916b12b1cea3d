"""The DAT Explainer web app: everything that exists because there is a web server (DESIGN §2).

demo.py       build_demo(): the page, one tab per module of tabs/, the named API endpoints
tabs/         one module per tab: its components, layout, handlers, the outputs they return, its events
explainer.py  what the tabs share: sessions, model lookup, per-session results, budget, memoized trajectories
api.py        the named API endpoints (/counterfactual, /generate, /landscape, /attribute)
inputs.py     checks of what users send (limits, images, classes, PGD settings) and the error wrapper
wiring.py     event options, handlers bound to the Explainer, outputs found by name
state.py      gradio-free: byte-bounded result cache, model registry, temp files, request hashes
views.py      computed results prepared for scrubbing; charts.py: the SVG charts they draw
describe.py   a loaded model in words (banner, model table, card, typicality)

Gradio is imported here and nowhere below (explain/, dat_core/).
"""
