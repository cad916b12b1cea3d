"""The DAT Explainer web app: everything that exists because there is a web server (DESIGN §2)."""
