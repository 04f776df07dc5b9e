"""The paper's experiments as an experiment of robustclip: the sweep (``paper.toml``), its prose, thresholds and the
authors' numbers (``experiment.py``). Run it from a checkout with ``robustclip paper``; it writes reports/paper/."""
