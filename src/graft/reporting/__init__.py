"""Every report of an evaluation, from labels and probabilities to files and pictures.

``metrics`` (the numbers, scikit-learn), ``tables`` (predictions.csv, report.txt, split.csv),
``plots`` (confusion_matrix.png, curves.png) and ``html`` (report.html, a jinja2 template
shipped in ``templates/``). Nothing here imports graft's artifacts or anything above them:
the run folder (``graft.artifacts.run_folder``) calls into this package, never the reverse.
"""
