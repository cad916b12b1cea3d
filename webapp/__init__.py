"""The DAT Explainer web app: everything that exists because there is a web server (DESIGN §2).

demo.py       build_demo(): the page, one tab per module of tabs/, the named API endpoints, the queue
tabs/         one module per tab: its components, layout, handlers, the outputs they return, its events
              (tab 1's scrubber and Play/Stop animation in tabs/scrubber.py)
explainer.py  what the tabs share: sessions, model lookup, per-session results, budget, memoized trajectories,
              Cancel (a run's PGD hook answers STOP)
api.py        the named API endpoints (/counterfactual, /generate, /landscape, /attribute)
inputs.py     checks of what users send (limits, images, classes, PGD settings), the error wrapper, and
              `safe_message`/`echo`: no server path and at most ~60 characters of input in any message
sources.py    which model sources a visitor may load (bundled, Hub, server folders with --allow-local-models)
              and what they read when one fails
links.py      the example images and shareable links (a run in the URL query)
opening.py    what a page opens on: the model this browser chose before, the run a shared link describes
page.py       the page's own words (intro, "What am I looking at?", hints, tooltips), CSS and small scripts
wiring.py     event options, handlers bound to the Explainer, outputs found by name, cancellable runs
state.py      gradio-free: byte-bounded result cache, model registry, temp files, request hashes
fastpath.py   each loaded model behind a dat_core FastPath, compiled in the background for the app's request shapes
scheduling.py how many model computations run at once and with how many torch threads (measured choice)
views.py      computed results prepared for scrubbing (and the retry a short path deserves); charts.py: the SVG
              charts and labelled sample grids they draw
describe.py   a loaded model in words (banner, model table, card, typicality)

Gradio is imported here and nowhere below (explain/, dat_core/).
"""
