"""DAT Explainer web app (Gradio). The UI lands with the app issue; this entry point says so."""

import sys


def main() -> int:
    print("The DAT Explainer app is not built yet. Meanwhile use the Python API "
          "(see README: `dat_core.load_model`, `dat_core.pgd`).", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
